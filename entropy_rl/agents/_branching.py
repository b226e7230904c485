"""AEPO / ARPO entropy-balanced branching inside the on-device agent rollout.

Reference: Dong et al. 2025, "Agentic Entropy-Balanced Policy Optimization",
https://arxiv.org/abs/2510.14545 (spec A3), extending ARPO's rollout
(RUC-NLPIR/ARPO ``vllm_rollout_with_tools.py``). The branch rule is ARPO's
code; the consecutive-branch penalty is AEPO's, in the spec's suggested
(unverified) form :func:`entropy_rl.agents._aepo_agentic.branch_probability`.

Each group (one task) has k = ``group_size`` row slots, the sampling
budget. Fixed shapes, one ``lax.scan`` over turns, as the plain rollout
(:func:`entropy_rl.agents._turns.plain_rollout`, built from its pieces):

* **Global samples.** Slots ``0 .. m−1`` of a group start at turn 0; the
  other k − m slots are the branch budget and hold the task's initial
  state until used. m is a traced value per group (the slots and all
  shapes stay static, so one compilation serves every m):
  ``initial_rollouts`` (``pre_monitor=False``, ARPO) or AEPO's entropy
  pre-monitoring (``pre_monitor=True``, the default).
* **Entropy pre-monitoring** (AEPO, spec A3:
  ``m = k·σ(β(H_root − H̄_tool))`` rounded to [1, k],
  :func:`entropy_rl.agents.global_sample_budget`). The spec
  gives no way to measure H_root and H̄_tool and keeps no cross-iteration
  state, so they are measured *before* the rollout by a short pre-rollout
  of the group's task: every slot of the group plays two turns from the
  task's initial state with its own key stream
  (``fold_in(rng, 0x9E4D)``, used as a rollout key: the pre-rollout's
  turns are those of :func:`entropy_rl.agents.rollout` with that key and
  the same tasks). H_root is the group mean of the first turn's chunk
  entropy (the policy's entropy on the question, ARPO's ``H_init``
  measure); H̄_tool the group mean over the rows that got a tool result
  (an observation and no ``done``) of the second turn's chunk entropy, the
  entropy after a tool call (N = those rows). A group whose pre-rollout
  has no tool turn uses ``initial_rollouts``. The pre-rollout's samples
  are thrown away (cost: two extra turns of decoding); the rollout's own
  keys are unchanged, so with equal m the output equals the static
  rollout's exactly. ``pre_entropies=(H_root, H̄_tool)`` (scalars or
  [num_groups], traced) replaces the measurement, e.g. with statistics a
  caller carries from its previous iteration.
* **Chunk entropy.** A row's turn entropy is ``H = Σ ent / log V`` over the
  first ``window`` tokens of its action (ARPO: 20 positions; this uses the
  sampler's full-vocabulary entropy instead of ARPO's top-10 logprobs).
  ``H_init`` is the row's value at its first turn; ``ΔH = H − H_init``.
* **Branching.** At turn t ≥ 1 of a row (its action after an
  observation, i.e. after a tool result), an active row is a source; it
  branches with probability ``P = clip(τ + w·ΔH, 0, 1)·penalty^l``
  (u ~ U(0,1), branch iff u < P; l = consecutive turns this path has
  branched on, reset to 0 by a turn without a branch; ``penalty = 1`` is
  ARPO's rule). A branch copies the source's whole state *before* the
  high-entropy action (context, KV cache, environment state, earlier turn
  records, l + 1) into a free slot of the group and draws its own action
  there with its own key stream, so it re-samples the uncertain step; the
  shared prefix is in both trajectories.
  Implementation: before the turn's draws, free slot q of a group (q-th
  free slot in row order) is a *candidate* copy of the group's q-th source
  (row order; at most one branch per source and turn, ARPO's beam 2); it
  samples with the others, and is kept iff its source decides to branch.
  Unkept candidates go back to the budget.
* **Fresh samples** (ARPO, ``fresh=True``): a group with no live rollout
  and unused budget starts one fresh sample from the task per turn; it is
  cut at the rollout's last turn like every episode.

Slots never used are empty trajectories (no action token, ``valid`` 0 in
``aux``): :func:`entropy_rl.agents.episode_advantages` leaves them out of
the group statistics. ``aux`` adds ``valid``, ``branch_turn`` (turn of the
row's first own action when it is a branch, else −1), ``branch_source``
(source row, −1 if none), ``fresh`` (1 for a fresh sample),
``global_samples`` (the row's group m) and, with pre-monitoring,
``h_root`` / ``h_tool`` (the group's H_root / H̄_tool, NaN where no tool
turn was seen). Turn ids
(``segment_ids``, L1 ``turn_ids``) are the row's own turn count, so both
layouts stay exact inverses.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from entropy_rl.agents import _aepo_agentic as aepo_agentic
from entropy_rl.agents import _envs as envs_lib
from entropy_rl.agents import _layouts as layouts
from entropy_rl.agents import _turns as turns_lib
from entropy_rl.core import types
from entropy_rl.sampling import processors as processors_lib
from entropy_rl.sampling import sampler as sampler_lib

Array = types.Array
PRNGKey = types.PRNGKey
_BRANCH_STREAM = 0x0B7A  # fold_in tag of the branch-decision key
_PRE_STREAM = 0x9E4D  # fold_in tag of the pre-monitoring rollout key


class BranchingConfig(NamedTuple):
  """Static settings of the branching rollout (spec A3 (e)).

  Attributes:
    initial_rollouts: the static m global samples per group
      (1 ≤ m ≤ group_size; ``m = group_size`` leaves no budget: the plain
      rollout, exactly). With ``pre_monitor`` only the fallback of a group
      whose pre-rollout saw no tool turn.
    tau: τ, the branch probability at ΔH = 0 (ARPO 0.5).
    weight: w, the entropy weight (ARPO scripts 0.2).
    penalty: the consecutive-branch factor: P is multiplied by
      ``penalty^l`` (1 = no penalty, ARPO; 0 = never twice in a row).
    window: tokens of a turn whose entropies are summed (ARPO 20).
    fresh: start a fresh sample in a group with no live rollout.
    pre_monitor: AEPO's entropy pre-monitoring: m per group is
      ``k·σ(β(H_root − H̄_tool))`` rounded to [1, k] (module docstring);
      False: the static ``initial_rollouts`` (ARPO).
    beta: β, the sensitivity of the pre-monitoring (UNVERIFIED; 1).
  """

  initial_rollouts: int
  tau: float = 0.5
  weight: float = 0.2
  penalty: float = 1.0
  window: int = 20
  fresh: bool = True
  pre_monitor: bool = True
  beta: float = 1.0


def turn_entropy(entropy: Array, mask: Array, window: int,
                 vocab_size: int) -> Array:
  """``Σ_{first window tokens} ent·mask / log V`` per row [R]."""
  w = min(int(window), entropy.shape[1])
  e = jnp.where(mask[:, :w] > 0, entropy[:, :w], 0.0)
  return jnp.sum(e, axis=1) / jnp.log(float(vocab_size))


def _rank_in_group(flag: Array, group_size: int) -> Array:
  """[R] int32: the rank of each flagged row among its group's (row order)."""
  f = flag.reshape(-1, group_size).astype(jnp.int32)
  return (jnp.cumsum(f, axis=1) - 1).reshape(-1)


def _rows_by_rank(flag: Array, group_size: int) -> Array:
  """[R] int32: entry g·G + q is the row of group g with rank q (or −1)."""
  f = flag.reshape(-1, group_size)
  order = jnp.argsort(~f, axis=1, stable=True)  # flagged first, row order
  n = f.sum(1, keepdims=True)
  g = jnp.arange(f.shape[0])[:, None] * group_size
  q = jnp.arange(group_size)[None, :]
  return jnp.where(q < n, g + order, -1).reshape(-1)


def _take(tree: Any, idx: Array) -> Any:
  return jax.tree.map(lambda x: jnp.take(x, idx, axis=0), tree)


def _take_ds(ds: sampler_lib.DecodeState | None, idx: Array):
  if ds is None:
    return None
  return sampler_lib.DecodeState(sampler_lib.take_cache_rows(ds.cache, idx),
                                 ds.logits[idx], ds.pos[idx])


def _where_rows(flag: Array, a: Any, b: Any) -> Any:
  def sel(x, y):
    return jnp.where(flag.reshape((-1,) + (1,) * (x.ndim - 1)), x, y)
  return jax.tree.map(sel, a, b)


def _where_ds(flag, a, b):
  if a is None:
    return None
  # The write index is shared by every row (all rows advance together).
  cache = b.cache._replace(
      k=jax.tree.map(lambda x, y: jnp.where(
          flag.reshape((1,) * (x.ndim - 4) + (-1,) + (1,) * 3), x, y),
                     a.cache.k, b.cache.k),
      v=jax.tree.map(lambda x, y: jnp.where(
          flag.reshape((1,) * (x.ndim - 4) + (-1,) + (1,) * 3), x, y),
                     a.cache.v, b.cache.v),
      valid=jnp.where(flag[:, None], a.cache.valid, b.cache.valid))
  return sampler_lib.DecodeState(cache,
                                 jnp.where(flag[:, None], a.logits, b.logits),
                                 jnp.where(flag, a.pos, b.pos))


def _empty_records(t_max, r, c, l, o, pad_id) -> turns_lib.TurnRecord:
  full = lambda shape, v, dt: jnp.full((t_max, r) + shape, v, dt)
  return turns_lib.TurnRecord(
      prompt=full((c,), pad_id, jnp.int32), prompt_mask=full((c,), False,
                                                             bool),
      action=full((l,), pad_id, jnp.int32),
      action_mask=full((l,), 0.0, jnp.float32),
      logp=full((l,), 0.0, jnp.float32), entropy=full((l,), 0.0, jnp.float32),
      obs=full((o,), pad_id, jnp.int32), obs_mask=full((o,), False, bool),
      reward=full((), 0.0, jnp.float32), done=full((), False, bool),
      turn_mask=full((), False, bool))


class _Carry(NamedTuple):
  buf: turns_lib.Buffer
  ds: Any
  state: Any
  active: Array  # [R] bool, episode running
  used: Array  # [R] bool, slot started
  row_turn: Array  # [R] int32, turns taken
  h_init: Array  # [R] f32
  consec: Array  # [R] int32, consecutive branches on the path
  branch_turn: Array  # [R] int32
  branch_source: Array  # [R] int32
  fresh: Array  # [R] bool
  recs: turns_lib.TurnRecord  # [T, R, ...]


def check_config(cfg: BranchingConfig, group_size: int) -> None:
  """ValueError unless ``cfg`` is valid for groups of ``group_size``."""
  if not 1 <= cfg.initial_rollouts <= group_size:
    raise ValueError(f"initial_rollouts must be in [1, group_size="
                     f"{group_size}], got {cfg.initial_rollouts}")
  if cfg.window < 1:
    raise ValueError(f"window must be >= 1, got {cfg.window}")
  if not 0.0 <= cfg.penalty <= 1.0:
    raise ValueError(f"penalty must be in [0, 1], got {cfg.penalty}")
  if not math.isfinite(cfg.beta):
    raise ValueError(f"beta must be finite, got {cfg.beta}")


class PreMonitor(NamedTuple):
  """Entropy pre-monitoring of each group ([num_groups])."""
  h_root: Array  # f32, mean first-turn chunk entropy (the question)
  h_tool: Array  # f32, mean chunk entropy after a tool result (NaN: none)
  n_tool: Array  # int32, N: pre-rollout rows that got a tool result
  m: Array  # int32, global samples in [1, k]


def pre_monitor_budget(h_root: Array, h_tool: Array, n_tool: Array, *,
                       group_size: int, cfg: BranchingConfig) -> Array:
  """[G] int32 m: :func:`aepo_agentic.global_sample_budget` per group;
  ``initial_rollouts`` where ``n_tool = 0`` (no tool entropy)."""
  m = aepo_agentic.global_sample_budget(
      group_size, h_root, jnp.where(n_tool > 0, h_tool, h_root), cfg.beta)
  return jnp.where(n_tool > 0, m, cfg.initial_rollouts).astype(jnp.int32)


def _pre_rollout(pol, params, env, rng, state0, buf0, ds0, *, rows: int,
                 group_size: int, window: int, vocab: int, pp_fn,
                 sampling_params) -> tuple[Array, Array, Array]:
  """The first two turns of every slot from the task, with ``rng``'s turn
  keys (:func:`entropy_rl.agents.rollout`'s): -> (H_root, H̄_tool, N)."""
  _, k_turns = turns_lib.rollout_keys(rng)
  active = jnp.ones((rows,), bool)
  k_s, k_e = turns_lib.turn_keys(k_turns, 0, rows)
  ds, smp = pol.act(params, buf0, ds0, k_s, active, pp_fn(0),
                    sampling_params)
  h0 = turn_entropy(smp.entropy, smp.mask, window, vocab)
  _, obs, reward, done = jax.vmap(env.step)(state0, smp.tokens, k_e)
  buf, ds, active, _ = pol.observe(params, buf0, ds, active, 0, smp, obs,
                                   reward, done)
  k_s, _ = turns_lib.turn_keys(k_turns, 1, rows)
  _, smp = pol.act(params, buf, ds, k_s, active, pp_fn(1), sampling_params)
  h1 = turn_entropy(smp.entropy, smp.mask, window, vocab)
  h_root = h0.reshape(-1, group_size).mean(1)
  tool = active.reshape(-1, group_size)
  n_tool = tool.sum(1).astype(jnp.int32)
  h_tool = jnp.sum(jnp.where(tool, h1.reshape(-1, group_size), 0.0), 1)
  h_tool = jnp.where(n_tool > 0, h_tool / jnp.maximum(n_tool, 1), jnp.nan)
  return h_root, h_tool, n_tool


def branching_rollout(fns: Any, params: Any, env: envs_lib.AgentEnv,
                      rng: PRNGKey, *, num_groups: int, group_size: int,
                      branching: BranchingConfig,
                      sampling: processors_lib.SamplingMethod = (
                          processors_lib.SamplingMethod()),
                      processors: Sequence[types.LogitsProcessor] = (),
                      processor_params: Sequence[Any] | None = None,
                      sampling_params: Sequence[Any] | None = None,
                      decode: str = "cache", cache_dtype: Any = None,
                      pre_entropies: tuple[Array, Array] | None = None
                      ) -> layouts.Episodes:
  """:func:`entropy_rl.agents.rollout` with entropy-balanced branching.

  Same arguments, keys and outputs as :func:`entropy_rl.agents.rollout`
  (see the module docstring for the rule), plus ``branching``. The turn's
  sampler and environment keys are the plain rollout's; the branch
  uniforms use ``fold_in(fold_in(rng, tag), t)``. With
  ``initial_rollouts = group_size`` (and ``pre_monitor=False``) the output
  equals the plain rollout's exactly (plus the ``aux`` entries above).
  ``pre_entropies``: ``(H_root, H̄_tool)``, scalars or [num_groups]
  (traced), replacing the pre-rollout measurement when ``pre_monitor``
  (every group then counts as having tool turns).
  """
  check_config(branching, group_size)
  spec = env.spec
  r = turns_lib.check_groups(num_groups, group_size)
  g_size, t_max = group_size, spec.max_turns
  pol = turns_lib.make_policy(fns, spec, sampling, processors, decode,
                              cache_dtype)
  vocab = int(jax.eval_shape(fns.head, params).shape[-1])
  k_reset, k_turns = turns_lib.rollout_keys(rng)
  k_branch = jax.random.fold_in(rng, _BRANCH_STREAM)
  state0, obs0 = jax.vmap(env.reset)(turns_lib.reset_keys(k_reset, num_groups,
                                                          group_size))
  buf0, ds0 = pol.start(params, obs0)
  rows = jnp.arange(r, dtype=jnp.int32)
  slot = rows % g_size
  pp_fn = processor_params if callable(processor_params) else (
      lambda t: processor_params)
  pre = None
  if branching.pre_monitor:
    if pre_entropies is None:
      h_root, h_tool, n_tool = _pre_rollout(
          pol, params, env, jax.random.fold_in(rng, _PRE_STREAM), state0,
          buf0, ds0, rows=r, group_size=g_size, window=branching.window,
          vocab=vocab, pp_fn=pp_fn, sampling_params=sampling_params)
    else:
      h_root, h_tool = (jnp.broadcast_to(jnp.asarray(x, jnp.float32),
                                         (num_groups,))
                        for x in pre_entropies)
      n_tool = jnp.full((num_groups,), g_size, jnp.int32)
    m = pre_monitor_budget(h_root, h_tool, n_tool, group_size=g_size,
                           cfg=branching)
    pre = PreMonitor(h_root, h_tool, n_tool, m)
  else:
    m = jnp.full((num_groups,), branching.initial_rollouts, jnp.int32)
  initial = slot < jnp.repeat(m, g_size)  # dynamic m, static slots
  c, l, o = spec.context_len, spec.action_len, spec.obs_len
  empty = _empty_records(t_max, r, c, l, o, spec.pad_id)
  carry = _Carry(
      buf=buf0, ds=ds0, state=state0, active=initial, used=initial,
      row_turn=jnp.zeros((r,), jnp.int32), h_init=jnp.zeros((r,)),
      consec=jnp.zeros((r,), jnp.int32),
      branch_turn=jnp.full((r,), -1, jnp.int32),
      branch_source=jnp.full((r,), -1, jnp.int32),
      fresh=jnp.zeros((r,), bool),
      recs=empty)

  def body(cr: _Carry, t):
    k_s, k_e = turns_lib.turn_keys(k_turns, t, r)
    # 1. Candidates: free slot q of a group copies the group's q-th source.
    source = cr.active & (cr.row_turn >= 1)
    free = ~cr.used
    src_by_rank = _rows_by_rank(source, g_size)
    q = _rank_in_group(free, g_size)
    group0 = rows - slot
    cand_src = jnp.where(free, src_by_rank[group0 + jnp.clip(q, 0)], -1)
    is_cand = free & (cand_src >= 0)
    if branching.fresh:
      none_live = ~jnp.any(cr.active.reshape(-1, g_size), axis=1)
      is_fresh = free & (q == 0) & jnp.repeat(none_live, g_size)
    else:
      is_fresh = jnp.zeros((r,), bool)
    idx = jnp.where(is_cand, cand_src, rows)
    per_row = (cr.row_turn, cr.h_init, cr.consec)
    row_turn, h_init, consec = _take(per_row, idx)
    buf = _where_rows(is_fresh, buf0, _take(cr.buf, idx))
    ds = _where_ds(is_fresh, ds0, _take_ds(cr.ds, idx))
    state = _where_rows(is_fresh, state0, _take(cr.state, idx))
    recs = jax.tree.map(lambda x: jnp.take(x, idx, axis=1), cr.recs)
    row_turn = jnp.where(is_fresh, 0, row_turn)
    consec = jnp.where(is_fresh, 0, consec)
    # 2. Every row draws its action (candidates and fresh ones too).
    acting = cr.active | is_cand | is_fresh
    ds, smp = pol.act(params, buf, ds, k_s, acting, pp_fn(t),
                      sampling_params)
    # 3. Entropy-balanced decisions of the sources.
    h = turn_entropy(smp.entropy, smp.mask, branching.window, vocab)
    delta = h - cr.h_init
    p = aepo_agentic.branch_probability(
        delta, cr.consec.astype(jnp.float32), tau=branching.tau,
        weight=branching.weight, penalty=branching.penalty)
    u = jax.random.uniform(jax.random.fold_in(k_branch, t), (r,))
    want = source & (u < p)
    kept = is_cand & want[jnp.clip(cand_src, 0)]
    has_kept = jnp.zeros((r,), bool).at[jnp.where(kept, cand_src, r)].set(
        True, mode="drop")
    branched = source & has_kept
    consec = jnp.where(kept, consec + 1,
                       jnp.where(source, jnp.where(branched, consec + 1, 0),
                                 consec))
    turn_on = cr.active | kept | is_fresh
    h_init = jnp.where(turn_on & (row_turn == 0), h, h_init)
    # 4. The environment and the bookkeeping (as the plain rollout's).
    new_state, obs, reward, done = jax.vmap(env.step)(state, smp.tokens, k_e)
    state = _where_rows(turn_on, new_state, state)
    amask = smp.mask & turn_on[:, None]
    omask = (obs != spec.pad_id) & turn_on[:, None]
    reward = jnp.where(turn_on, reward.astype(jnp.float32), 0.0)
    done = turn_on & (done.astype(bool) | (row_turn >= t_max - 1) |
                      (t >= t_max - 1))
    action = jnp.where(amask, smp.tokens, spec.pad_id).astype(jnp.int32)
    logp = jnp.where(amask, smp.logp, 0.0)
    ent = jnp.where(amask, smp.entropy, 0.0)
    obs = jnp.where(omask, obs, spec.pad_id).astype(jnp.int32)
    rec = turns_lib.TurnRecord(
        buf.tokens, buf.mask, action, amask.astype(jnp.float32), logp, ent,
        obs, omask, reward, done, turn_on)
    at = jnp.where(turn_on, row_turn, t_max)
    recs = jax.tree.map(lambda x, y: x.at[at, rows].set(y, mode="drop"),
                        recs, rec)
    buf = turns_lib.append_turn(buf, row_turn, action, amask, logp, ent,
                                obs, omask, spec.pad_id)
    if ds is not None:
      ds = turns_lib.feed(fns, params, ds, obs, omask)
    started = kept | is_fresh
    # Rejected candidates go back to the budget with no records.
    recs = jax.tree.map(
        lambda x, y: jnp.where((cr.used | started).reshape(
            (1, r) + (1,) * (x.ndim - 2)), x, y), recs, empty)
    return _Carry(
        buf=buf, ds=ds, state=state, active=turn_on & ~done,
        used=cr.used | started, row_turn=row_turn + turn_on.astype(jnp.int32),
        h_init=h_init, consec=consec,
        branch_turn=jnp.where(kept, row_turn, cr.branch_turn),
        branch_source=jnp.where(kept, cand_src, cr.branch_source),
        fresh=cr.fresh | is_fresh, recs=recs), None

  cr, _ = jax.lax.scan(body, carry, jnp.arange(t_max, dtype=jnp.int32))
  # Unused slots: the task's initial state (rejected candidates left junk).
  buf = _where_rows(cr.used, cr.buf, buf0)
  state = _where_rows(cr.used, cr.state, state0)
  recs = cr.recs
  off = ~recs.turn_mask[..., None]  # turns a row did not take: final context
  recs = recs._replace(
      prompt=jnp.where(off, buf.tokens[None], recs.prompt),
      prompt_mask=jnp.where(off, buf.mask[None], recs.prompt_mask))
  aux = {k: jnp.asarray(v, jnp.float32)
         for k, v in jax.vmap(env.metrics)(state).items()}
  aux.update(valid=cr.used.astype(jnp.float32),
             branch_turn=cr.branch_turn.astype(jnp.float32),
             branch_source=cr.branch_source.astype(jnp.float32),
             fresh=cr.fresh.astype(jnp.float32),
             global_samples=jnp.repeat(m, g_size).astype(jnp.float32))
  if pre is not None:
    aux.update(h_root=jnp.repeat(pre.h_root, g_size),
               h_tool=jnp.repeat(pre.h_tool, g_size))
  return turns_lib.episodes(recs, buf, aux, group_size)
