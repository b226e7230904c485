"""STEER: entropy-change-aware token reweighting.

Each token's first-order contribution to the entropy change of the update is
estimated from the old-policy entropy; tokens with a large predicted |ΔH| (in
either direction) are down-weighted so the per-step entropy change stays in a
band. Spec: ``methods_rlvr.md`` §2 (code: zz-haooo/STEER
``compute_token_weights``).

Reference: Hao et al. 2025, "Rethinking Entropy Interventions in RLVR: An
Entropy Change Perspective", https://arxiv.org/abs/2510.10150 (code:
https://github.com/zz-haooo/STEER, loss mode ``entropy_control``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from entropy_rl.core import ops
from entropy_rl.core import types

Array = types.Array
sg = jax.lax.stop_gradient
STEER_MODES = ("linear", "exp")
EXP_OMEGA_FLOOR = 0.02  # the reference's floor on Ω_max in the exp mode


def token_entropy_change(batch: types.PolicyBatch, entropy: Array) -> Array:
  """STEER's Ω, the magnitude of a token's predicted entropy change.

  ``Ω = |A / π° · π(1 − π) · (log π + H)|`` with ``π = clip(exp sg(ℓ), 1e-8,
  1 − 1e-8)``, ``π° = clip(exp ℓ°, 1e-8, 1)`` and ``H`` the given entropy.
  Non-finite values and padding give 0.

  Args:
    batch: a filled :class:`PolicyBatch`.
    entropy: [B, T] full-vocabulary entropy (no gradient).

  Returns:
    [B, T] Ω, without gradient.
  """
  pi = jnp.clip(jnp.exp(sg(batch.logp)), 1e-8, 1.0 - 1e-8)
  pi_old = jnp.clip(jnp.exp(sg(batch.old_logp)), 1e-8, 1.0)
  omega = jnp.abs(batch.advantages / pi_old * pi * (1.0 - pi) *
                  (jnp.log(pi) + sg(entropy)))
  return jnp.where(jnp.isfinite(omega) & (batch.mask > 0), omega, 0.0)


def steer(w_min: float = 0.8, w_max: float = 1.2, *, mode: str = "linear",
          use_current_entropy: bool = False) -> types.EntropyTransform:
  r"""STEER token weights (stop-gradient), per statistics scope.

  With Ω from :func:`token_entropy_change` and ``Ω_min``, ``Ω_max`` its
  extremes over the valid tokens of the scope::

      linear: w = clip(w_max − (Ω − Ω_min)·(w_max − w_min)/(Ω_max − Ω_min),
                       w_min, w_max)
              (w = (w_min + w_max)/2 if Ω_max = Ω_min)
      exp:    κ = −ln(w_min) / max(Ω_max, 0.02);  w = clip(e^{−κΩ}, w_min, 1)

  then ``w ← w·m`` (0 everywhere if the scope has no valid token), and the
  batch weights are multiplied by ``w``. The entropy is the **old** policy's
  (``batch.old_entropy``), as stored by the reference's old-log-prob pass.
  ``w_min = w_max = 1`` (or ``w_min = 1`` in the exp mode) is the identity.

  Reference defaults: ``run_linear.sh`` uses (0.8, 1.2, linear) and
  ``run_exp.sh`` uses (w_min 0.8, exp), both with a DAPO objective (ε
  0.2/0.28, dual clip 10, token-mean) and ``stat_scope`` = the micro-batch
  (8 rows per GPU).

  Args:
    w_min: lower weight (the README's λ_min).
    w_max: upper weight (linear mode only; ignored by ``mode="exp"``).
    mode: ``"linear"`` or ``"exp"``.
    use_current_entropy: read ``sg(batch.entropy)`` instead of
      ``batch.old_entropy`` (the reference's fallback when no old entropy is
      stored).

  Returns:
    An :class:`EntropyTransform` writing ``weights``; metrics
    ``steer_weight_{mean,min,max}`` (over valid tokens) and
    ``steer_omega_max``.

  Examples:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import entropy_rl as er
    >>> from entropy_rl import regularizers
    >>> batch = er.PolicyBatch(
    ...     logp=jnp.log(jnp.array([[0.5, 0.9, 0.3], [0.2, 0.6, 1.0]])),
    ...     old_logp=jnp.log(jnp.array([[0.4, 0.9, 0.3], [0.3, 0.6, 1.0]])),
    ...     advantages=jnp.array([[1.0, 1.0, 1.0], [-1.0, -1.0, 0.0]]),
    ...     old_entropy=jnp.array([[1.2, 0.3, 2.0], [1.5, 0.8, 0.0]]),
    ...     mask=jnp.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]))
    >>> t = regularizers.steer(0.8, 1.2)
    >>> batch, state, prep = er.prepare_batch(batch, t, t.init(None),
    ...                                       rng=jax.random.key(0))
    >>> loss, (state, metrics) = er.policy_loss(
    ...     batch, t, state, objective=er.grpo(), rng=jax.random.key(0))
    >>> print(f"{metrics['steer_weight_mean']:.4f}")
    1.0557
    >>> print(f"{metrics['steer_weight_min']:.4f}")
    0.8000
  """
  if mode not in STEER_MODES:
    raise ValueError(f"unknown steer mode {mode!r}; valid modes are "
                     f"{', '.join(STEER_MODES)}")
  if not 0.0 < w_min <= 1.0 and mode == "exp":
    raise ValueError(f"steer(mode='exp') needs 0 < w_min <= 1, got {w_min}")
  if mode == "linear" and not 0.0 <= w_min <= w_max:
    raise ValueError(f"steer needs 0 <= w_min <= w_max, got w_min={w_min}, "
                     f"w_max={w_max}")
  field = "entropy" if use_current_entropy else "old_entropy"

  def update(batch, state, *, rng=None, step=None, **extra):
    del rng, step, extra
    ent = getattr(batch, field)
    if ent is None:
      raise ValueError(f"steer needs batch.{field}")
    valid = batch.mask > 0
    any_valid = jnp.any(valid)
    omega = token_entropy_change(batch, ent)  # [B, T]
    o_min = jnp.where(any_valid, ops.masked_min(omega, valid), 0.0)
    o_max = jnp.where(any_valid, ops.masked_max(omega, valid), 0.0)
    if mode == "linear":
      span = o_max - o_min
      w = w_max - (omega - o_min) * (w_max - w_min) / jnp.where(
          span > 0, span, 1.0)
      w = jnp.where(span > 0, jnp.clip(w, w_min, w_max),
                    0.5 * (w_min + w_max))
    else:
      kappa = -math.log(w_min) / jnp.maximum(o_max, EXP_OMEGA_FLOOR)
      w = jnp.clip(jnp.exp(-kappa * omega), w_min, 1.0)
    w = sg(jnp.where(any_valid, w, 0.0) * batch.mask)  # [B, T]
    batch = batch._replace(weights=batch.weights * w)
    batch = ops.add_metrics(
        batch,
        steer_weight_mean=ops.masked_mean(w, valid),
        steer_weight_min=jnp.where(any_valid, ops.masked_min(w, valid), 0.0),
        steer_weight_max=jnp.where(any_valid, ops.masked_max(w, valid), 0.0),
        steer_omega_max=o_max)
    return batch, state

  return types.EntropyTransform(types.init_empty_state, update,
                                needs=types.Needs(frozenset({field})))
