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
* Clip-Cov token masking with the on-policy (2e-4, 1, 5) settings on
  on-policy rows and the replay (0.02, 2, 60) settings on replayed rows,
  each over its own rows' statistics (:func:`spear_clip_cov`);
* the loss ``L_on + w(t)·L_replay`` (:func:`replay_loss`), each part
  aggregated over its own rows' tokens, as SPEAR's ``dp_actor.py`` runs the
  replay batch as a loss of its own.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from entropy_rl import regularizers
from entropy_rl.core import objectives as objectives_lib
from entropy_rl.core import ops
from entropy_rl.core import types

Array = types.Array
sg = jax.lax.stop_gradient
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
  ``aux['valid'] = 0``). The replay weight w(t) is applied by
  :func:`replay_loss`."""

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


# ----------------------------------------------------------------------------
# The SPEAR loss over a mixed batch (on-policy rows + replayed rows).


def _replay_rows(batch: types.PolicyBatch, what: str) -> tuple[Array, Array]:
  """``(is_replay [B, 1], replay_slot [B, 1])`` float from ``batch.aux``."""
  aux = batch.aux or {}
  missing = [k for k in ("is_replay", "replay_slot") if k not in aux]
  if missing:
    raise ValueError(f"{what} needs batch.aux {missing} (written by "
                     "entropy_rl.agents.mix_replay); found aux keys "
                     f"{sorted(aux)}")
  f = lambda k: (jnp.asarray(aux[k], jnp.float32) > 0).astype(
      jnp.float32)[:, None]
  return f("is_replay"), f("replay_slot")


def spear_clip_cov(ratio: float = ON_POLICY_CLIP_COV["ratio"],
                   cov_low: float = ON_POLICY_CLIP_COV["cov_low"],
                   cov_high: float = ON_POLICY_CLIP_COV["cov_high"], *,
                   replay_ratio: float = REPLAY_CLIP_COV["ratio"],
                   replay_cov_low: float = REPLAY_CLIP_COV["cov_low"],
                   replay_cov_high: float = REPLAY_CLIP_COV["cov_high"]
                   ) -> types.EntropyTransform:
  """SPEAR's Clip-Cov: on-policy and replayed rows each with their settings.

  SPEAR calls ``compute_policy_loss_clip_cov`` on the on-policy batch with
  (ρ, lb, ub) = (2e-4, 1, 5) and on the replay batch (``is_replay=True``)
  with (0.02, 2, 60) (spec A4 (c) 3, (e)). Here the rows with
  ``aux['is_replay'] > 0`` (:func:`entropy_rl.agents.mix_replay`) get
  :func:`entropy_rl.regularizers.clip_cov` with the replay settings and the
  other rows the on-policy settings, each with its covariance statistics
  and its ``n = max(1, ⌊ρ·N⌋)`` over its own rows' tokens. A batch without
  ``aux['is_replay']`` is all on-policy (exactly ``clip_cov(ratio, cov_low,
  cov_high)``).

  Args:
    ratio, cov_low, cov_high: on-policy ρ, lb, ub.
    replay_ratio, replay_cov_low, replay_cov_high: replay ρ, lb, ub.

  Returns:
    An :class:`EntropyTransform` writing ``weights`` (needs ``rng``).
    Metrics: ``clip_cov_frac``, ``clip_cov_candidate_frac`` (on-policy
    rows) and ``clip_cov_frac_replay``, ``clip_cov_candidate_frac_replay``.
  """
  on_t = regularizers.clip_cov(ratio, cov_low, cov_high)
  rep_t = regularizers.clip_cov(replay_ratio, replay_cov_low,
                                replay_cov_high)

  def update(batch, state, *, rng=None, step=None, **extra):
    del extra
    if "is_replay" not in (batch.aux or {}):
      return on_t.update(batch, state, rng=rng, step=step)
    rep = (jnp.asarray(batch.aux["is_replay"], jnp.float32) > 0)[:, None]
    mask_on = jnp.where(rep, 0.0, batch.mask)
    mask_rep = jnp.where(rep, batch.mask, 0.0)
    k_rep = None if rng is None else jax.random.fold_in(rng, 1)
    b_on, _ = on_t.update(batch._replace(mask=mask_on), state, rng=rng,
                          step=step)
    b_rep, _ = rep_t.update(batch._replace(mask=mask_rep), state, rng=k_rep,
                            step=step)
    weights = jnp.where(rep, b_rep.weights, b_on.weights)
    out = batch._replace(weights=weights, metrics=b_on.metrics)
    return ops.add_metrics(
        out, clip_cov_frac_replay=b_rep.metrics["clip_cov_frac"],
        clip_cov_candidate_frac_replay=b_rep.metrics[
            "clip_cov_candidate_frac"]), state

  return types.EntropyTransform(types.init_empty_state, update)


def replay_loss(transform: types.EntropyTransform, *,
                agg: str = "token-mean", smtsn: str = "verl"
                ) -> types.EntropyTransform:
  """Wraps a chain so that the loss is ``L_on + w·L_replay`` (spec A4 (c) 2).

  SPEAR's ``dp_actor.py`` computes the replay batch's loss (PG and entropy
  bonus) with ``agg_loss`` over the replay rows alone and scales it by the
  ramped weight w(t). On a mixed batch (:func:`entropy_rl.agents.mix_replay`)
  the objective aggregates every row together; after ``transform``'s loss
  side this wrapper rescales each row's token weights and each ``[B, T]``
  loss term (the entropy bonus, ...) by a row factor that makes the pooled
  aggregate exactly the sum of the two groups' own aggregates:

  * ``token-mean``: N/N_on on on-policy rows, w·N/N_rep on replayed rows
    (N: valid tokens of the scope);
  * ``seq-mean-*`` and ``seq-mean-token-sum-norm`` with ``smtsn="mean"``:
    B/B_on and w·B/B_rep (rows; padding replay slots count in neither);
  * ``seq-mean-token-sum-norm`` with ``smtsn="verl"`` (constant
    denominator): 1 and w.

  Per statistics scope (mini-batch): a scope without replayed rows is
  ``L_on``. Scalar loss terms are added once, unscaled. Note: SPEAR's
  replay loss has no KL term; a ``[B, T]`` KL term here is scaled like the
  others. SPEAR also takes a separate optimizer step per replay
  mini-batch; here the replayed rows share the on-policy gradient steps.

  Args:
    transform: the chain (its ``prepare``, ``init`` and ``needs`` are kept).
    agg: the objective's aggregation (``Objective.agg``).
    smtsn: the objective's ``-norm`` variant (``Objective.smtsn``).

  Returns:
    The wrapped :class:`EntropyTransform`; it reads ``aux['is_replay']``,
    ``aux['replay_slot']`` and ``aux['replay_weight']`` (w per row).
  """
  objectives_lib.check_agg_mode(agg)

  def update(batch, state, *, rng=None, step=None, **extra):
    batch, state = transform.update(batch, state, rng=rng, step=step,
                                    **extra)
    rep, slot = _replay_rows(batch, "replay_loss")
    if "replay_weight" not in batch.aux:
      raise ValueError("replay_loss needs batch.aux['replay_weight'] (w per "
                       "row, written by entropy_rl.agents.mix_replay)")
    w = jnp.asarray(batch.aux["replay_weight"], jnp.float32)[:, None]
    on = 1.0 - slot
    if agg == "token-mean":
      n_on = jnp.sum(batch.mask * on)
      n_rep = jnp.sum(batch.mask * rep)
    elif agg == "seq-mean-token-sum-norm" and smtsn == "verl":
      n_on = n_rep = None
    else:
      n_on, n_rep = jnp.sum(on), jnp.sum(rep)
    if n_on is None:
      f_on, f_rep = jnp.ones_like(w), w
    else:
      n = (jnp.sum(batch.mask) if agg == "token-mean"
           else jnp.asarray(batch.mask.shape[0], jnp.float32))
      f_on = jnp.where(n_on > 0, n / jnp.maximum(n_on, 1e-8), 0.0)
      f_rep = jnp.where(n_rep > 0, w * n / jnp.maximum(n_rep, 1e-8), 0.0)
    factor = sg(on * f_on + rep * f_rep)  # [B, 1]; 0 on padding slots
    terms = {k: v * factor if v.ndim == 2 else v
             for k, v in (batch.loss_terms or {}).items()}
    batch = batch._replace(weights=batch.weights * factor, loss_terms=terms)
    return ops.add_metrics(batch, replay_token_frac=ops.masked_mean(
        jnp.broadcast_to(rep, batch.mask.shape), batch.mask)), state

  return types.EntropyTransform(transform.init, update, transform.prepare,
                                transform.needs)
