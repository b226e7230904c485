"""SPEAR: self-imitation with progressive exploration for agentic RL.

Reference: Qin et al. 2025, "Learning to Reason and Act: SPEAR",
https://arxiv.org/abs/2509.22601 (spec A4; TencentYoutuResearch/SPEAR).

Pieces:

* a cosine-decayed tool-call bonus ``R' = R + min(1, 0.1·n_calls)·c(t)``,
  ``c(t) = (1 + cos(π t/T))/2`` for t ≤ T, else 0 (:func:`toolcall_bonus`,
  and the ``prepare`` transform :func:`toolcall_reward`);
* a self-imitation replay buffer of positive-advantage rows, a fixed-capacity
  ring with validity masks (:class:`ReplayBuffer`), expiry after
  ``tolerate_steps``, recalibration of replayed advantages against the median
  of stored group means (and stds) and a power-of-two subsample;
* the replay-loss weight ramp ``w(t) = c_r(1 − cos(π t/T_r))/2``;
* Clip-Cov token masking: :func:`entropy_rl.regularizers.clip_cov` with the
  on-policy (2e-4, 1, 5) and replay (0.02, 2, 60) settings.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from entropy_rl.core import ops
from entropy_rl.core import types

Array = types.Array
BONUS_MODES = ("cosine", "constant", "none")
ON_POLICY_CLIP_COV = dict(ratio=2e-4, cov_low=1.0, cov_high=5.0)
REPLAY_CLIP_COV = dict(ratio=0.02, cov_low=2.0, cov_high=60.0)


def toolcall_bonus(num_calls: Array, step: Array, total_steps: int, *,
                   mode: str = "cosine") -> Array:
  """``min(1, 0.1·n)·c(t)``."""
  if mode not in BONUS_MODES:
    raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(BONUS_MODES)}")
  scale = jnp.minimum(1.0, 0.1 * jnp.asarray(num_calls, jnp.float32))
  if mode == "none":
    return jnp.zeros_like(scale)
  if mode == "constant":
    return scale
  t = jnp.asarray(step, jnp.float32)
  c = jnp.where(t <= total_steps,
                0.5 * (1.0 + jnp.cos(math.pi * t / total_steps)), 0.0)
  return scale * c


def replay_weight(step: Array, total_steps: int, coef: float = 1.0) -> Array:
  """``c_r(1 − cos(π t/T_r))/2`` for t ≤ T_r, else c_r."""
  t = jnp.asarray(step, jnp.float32)
  ramp = coef * 0.5 * (1.0 - jnp.cos(math.pi * t / total_steps))
  return jnp.where(t <= total_steps, ramp, coef)


def toolcall_reward(total_steps: int = 200, *, mode: str = "cosine"
                    ) -> types.EntropyTransform:
  """A ``prepare`` transform adding the tool-call bonus to ``rewards``
  (reads ``aux['n_tool_calls']`` and the ``step`` argument)."""
  if mode not in BONUS_MODES:
    raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(BONUS_MODES)}")

  def prepare(batch, state, *, rng=None, step=None, **extra):
    del rng, extra
    calls = (batch.aux or {}).get("n_tool_calls")
    if calls is None or batch.rewards is None:
      raise ValueError("toolcall_reward needs batch.rewards and "
                       "batch.aux['n_tool_calls']")
    bonus = toolcall_bonus(calls, step, total_steps, mode=mode)
    batch = ops.add_metrics(batch, toolcall_bonus=jnp.mean(bonus))
    return batch._replace(rewards=batch.rewards + bonus), state

  return types.EntropyTransform(
      types.init_empty_state, types.identity_update,
      prepare, types.Needs(frozenset({"rewards"})))


def recalibrate(rewards: Array, group_means: Array, group_means_valid: Array,
                group_stds: Array | None = None, *,
                normalize_std: bool = False) -> tuple[Array, Array]:
  """Replay advantages against the median stored group mean.

  ``A = R − μ₅₀`` (or ``(R − μ₅₀)/(s₅₀ + 1e-6)``); rows with A ≥ 0 are kept.

  Returns:
    ``(advantages [B], keep [B] bool)``.
  """
  vals = jnp.where(group_means_valid, group_means, jnp.nan)
  mu = jnp.nanquantile(vals, 0.5)
  a = rewards - mu
  if normalize_std:
    sd = jnp.nanquantile(jnp.where(group_means_valid, group_stds, jnp.nan),
                         0.5)
    a = a / (sd + 1e-6)
  return a, a >= 0


class ReplayBuffer(NamedTuple):
  """Fixed-capacity ring of rows (any pytree with leading dim = capacity)."""
  rows: Any
  rewards: Array  # [C]
  step_added: Array  # [C] int32
  valid: Array  # [C] bool
  cursor: Array  # () int32


def init_replay_buffer(capacity: int, example_row: Any) -> ReplayBuffer:
  rows = jax.tree.map(
      lambda x: jnp.zeros((capacity,) + jnp.shape(x), jnp.asarray(x).dtype),
      example_row)
  return ReplayBuffer(rows, jnp.zeros((capacity,), jnp.float32),
                      jnp.zeros((capacity,), jnp.int32),
                      jnp.zeros((capacity,), bool), jnp.zeros((), jnp.int32))


def add_rows(buffer: ReplayBuffer, rows: Any, rewards: Array, admit: Array,
             step: Array) -> ReplayBuffer:
  """Writes the admitted rows (e.g. mean token advantage > 0) at the cursor."""
  cap = buffer.valid.shape[0]
  order = jnp.cumsum(admit.astype(jnp.int32)) - 1
  slot = jnp.where(admit, (buffer.cursor + order) % cap, cap)  # cap: dropped
  put = lambda dst, src: dst.at[slot].set(src, mode="drop")
  new_rows = jax.tree.map(put, buffer.rows, rows)
  return ReplayBuffer(
      new_rows, put(buffer.rewards, rewards.astype(jnp.float32)),
      put(buffer.step_added, jnp.full(admit.shape, step, jnp.int32)),
      put(buffer.valid, jnp.ones_like(admit, bool)),
      (buffer.cursor + admit.sum()) % cap)


def expire(buffer: ReplayBuffer, newest_step: Array,
           tolerate_steps: int = 5) -> ReplayBuffer:
  """Drops rows older than ``min(tolerate_steps, 10)`` steps."""
  tol = min(tolerate_steps, 10)
  keep = buffer.valid & (newest_step - buffer.step_added <= tol)
  return buffer._replace(valid=keep)


def subsample(buffer: ReplayBuffer, rng: types.PRNGKey, keep: Array,
              max_rows: int) -> tuple[Array, Array]:
  """Uniform subsample of kept rows to ``min(max_rows, 2^⌊log2 #kept⌋)``.

  Returns:
    ``(indices [max_rows], valid [max_rows] bool)`` into the buffer.
  """
  ok = buffer.valid & keep
  n = ok.sum()
  pow2 = jnp.where(n > 0, 2 ** jnp.floor(jnp.log2(jnp.maximum(n, 1))), 0)
  take = jnp.minimum(max_rows, pow2).astype(jnp.int32)
  score = jnp.where(ok, jax.random.uniform(rng, ok.shape), -1.0)
  _, idx = jax.lax.top_k(score, max_rows)
  return idx, jnp.arange(max_rows) < take


# ----------------------------------------------------------------------------
# Self-imitation replay in a training loop (jit-able, one seed).


class ReplayConfig(NamedTuple):
  """Static settings of the self-imitation replay (spec A4 (c) 2, (e)).

  Attributes:
    buffer_size: replay rows per pass (SPEAR ``buffer_size``); the ring
      holds ``2·buffer_size`` rows, and a pass is triggered once it holds
      more than ``trigger·buffer_size`` valid rows.
    baseline_size: group entries kept in the baseline history (FIFO).
    tolerate_steps: rows older than this (≤ 10) are dropped.
    total_steps: T_r of the replay-weight ramp.
    coef: c_r, the replay weight after the ramp.
    normalize_std: ``A = (R − μ₅₀)/(s₅₀ + 1e-6)`` instead of ``R − μ₅₀``.
    trigger: 1.5 in SPEAR.
  """

  buffer_size: int = 8
  baseline_size: int = 64
  tolerate_steps: int = 5
  total_steps: int = 200
  coef: float = 1.0
  normalize_std: bool = False
  trigger: float = 1.5


class ReplayState(NamedTuple):
  """The replay buffer and the baseline history of group statistics."""

  buffer: ReplayBuffer
  group_means: Array  # [baseline_size] f32
  group_stds: Array  # [baseline_size] f32
  group_valid: Array  # [baseline_size] bool
  group_cursor: Array  # () int32


def init_replay_state(cfg: ReplayConfig, example_row: Any) -> ReplayState:
  """Empty state; ``example_row`` is one row (no leading axis)."""
  n = cfg.baseline_size
  return ReplayState(init_replay_buffer(2 * cfg.buffer_size, example_row),
                     jnp.zeros((n,), jnp.float32), jnp.zeros((n,), jnp.float32),
                     jnp.zeros((n,), bool), jnp.zeros((), jnp.int32))


def _group_stats(rewards: Array, group_ids: Array, valid: Array
                 ) -> tuple[Array, Array, Array]:
  """Per-group mean and (population) std of the valid rows' rewards; [B]
  arrays indexed by the dense group id, with a validity flag."""
  b = rewards.shape[0]
  _, g = jnp.unique(group_ids, size=b, return_inverse=True)
  g = g.reshape(b)
  w = valid.astype(jnp.float32)
  n = jax.ops.segment_sum(w, g, num_segments=b)
  mean = jax.ops.segment_sum(w * rewards, g, num_segments=b) / jnp.maximum(
      n, 1.0)
  var = jax.ops.segment_sum(w * (rewards - mean[g]) ** 2, g,
                            num_segments=b) / jnp.maximum(n, 1.0)
  return mean, jnp.sqrt(var), n > 0


def admit(state: ReplayState, rows: Any, rewards: Array, advantages: Array,
          group_ids: Array, step: Array, cfg: ReplayConfig,
          valid: Array | None = None) -> ReplayState:
  """After an on-policy update: stores the rows with advantage > 0.

  Also pushes this step's per-group mean and std of ``rewards`` into the
  baseline history and drops rows older than ``tolerate_steps``.

  Args:
    state: the :class:`ReplayState`.
    rows: the rollout's rows (pytree, leading axis B).
    rewards: [B] the rewards the advantages were computed from.
    advantages: [B] the rows' (mean token) advantages.
    group_ids: [B] task groups.
    step: the training step.
    cfg: :class:`ReplayConfig`.
    valid: [B] rows that exist (default all).
  """
  valid = jnp.ones(rewards.shape, bool) if valid is None else valid > 0
  buf = add_rows(state.buffer, rows, rewards, (advantages > 0) & valid, step)
  buf = expire(buf, step, cfg.tolerate_steps)
  mean, sd, ok = _group_stats(rewards.astype(jnp.float32), group_ids, valid)
  n = state.group_valid.shape[0]
  order = jnp.cumsum(ok.astype(jnp.int32)) - 1
  slot = jnp.where(ok, (state.group_cursor + order) % n, n)
  put = lambda dst, src: dst.at[slot].set(src, mode="drop")
  return ReplayState(buf, put(state.group_means, mean),
                     put(state.group_stds, sd),
                     put(state.group_valid, jnp.ones_like(ok)),
                     (state.group_cursor + ok.sum()) % n)


class Replay(NamedTuple):
  """One replay pass: ``buffer_size`` rows (``ok`` marks real ones)."""

  rows: Any  # pytree, leading axis K = buffer_size
  advantages: Array  # [K] recalibrated A_replay (0 where not ok)
  ok: Array  # [K] bool


def replay_pass(state: ReplayState, rng: types.PRNGKey, cfg: ReplayConfig
                ) -> tuple[ReplayState, Replay]:
  """Draws the replay rows of this step (none unless triggered).

  Triggered when the buffer holds more than ``trigger·buffer_size`` valid
  rows: advantages are recalibrated against the median stored group mean
  (:func:`recalibrate`), rows with A ≥ 0 are kept and subsampled to
  ``min(buffer_size, 2^⌊log2 #kept⌋)`` (:func:`subsample`), and the buffer
  is cleared (one replay pass).
  """
  buf = state.buffer
  go = buf.valid.sum() > cfg.trigger * cfg.buffer_size
  adv, keep = recalibrate(buf.rewards, state.group_means, state.group_valid,
                          state.group_stds,
                          normalize_std=cfg.normalize_std)
  idx, ok = subsample(buf, rng, keep, cfg.buffer_size)
  ok = ok & go
  rows = jax.tree.map(lambda x: jnp.take(x, idx, axis=0), buf.rows)
  adv = jnp.where(ok, adv[idx], 0.0)
  cleared = buf._replace(valid=jnp.where(go, False, buf.valid))
  return state._replace(buffer=cleared), Replay(rows, adv, ok)


def replay_advantages() -> types.EntropyTransform:
  """A ``prepare`` transform giving replayed rows their recalibrated
  advantage: rows with ``aux['is_replay'] > 0`` get
  ``aux['replay_advantage']`` on their tokens (place it after the on-policy
  advantages, which leave replayed rows out of the group statistics via
  ``aux['valid'] = 0``). The replay weight w(t) is the rows' ``weights``."""

  def prepare(batch, state, *, rng=None, step=None, **extra):
    del rng, step, extra
    aux = batch.aux or {}
    if "is_replay" not in aux or "replay_advantage" not in aux:
      raise ValueError("replay_advantages needs batch.aux['is_replay'] and "
                       "batch.aux['replay_advantage']")
    rep = aux["is_replay"][:, None] > 0
    adv = jnp.where(rep, aux["replay_advantage"][:, None] * batch.mask,
                    batch.advantages)
    batch = ops.add_metrics(batch, replay_rows=jnp.sum(aux["is_replay"]))
    return batch._replace(advantages=adv), state

  return types.EntropyTransform(
      types.init_empty_state, types.identity_update, prepare)
