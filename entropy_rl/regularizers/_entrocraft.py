"""Entrocraft: entropy-gated rejection of rollouts by their advantage sign.

A positive-advantage update tends to lower the policy entropy and a
negative-advantage update to raise it (the paper's Theorems 1-2). Entrocraft
steers the entropy curve with that alone: once per RL step it compares the
batch entropy H̄ of the rollout policy with a target band ``[h_low, h_high]``
(a schedule of the step) and rejects the rollouts whose advantage would push
H̄ further out of the band::

    m   = 1[H̄ > h_high] − 1[H̄ < h_low]          (the out-of-band direction)
    A_i ← A_i · 1[m · Ā_i ≥ 0]                     (Algorithm 1's filter)

with ``H̄`` the token mean of the old-policy entropy over the valid tokens of
the whole rollout batch and ``Ā_i`` the row's mean advantage. Entropy too low
(``m = −1``) keeps only ``Ā_i ≤ 0``, too high (``m = +1``) only ``Ā_i ≥ 0``,
inside the band every row is kept. No objective term is added; any advantage
estimator placed before it works. Spec: ``docs/specs/entrocraft.md`` (paper
Algorithm 1; the points the paper leaves open are reconstructed from the
authors' code and marked there).

Reference: Li et al. 2026, "Addressing Performance Saturation for LLM RL via
Precise Entropy Curve Control", https://arxiv.org/abs/2604.26326 (code:
https://github.com/lblaoke/entrocraft, estimator ``grpo_range_linear``).
"""

from __future__ import annotations

import math
from typing import Callable

import jax.numpy as jnp

from entropy_rl.core import ops
from entropy_rl.core import types

Array = types.Array
Bound = float | Callable[[Array], Array]


def entrocraft(h_low: Bound = 0.6, h_high: Bound = 0.7
               ) -> types.EntropyTransform:
  r"""Entrocraft's rejection filter, a ``prepare`` transform on advantages.

  Once per RL step, on the whole rollout batch (no gradient)::

      H̄   = Σ_{i,t} H°[i,t]·m[i,t] / Σ_{i,t} m[i,t]
      dir = 1[H̄ > h_high(step)] − 1[H̄ < h_low(step)]
      Ā_i = Σ_t A[i,t]·m[i,t] / max(Σ_t m[i,t], 1)
      A[i,t] ← A[i,t] · 1[dir·Ā_i ≥ 0]

  A rejected row keeps its mask, so it still counts in the aggregation's
  denominator (as in the authors' code, where it gets advantage 0). Place it
  after the advantage estimator. ``h_low = 0`` with ``h_high = inf`` is the
  identity (entropy is never negative).

  Reference settings: ``grpo_range_0.6_0.7`` keeps the band (0.6, 0.7);
  ``grpo_range_linear`` (the README's run) moves it linearly from (0.6, 0.7)
  to (0.4, 0.5) over training; both with GRPO (ε 0.2, token-mean), a
  low-variance KL loss of 0.001 and n = 8.

  Args:
    h_low: lower end of the target band (nats): a float or a schedule
      ``step -> h_low`` (e.g. ``optax.linear_schedule(0.6, 0.4, steps)``).
    h_high: upper end, a float or a schedule; ``h_low ≤ h_high``.

  Returns:
    An :class:`EntropyTransform` reading ``old_entropy``, ``advantages`` and
    ``mask`` and writing ``advantages`` [B, T] in ``prepare``. Metrics:
    ``entrocraft_entropy`` (H̄), ``entrocraft_h_low``, ``entrocraft_h_high``,
    ``entrocraft_direction`` (dir) and ``entrocraft_keep_frac`` (kept rows
    among rows with a valid token).

  Examples:
    >>> import jax.numpy as jnp
    >>> import entropy_rl as er
    >>> from entropy_rl import regularizers
    >>> b = er.PolicyBatch(
    ...     logp=jnp.zeros((2, 2)), old_logp=jnp.zeros((2, 2)),
    ...     advantages=jnp.array([[1.0, 1.0], [-1.0, -1.0]]),
    ...     mask=jnp.ones((2, 2)), old_entropy=jnp.full((2, 2), 0.3))
    >>> t = regularizers.entrocraft(h_low=0.6, h_high=0.7)  # H̄ = 0.3: too low
    >>> out, _, metrics = er.prepare_batch(b, t, t.init(None))
    >>> out.advantages.tolist()  # the positive row is rejected
    [[0.0, 0.0], [-1.0, -1.0]]
    >>> float(metrics["entrocraft_direction"])
    -1.0
  """
  if not (callable(h_low) or callable(h_high)):
    if math.isnan(h_low) or math.isnan(h_high) or h_low > h_high:
      raise ValueError(f"entrocraft needs h_low <= h_high, got h_low={h_low}, "
                       f"h_high={h_high}")

  def prepare(batch, state, *, rng=None, step=None, **extra):
    del rng, extra
    if batch.old_entropy is None:
      raise ValueError("entrocraft needs batch.old_entropy")
    lo = jnp.asarray(h_low(step) if callable(h_low) else h_low, jnp.float32)
    hi = jnp.asarray(h_high(step) if callable(h_high) else h_high, jnp.float32)
    m = batch.mask.astype(jnp.float32)  # [B, T]
    h_bar = ops.masked_mean(batch.old_entropy, m)  # ()
    direction = ((h_bar > hi).astype(jnp.float32) -
                 (h_bar < lo).astype(jnp.float32))  # () in {-1, 0, 1}
    n = m.sum(-1)  # [B]
    a_row = jnp.where(m > 0, batch.advantages, 0.0).sum(-1) / jnp.maximum(
        n, 1.0)  # [B]
    keep = jnp.where(direction > 0, a_row >= 0,
                     jnp.where(direction < 0, a_row <= 0, True))  # [B]
    adv = batch.advantages * keep.astype(batch.advantages.dtype)[:, None]
    batch = ops.add_metrics(
        batch, entrocraft_entropy=h_bar, entrocraft_h_low=lo,
        entrocraft_h_high=hi, entrocraft_direction=direction,
        entrocraft_keep_frac=ops.masked_mean(keep.astype(jnp.float32), n > 0))
    return batch._replace(advantages=adv), state

  return types.EntropyTransform(
      types.init_empty_state, types.identity_update, prepare,
      types.Needs(frozenset({"old_entropy"})))
