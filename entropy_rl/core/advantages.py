"""Advantage estimators: GRPO, Dr. GRPO, RLOO, REINFORCE++ baseline, GAE.

All functions are pure and jit-safe; group statistics use segment sums over
``group_ids`` with a static number of groups (default B, so any ids in
[0, B) work). Advantage *transforms* (``prepare`` phase) that write
``batch.advantages`` from ``batch.rewards`` are at the end of the module.

References:
  GRPO: Shao et al. 2024, https://arxiv.org/abs/2402.03300.
  Dr. GRPO: Liu et al. 2025, https://arxiv.org/abs/2503.20783.
  RLOO: Ahmadian et al. 2024, https://arxiv.org/abs/2402.14740.
  REINFORCE++: Hu 2025, https://arxiv.org/abs/2501.03262.
  GAE: Schulman et al. 2016, https://arxiv.org/abs/1506.02438.
  QAE: "Quantile Advantage Estimation", https://arxiv.org/abs/2509.22611.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from entropy_rl.core import ops
from entropy_rl.core import types

Array = types.Array
Baseline = Callable[[Array, Array, int], Array]  # (R [B], ids [B], G) -> [B]


def _check_rows(rewards: Array, group_ids: Array) -> None:
  if rewards.ndim != 1:
    raise ValueError(f"rewards must have shape [B], got {tuple(rewards.shape)}")
  if tuple(group_ids.shape) != tuple(rewards.shape):
    raise ValueError(f"group_ids has shape {tuple(group_ids.shape)}, expected "
                     f"{tuple(rewards.shape)} (the shape of rewards)")


def dense_group_ids(group_ids: Array) -> Array:
  """Maps arbitrary int ids [B] to dense ids in [0, B) (jit-safe)."""
  _, inverse = jnp.unique(group_ids, size=group_ids.shape[0],
                          return_inverse=True)
  return inverse.reshape(group_ids.shape).astype(jnp.int32)


def group_stats(rewards: Array, group_ids: Array, num_groups: int | None = None,
                ddof: int = 1):
  """Per-row group mean, std (``ddof``) and size.

  Args:
    rewards: [B].
    group_ids: [B] int ids. With ``num_groups=None`` any ids work (they are
      densified); with a static ``num_groups`` ids must lie in
      [0, num_groups).
    num_groups: optional static number of groups.
    ddof: delta degrees of freedom of the std (1 = unbiased, torch.std).

  Returns:
    ``(mean [B], std [B], count [B])`` of each row's group.
  """
  _check_rows(rewards, group_ids)
  if num_groups is None:
    group_ids = dense_group_ids(group_ids)
  g = rewards.shape[0] if num_groups is None else num_groups
  r = rewards.astype(jnp.float32)
  centered, n = _centered(r, group_ids, g)
  sq, _ = ops.group_reduce(centered ** 2, group_ids, g)
  var = sq[group_ids] / jnp.maximum(n - ddof, 1.0)
  return r - centered, jnp.sqrt(var), n


def _centered(r: Array, group_ids: Array, g: int):
  """``(R_i − μ_k, n_k)`` per row, exact (0) for constant groups.

  Rewards are shifted by their group maximum before averaging, so a constant
  group gives deviations of exactly 0 rather than float32 round-off (which
  GRPO's division by σ + 1e-6 would blow up to O(0.1)).
  """
  shift = jax.ops.segment_max(r, group_ids, num_segments=g)[group_ids]
  d = r - shift
  s, n = ops.group_reduce(d, group_ids, g)
  mean_d = (s / jnp.maximum(n, 1.0))[group_ids]
  return d - mean_d, n[group_ids]


def mean_baseline(rewards: Array, group_ids: Array, num_groups: int) -> Array:
  """The group mean (GRPO's baseline)."""
  return group_stats(rewards, group_ids, num_groups)[0]


def quantile_baseline(k: float) -> Baseline:
  """QAE's group K-quantile baseline: ``Q_K = inf{r : F̂_G(r) ≥ K}``.

  The lower empirical quantile of each group; for binary rewards with success
  rate p it is 0 if p ≤ 1 − K, else 1. O(B²) pairwise counts, no sort.

  Args:
    k: the quantile level K in (0, 1].
  """
  if not 0.0 < k <= 1.0:
    raise ValueError(f"quantile level k must be in (0, 1], got {k}")

  def baseline(rewards, group_ids, num_groups):
    del num_groups
    r = rewards.astype(jnp.float32)
    same = group_ids[:, None] == group_ids[None, :]  # [B, B]
    n = same.sum(-1).astype(jnp.float32)  # [B]
    # F̂(r_i) within row i's group: fraction of members with r_j <= r_i.
    cdf = (same & (r[None, :] <= r[:, None])).sum(-1) / n  # [B]
    ok = cdf >= k - 1e-6
    # Q for row i: min over members j of the group with F̂(r_j) >= K.
    cand = jnp.where(same & ok[None, :], r[None, :], jnp.inf)
    return jnp.min(cand, -1)

  return baseline


def grpo(rewards: Array, group_ids: Array, num_groups: int | None = None, *,
         normalize_std: bool = True, eps: float = 1e-6,
         baseline: Baseline = mean_baseline) -> Array:
  """Group-normalised outcome advantage (GRPO / Dr. GRPO / QAE).

  For a group of n ≥ 2: ``A_i = (R_i − b_k) / (σ_k + ε)`` with the unbiased
  std σ_k (ddof = 1), or ``A_i = R_i − b_k`` without std (Dr. GRPO). The
  baseline b_k is the group mean by default; pass
  ``baseline=quantile_baseline(K)`` for QAE. A singleton group uses μ = 0,
  σ = 1, so ``A_i = R_i`` (verl).

  Args:
    rewards: [B] outcome rewards.
    group_ids: [B] int group (prompt) ids in [0, num_groups).
    num_groups: static number of groups (default B).
    normalize_std: divide by σ_k + ε (False: Dr. GRPO).
    eps: ε.
    baseline: ``(rewards, group_ids, num_groups) -> [B]`` baseline.

  Returns:
    [B] advantages (broadcast to tokens with :func:`to_tokens`).
  """
  _check_rows(rewards, group_ids)
  if num_groups is None:
    group_ids = dense_group_ids(group_ids)
  g = rewards.shape[0] if num_groups is None else num_groups
  r = rewards.astype(jnp.float32)
  _, std, n = group_stats(r, group_ids, g)
  single = n < 2
  if baseline is mean_baseline:
    centered, _ = _centered(r, group_ids, g)
  else:
    centered = r - baseline(r, group_ids, g)
  adv = jnp.where(single, r, centered)
  if normalize_std:
    adv = adv / jnp.where(single, 1.0, std + eps)
  return adv


def rloo(rewards: Array, group_ids: Array,
         num_groups: int | None = None) -> Array:
  """Leave-one-out baseline: ``A_i = n/(n−1)·(R_i − μ_k) = R_i − mean_{j≠i} R_j``.

  Singleton groups keep ``A_i = R_i`` (verl).
  """
  if num_groups is None:
    group_ids = dense_group_ids(group_ids)
  g = rewards.shape[0] if num_groups is None else num_groups
  r = rewards.astype(jnp.float32)
  centered, n = _centered(r, group_ids, g)
  return jnp.where(n > 1, n / jnp.maximum(n - 1.0, 1.0) * centered, r)


def to_tokens(adv: Array, mask: Array) -> Array:
  """Broadcasts per-row advantages [B] over the valid tokens of [B, T]."""
  return adv[:, None] * mask.astype(jnp.float32)


def reinforce_pp_baseline(rewards: Array, group_ids: Array, mask: Array,
                          num_groups: int | None = None,
                          eps: float = 1e-8) -> Array:
  """REINFORCE++ with baseline: group-mean baseline, then batch whitening.

  ``A_i = R_i − μ_k`` broadcast to tokens, then whitened over all valid tokens
  of the batch: ``(A − mean) / (std + ε)``.

  Returns:
    [B, T] advantages (0 on padding).
  """
  mean, _, _ = group_stats(rewards, group_ids, num_groups)
  a = to_tokens(rewards.astype(jnp.float32) - mean, mask)
  mu = ops.masked_mean(a, mask)
  sd = ops.masked_std(a, mask)
  return jnp.where(mask > 0, (a - mu) / (sd + eps), 0.0)


def gae(rewards: Array, values: Array, discounts: Array,
        lambda_: float | Array) -> tuple[Array, Array]:
  """Generalised advantage estimation, time-major, by a reverse ``lax.scan``.

  ``δ_t = r_t + γ_t·V_{t+1} − V_t``, ``A_t = δ_t + γ_t·λ·A_{t+1}``.

  Args:
    rewards: [T, ...] rewards r_t.
    values: [T + 1, ...] values V_0..V_T (V_T bootstraps).
    discounts: [T, ...] γ_t (0 where the episode ended at t).
    lambda_: λ.

  Returns:
    ``(advantages [T, ...], returns [T, ...])``, returns = A + V_{0:T}.
  """
  if values.shape[0] != rewards.shape[0] + 1:
    raise ValueError(f"values must have T+1={rewards.shape[0] + 1} steps, got "
                     f"shape {tuple(values.shape)}")
  deltas = rewards + discounts * values[1:] - values[:-1]

  def body(acc, x):
    delta, disc = x
    acc = delta + disc * lambda_ * acc
    return acc, acc

  _, adv = jax.lax.scan(body, jnp.zeros_like(deltas[0]), (deltas, discounts),
                        reverse=True)
  return adv, adv + values[:-1]


def token_gae(rewards: Array, values: Array, mask: Array, gamma: float = 1.0,
              lambda_: float = 1.0) -> tuple[Array, Array]:
  """GAE over padded token rows [B, T] (verl ``compute_gae_advantage_return``).

  Padding tokens are skipped: the next value of a valid token is the value of
  the next *valid* token (0 after the last one).

  Returns:
    ``(advantages [B, T], returns [B, T])``, 0 on padding.
  """
  m = mask.astype(jnp.float32)

  def body(carry, x):
    next_value, next_adv = carry
    r, v, mm = x
    delta = r + gamma * next_value - v
    adv = delta + gamma * lambda_ * next_adv
    next_value = jnp.where(mm > 0, v, next_value)
    next_adv = jnp.where(mm > 0, adv, next_adv)
    return (next_value, next_adv), jnp.where(mm > 0, adv, 0.0)

  zeros = jnp.zeros(rewards.shape[:1], jnp.float32)
  _, adv = jax.lax.scan(body, (zeros, zeros),
                        (rewards.T, values.T, m.T), reverse=True)
  adv = adv.T
  return adv, jnp.where(m > 0, adv + values, 0.0)


# ---------------------------------------------------------------- transforms


def _advantage_transform(fn: Callable[[types.PolicyBatch], Array],
                         name: str) -> types.EntropyTransform:
  def prepare(batch, state, *, rng=None, step=None, **extra):
    del rng, step, extra
    if batch.rewards is None or batch.group_ids is None:
      raise ValueError(f"{name} advantages need batch.rewards and "
                       "batch.group_ids")
    adv = fn(batch)
    if adv.ndim == 1:
      adv = to_tokens(adv, batch.mask)
    batch = ops.add_metrics(batch, adv_mean=ops.masked_mean(adv, batch.mask),
                            adv_abs_mean=ops.masked_mean(jnp.abs(adv),
                                                         batch.mask))
    return batch._replace(advantages=adv), state

  return types.EntropyTransform(
      types.init_empty_state, types.identity_update, prepare,
      types.Needs(frozenset({"rewards", "group_ids"})))


def grpo_advantages(*, normalize_std: bool = True, eps: float = 1e-6,
                    baseline: Baseline = mean_baseline
                    ) -> types.EntropyTransform:
  """A ``prepare`` transform writing GRPO advantages from rewards and groups.

  Examples:
    One group, rewards (1, 0): ``(r − 0.5) / std`` with the sample std 0.7071.

    >>> import jax
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import entropy_rl as er
    >>> from entropy_rl import regularizers
    >>> batch = er.PolicyBatch(
    ...     logp=jnp.log(jnp.array([[0.5, 0.9, 0.3], [0.2, 0.6, 1.0]])),
    ...     old_logp=jnp.log(jnp.array([[0.4, 0.9, 0.3], [0.3, 0.6, 1.0]])),
    ...     advantages=jnp.array([[1.0, 1.0, 1.0], [-1.0, -1.0, 0.0]]),
    ...     rewards=jnp.array([1.0, 0.0]), group_ids=jnp.array([0, 0]),
    ...     mask=jnp.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]))
    >>> t = regularizers.grpo_advantages()
    >>> batch, state, prep = er.prepare_batch(batch, t, t.init(None),
    ...                                       rng=jax.random.key(0))
    >>> loss, (state, metrics) = er.policy_loss(
    ...     batch, t, state, objective=er.grpo(), rng=jax.random.key(0))
    >>> print(np.asarray(batch.advantages, float).round(4) + 0.0)
    [[ 0.7071  0.7071  0.7071]
     [-0.7071 -0.7071  0.    ]]
  """
  return _advantage_transform(
      lambda b: grpo(b.rewards, b.group_ids, normalize_std=normalize_std,
                     eps=eps, baseline=baseline), "grpo")


def rloo_advantages() -> types.EntropyTransform:
  """A ``prepare`` transform writing RLOO advantages.

  Examples:
    Each row's baseline is the mean reward of the other rows of its group.

    >>> import jax
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import entropy_rl as er
    >>> from entropy_rl import regularizers
    >>> batch = er.PolicyBatch(
    ...     logp=jnp.log(jnp.array([[0.5, 0.9, 0.3], [0.2, 0.6, 1.0]])),
    ...     old_logp=jnp.log(jnp.array([[0.4, 0.9, 0.3], [0.3, 0.6, 1.0]])),
    ...     advantages=jnp.array([[1.0, 1.0, 1.0], [-1.0, -1.0, 0.0]]),
    ...     rewards=jnp.array([1.0, 0.0]), group_ids=jnp.array([0, 0]),
    ...     mask=jnp.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]))
    >>> t = regularizers.rloo_advantages()
    >>> batch, state, prep = er.prepare_batch(batch, t, t.init(None),
    ...                                       rng=jax.random.key(0))
    >>> loss, (state, metrics) = er.policy_loss(
    ...     batch, t, state, objective=er.grpo(), rng=jax.random.key(0))
    >>> print(np.asarray(batch.advantages, float).round(4) + 0.0)
    [[ 1.  1.  1.]
     [-1. -1.  0.]]
  """
  return _advantage_transform(lambda b: rloo(b.rewards, b.group_ids), "rloo")


def reinforce_pp_advantages() -> types.EntropyTransform:
  """A ``prepare`` transform writing REINFORCE++-baseline advantages.

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
    ...     rewards=jnp.array([1.0, 0.0]), group_ids=jnp.array([0, 0]),
    ...     mask=jnp.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]))
    >>> t = regularizers.reinforce_pp_advantages()
    >>> batch, state, prep = er.prepare_batch(batch, t, t.init(None),
    ...                                       rng=jax.random.key(0))
    >>> loss, (state, metrics) = er.policy_loss(
    ...     batch, t, state, objective=er.grpo(), rng=jax.random.key(0))
    >>> print(np.asarray(batch.advantages, float).round(4) + 0.0)
    [[ 0.8165  0.8165  0.8165]
     [-1.2247 -1.2247  0.    ]]
  """
  return _advantage_transform(
      lambda b: reinforce_pp_baseline(b.rewards, b.group_ids, b.mask),
      "reinforce++")
