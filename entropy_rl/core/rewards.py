"""Reward shaping and batch filters of DAPO (Yu et al. 2025).

Reference: "DAPO: An Open-Source LLM Reinforcement Learning System at Scale",
https://arxiv.org/abs/2503.14476.
"""

from __future__ import annotations

import jax.numpy as jnp

from entropy_rl.core import advantages
from entropy_rl.core import ops
from entropy_rl.core import types

Array = types.Array


def overlong_penalty(lengths: Array, l_max: int, l_cache: int,
                     coef: float = 1.0) -> Array:
  """DAPO's soft overlong punishment.

  ``L_exp = L_max − L_cache``; penalty ``min(−(L − L_exp)/L_cache · λ, 0)``
  (≥ −λ whenever L ≤ L_max).

  Args:
    lengths: [B] response lengths L.
    l_max: L_max, the generation budget.
    l_cache: L_cache, the soft-punishment interval.
    coef: λ_ol.

  Returns:
    [B] penalties (≤ 0) to add to the rewards.
  """
  if l_cache <= 0 or l_cache > l_max:
    raise ValueError(f"need 0 < l_cache <= l_max, got l_cache={l_cache}, "
                     f"l_max={l_max}")
  expected = l_max - l_cache
  lengths = lengths.astype(jnp.float32)
  return jnp.minimum(-(lengths - expected) / l_cache * coef, 0.0)


def dynamic_sampling_mask(rewards: Array, group_ids: Array,
                          num_groups: int | None = None) -> Array:
  """DAPO's dynamic-sampling filter: keep a group iff its rewards vary.

  A group is kept if ``std(R_group) > 0`` or it has a single member.

  Returns:
    [B] bool, True for rows whose group is kept.
  """
  _, std, n = advantages.group_stats(rewards, group_ids, num_groups)
  return (std > 0) | (n < 2)


def overlong_reward_shaping(l_max: int, l_cache: int, coef: float = 1.0
                            ) -> types.EntropyTransform:
  """A ``prepare`` transform adding :func:`overlong_penalty` to rewards.

  Response lengths are the row sums of ``batch.mask``.
  """

  def prepare(batch, state, *, rng=None, step=None, **extra):
    del rng, step, extra
    if batch.rewards is None:
      raise ValueError("overlong_reward_shaping needs batch.rewards")
    pen = overlong_penalty(batch.mask.sum(-1), l_max, l_cache, coef)
    batch = ops.add_metrics(batch, overlong_penalty=jnp.mean(pen),
                            overlong_frac=jnp.mean(pen < 0))
    return batch._replace(rewards=batch.rewards + pen), state

  return types.EntropyTransform(
      types.init_empty_state, types.identity_update,
      prepare, types.Needs(frozenset({"rewards"})))
