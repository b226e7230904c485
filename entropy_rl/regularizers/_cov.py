"""Clip-Cov and KL-Cov: covariance-guided restriction of the update.

Entropy falls when high-probability tokens also get a high advantage: for a
softmax policy, natural PG gives ``ΔH ≈ −η·Cov(log π, A)``. Both methods rank
tokens by their contribution to that covariance over the statistics scope::

    c[i,t] = (A[i,t] − Ā)·(sg(ℓ[i,t]) − ℓ̄)      (Ā, ℓ̄: masked token means)

* **Clip-Cov** detaches (weight 0) a random ``r`` fraction of the unclipped
  tokens with ``ω_low < c < ω_high``.
* **KL-Cov** adds ``β·|ℓ − ℓ°|`` on the top-``k`` tokens by ``c``, under an
  unclipped surrogate.

Spec: ``methods_rlvr.md`` §3 (code: PRIME-RL/Entropy-Mechanism-of-RL,
``compute_policy_loss_clip_cov`` / ``compute_policy_loss_kl_cov``).

Reference: Cui et al. 2025, "The Entropy Mechanism of Reinforcement Learning
for Reasoning Language Models", https://arxiv.org/abs/2505.22617.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from entropy_rl.core import objectives as objectives_lib
from entropy_rl.core import ops
from entropy_rl.core import types

Array = types.Array
sg = jax.lax.stop_gradient
INF = math.inf


def token_covariance(batch: types.PolicyBatch) -> Array:
  """Per-token covariance contributions ``(A − Ā)(sg(ℓ) − ℓ̄)``, 0 on padding.

  Ā and ℓ̄ are token-weighted means over the valid tokens of the batch (the
  statistics scope). Their mean over valid tokens is ``cov(ℓ, A)``, the
  ``cov_logp_adv`` metric of :func:`entropy_rl.policy_loss`.

  Args:
    batch: a :class:`PolicyBatch` with [B, T] advantages.

  Returns:
    [B, T] c, without gradient.
  """
  valid = batch.mask > 0
  a = sg(batch.advantages)
  lp = sg(batch.logp)
  c = (a - ops.masked_mean(a, valid)) * (lp - ops.masked_mean(lp, valid))
  return jnp.where(valid, c, 0.0)


def _row_uniform(rng: types.PRNGKey, shape: tuple[int, int]) -> Array:
  """U(0, 1) noise whose row i, column t does not depend on the padded shape.

  Row keys are ``fold_in(rng, i)``; with JAX's default partitionable
  threefry a 1-D draw's prefix is independent of its length, so appending
  padded tokens or rows leaves the noise of the valid tokens unchanged.
  """
  keys = jax.vmap(jax.random.fold_in, (None, 0))(rng, jnp.arange(shape[0]))
  return jax.vmap(lambda k: jax.random.uniform(k, shape[1:]))(keys)


def clip_cov(ratio: float = 2e-4, cov_low: float = 1.0, cov_high: float = 5.0
             ) -> types.EntropyTransform:
  r"""Clip-Cov: detach a random subset of high-covariance unclipped tokens.

  Per statistics scope, with ρ = exp(sg(ℓ) − ℓ°) and the batch's effective
  clip ε (``batch.clip``)::

      clipped = −A·clip(ρ, 1 − ε_l, 1 + ε_h) > −A·ρ
      cand    = valid ∧ ¬clipped ∧ (ω_low < c < ω_high)
      n_sel   = max(⌊r·N_valid⌋, 1)                (0 when r = 0)
      sel     = min(n_sel, |cand|) candidates drawn uniformly without
                replacement (top-k of uniform noise; explicit PRNG key)
      weights ← weights · (1 − sel)

  so a selected token contributes ``max(l1, l2)·0`` and keeps its place in the
  token-mean denominator, as in the reference. Static shapes: ``lax.top_k``
  with the static bound ``⌊r·B·T⌋ + 1``. ``ratio = 0`` is the identity (the
  reference's ``max(·, 1)`` would still select one token).

  Pair with :func:`clip_cov_objective` (PPO clip, no dual clip). Reference
  recipe: r = 2e-4, ω = (1, 5), ε_l = ε_h = 1 (7B), token-mean, statistics
  per micro-batch (``stat_scope``).

  Args:
    ratio: r, the fraction of valid tokens to detach.
    cov_low: ω_low, exclusive lower covariance bound of the candidates.
    cov_high: ω_high, exclusive upper bound.

  Returns:
    An :class:`EntropyTransform` writing ``weights``; it needs ``rng`` when
    ``ratio > 0``. Metrics: ``clip_cov_frac`` (detached fraction of valid
    tokens) and ``clip_cov_candidate_frac``.

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
    ...     mask=jnp.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]))
    >>> t = regularizers.clip_cov(ratio=0.5, cov_low=0.1)
    >>> batch, state, prep = er.prepare_batch(batch, t, t.init(None),
    ...                                       rng=jax.random.key(0))
    >>> loss, (state, metrics) = er.policy_loss(
    ...     batch, t, state, objective=er.grpo(), rng=jax.random.key(0))
    >>> print(f"{metrics['clip_cov_candidate_frac']:.4f}")
    0.2000
    >>> print(f"{metrics['clip_cov_frac']:.4f}")
    0.2000
  """
  if not 0.0 <= ratio <= 1.0:
    raise ValueError(f"clip_cov ratio must be in [0, 1], got {ratio}")
  if cov_low >= cov_high:
    raise ValueError(f"clip_cov needs cov_low < cov_high, got cov_low="
                     f"{cov_low}, cov_high={cov_high}")

  def update(batch, state, *, rng=None, step=None, **extra):
    del step, extra
    valid = batch.mask > 0
    if ratio == 0.0:
      zero = jnp.zeros((), jnp.float32)
      return ops.add_metrics(batch, clip_cov_frac=zero,
                             clip_cov_candidate_frac=zero), state
    if rng is None:
      raise ValueError("clip_cov needs a PRNG key: pass rng= to policy_loss")
    c = token_covariance(batch)  # [B, T]
    rho = jnp.exp(jnp.clip(sg(batch.logp) - batch.old_logp,
                           -objectives_lib.LOG_RATIO_CLAMP,
                           objectives_lib.LOG_RATIO_CLAMP))
    a = batch.advantages
    clipped = (-a * jnp.clip(rho, 1.0 - batch.clip.eps_low,
                             1.0 + batch.clip.eps_high)) > (-a * rho)
    cand = valid & ~clipped & (c > cov_low) & (c < cov_high)
    n_valid = jnp.sum(valid)
    n_sel = jnp.maximum(jnp.floor(ratio * n_valid), 1.0)
    noise = _row_uniform(rng, c.shape)
    sel = ops.topk_mask(noise, cand, n_sel,
                        ops.static_k_max(ratio, c.size))  # [B, T] bool
    batch = batch._replace(
        weights=batch.weights * (1.0 - sel.astype(batch.weights.dtype)))
    return ops.add_metrics(
        batch,
        clip_cov_frac=ops.masked_mean(sel, valid),
        clip_cov_candidate_frac=ops.masked_mean(cand, valid)), state

  return types.EntropyTransform(types.init_empty_state, update)


def _resolve_k_fraction(k_fraction: float | None,
                        k_percent: float | None) -> float:
  if k_fraction is not None and k_percent is not None:
    raise ValueError(
        f"kl_cov takes k_fraction (a fraction, 0.002 = 0.2%) or k_percent "
        f"(the reference's percent, 0.2 = 0.2%), not both; got "
        f"k_fraction={k_fraction}, k_percent={k_percent}")
  frac = k_percent / 100.0 if k_percent is not None else (
      2e-3 if k_fraction is None else k_fraction)
  if not 0.0 <= frac <= 1.0:
    raise ValueError(
        f"kl_cov selects a fraction in [0, 1] of the tokens; got "
        f"k_fraction={k_fraction}, k_percent={k_percent}")
  return frac


def kl_cov(k_fraction: float | None = None, beta: float = 1.0, *,
           k_percent: float | None = None, term: str = "kl_cov"
           ) -> types.EntropyTransform:
  r"""KL-Cov: ``β·|ℓ − ℓ°|`` on the top-k tokens by covariance.

  Per statistics scope::

      k    = max(1, ⌊k_fraction · N_valid⌋)        (0 when k_fraction = 0)
      sel  = top-k valid tokens by c
      loss ← loss + agg(β·|ℓ − ℓ°|·sel)

  The term is a [B, T] loss term (aggregated like the surrogate), with
  gradient through ℓ. Note that ``|ℓ − ℓ°|`` has zero gradient at ℓ = ℓ°
  (the first micro-step of an on-policy update). ``k_fraction = 0`` or
  ``β = 0`` is the identity.

  The reference has **no PPO clipping** in KL-Cov: pair it with
  :func:`kl_cov_objective`. Reference recipe: ``k_percent = 0.2`` (7B) /
  ``0.02`` (32B), β = 1, token-mean, statistics per micro-batch
  (``stat_scope``).

  Args:
    k_fraction: fraction of valid tokens to select (0.002 = 0.2%; the
      default when neither argument is given). verl upstream's
      ``kl_cov_ratio``.
    beta: β (the reference's ``ppo_kl_coef``).
    k_percent: the same in percent (0.2 = 0.2%), as the official code's
      ``k_percent``; mutually exclusive with ``k_fraction``.
    term: the loss-term name.

  Returns:
    An :class:`EntropyTransform` adding loss term ``term``; metrics
    ``kl_cov_frac`` (selected fraction of valid tokens) and
    ``kl_cov_threshold`` (smallest selected c, 0 if none).

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
    ...     mask=jnp.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]))
    >>> t = regularizers.kl_cov(k_fraction=0.5)
    >>> batch, state, prep = er.prepare_batch(batch, t, t.init(None),
    ...                                       rng=jax.random.key(0))
    >>> loss, (state, metrics) = er.policy_loss(
    ...     batch, t, state, objective=er.grpo(), rng=jax.random.key(0))
    >>> print(f"{metrics['kl_cov_frac']:.4f}")
    0.4000
    >>> print(f"{metrics['terms/kl_cov']:.4f}")
    0.1014
  """
  frac = _resolve_k_fraction(k_fraction, k_percent)
  neutral = frac == 0.0 or beta == 0.0

  def update(batch, state, *, rng=None, step=None, **extra):
    del rng, step, extra
    valid = batch.mask > 0
    if neutral:
      zero = jnp.zeros((), jnp.float32)
      return ops.add_metrics(batch, kl_cov_frac=zero,
                             kl_cov_threshold=zero), state
    c = token_covariance(batch)
    k = jnp.maximum(jnp.floor(frac * jnp.sum(valid)), 1.0)
    sel = ops.topk_mask(c, valid, k, ops.static_k_max(frac, c.size))
    # The selected tokens' |ℓ − ℓ°|; elsewhere a constant 0 (no gradient).
    diff = jnp.where(sel, batch.logp - batch.old_logp, 0.0)
    batch = ops.add_loss_term(batch, term, beta * jnp.abs(diff))
    any_sel = jnp.any(sel)
    threshold = jnp.where(any_sel, ops.masked_min(c, sel), 0.0)
    return ops.add_metrics(batch, kl_cov_frac=ops.masked_mean(sel, valid),
                           kl_cov_threshold=threshold), state

  return types.EntropyTransform(types.init_empty_state, update)


def clip_cov_objective(eps_low: float = 0.2, eps_high: float | None = None,
                       agg: str = "token-mean", l_max: int | None = None
                       ) -> objectives_lib.Objective:
  """The surrogate Clip-Cov is used with: PPO clip, no dual clip.

  The official fork and verl upstream both omit the dual clip. The 7B recipe
  sets ``eps_low = eps_high = 1`` (``clip(ρ, 0, 2)``); the default here is
  verl's 0.2.

  Args:
    eps_low: ε_l.
    eps_high: ε_h (default ε_l).
    agg: aggregation mode (the reference uses token-mean).
    l_max: L_max for ``seq-mean-token-sum-norm``.

  Returns:
    An :class:`~entropy_rl.Objective`.
  """
  return objectives_lib.ppo_clip(eps_low, eps_high, None, agg, l_max)._replace(
      name="clip_cov")


def kl_cov_objective(agg: str = "token-mean", l_max: int | None = None
                     ) -> objectives_lib.Objective:
  """The surrogate KL-Cov is used with: unclipped ``−A·ρ`` (``ε = ∞``).

  Both the official fork and verl upstream compute ``−A·ρ`` with no clip and
  no dual clip, the KL-Cov term being the only trust region.

  Args:
    agg: aggregation mode (the reference uses token-mean).
    l_max: L_max for ``seq-mean-token-sum-norm``.

  Returns:
    An :class:`~entropy_rl.Objective` (``ppo_clip(inf, inf)``), which still
    honours per-token clip knobs.
  """
  return objectives_lib.ppo_clip(INF, INF, None, agg, l_max)._replace(
      name="kl_cov")
