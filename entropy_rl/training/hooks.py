"""The generic side of rollout hooks: scoring, one jitted iteration, DAPO.

The protocol (:class:`~entropy_rl.core.rollout.RolloutHook`, its
:class:`~entropy_rl.core.rollout.RolloutHookSpec` and the
:class:`~entropy_rl.core.rollout.HookContext` the loop builds it with) lives
in ``entropy_rl.core.rollout``, so each rollout-side method implements its
hook in its own module (``regularizers.aepo_rollout_hook``,
``regularizers.cure_rollout_hook``) without importing training. This module
runs any hook; nothing here names a method or sees a ConfigDict, and every
function is pure and static-shape, so a hooked step is still one jitted (and
seed-vmapped, mesh-sharded) program when the task's reward is a JAX function.

The reward runs between a hook's two halves: on device (:func:`jax_collect`)
or on the host (the loop's Python-reward path), with each row's answer looked
up by its ``group_ids`` (the prompt it answers); :func:`finish_fn` adds the
reward metrics of the main rollout to the hook's own.

* :func:`plain_hook` -- one rollout (the loop without hooks).
* :func:`dynamic_sampling_hook` -- DAPO's filter (§1.4) around any hook
  spec: groups whose rewards are all equal are dropped and more generation
  rounds are sampled until the batch is full or ``max_rounds`` rounds ran;
  the batch keeps its static size: missing groups are filled with dropped
  ones whose response mask is zeroed. On device the rounds run in a
  ``lax.while_loop`` that stops as soon as the batch is full
  (:func:`dynamic_sampling`; the loop feeds ``max_rounds`` prompt batches
  per step; the prompts of rounds that are not needed are skipped). The
  Python-reward path runs the same rounds in the Python loop between jitted
  calls (:func:`python_dynamic_sampling`; ``select_groups`` is shared).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from entropy_rl.core import rollout as rollout_lib
from entropy_rl.training import iteration as it_lib
from entropy_rl.training import types

Array = jax.Array
Rollout = types.Rollout
Prompts = it_lib.Prompts
TrainState = types.TrainState
HookContext = rollout_lib.HookContext
RolloutHook = rollout_lib.RolloutHook
RolloutHookSpec = rollout_lib.RolloutHookSpec


# ----------------------------------------------------------------- hooks


def plain_hook(rollout_fn: Callable[..., Rollout]) -> RolloutHook:
  """One rollout of ``rollout_fn(params, prompts, rng, transform_state)``."""

  def rollouts(state, prompts, key):
    return (rollout_fn(state.params, prompts, key, state.transform_state),)

  def finish(state, prompts, scored):
    del state, prompts
    (ro,) = scored
    return ro, {}

  return RolloutHook(rollouts, finish, None, "plain")


def plain_spec() -> RolloutHookSpec:
  """The spec of :func:`plain_hook` around the loop's main rollout."""
  return RolloutHookSpec(lambda ctx: plain_hook(ctx.rollout_fn), "plain")


def finish_fn(hook: RolloutHook) -> Callable[..., tuple]:
  """``finish(state, prompts, scored) -> (batch, metrics)``: the hook's,
  its metrics after the reward metrics of ``scored[0]`` (the main
  rollout: the policy's accuracy on this step's prompts)."""

  def finish(state, prompts, scored):
    batch, own = hook.finish(state, prompts, scored)
    m = it_lib.reward_metrics(scored[0].rewards, scored[0].group_ids,
                              prompts.tokens.shape[0])
    m.update(own)
    return batch, m

  return finish


def row_answers(answer: Any, group_ids: Array) -> Any:
  """Each row's answer: the answer of prompt ``group_ids[i]``."""
  if answer is None:
    return None
  return jax.tree.map(lambda a: jnp.take(a, group_ids, axis=0), answer)


def score_rows(jax_reward_fn: Callable[..., Array], ro: Rollout, answer: Any,
               reward_view: Callable[[Rollout], tuple] | None = None
               ) -> Rollout:
  """``ro`` with rewards from a JAX checker (answers by ``group_ids``)."""
  prompt, response, mask = ((ro.prompt, ro.response, ro.response_mask)
                            if reward_view is None else reward_view(ro))
  rewards = jax_reward_fn(prompt, response, mask,
                          row_answers(answer, ro.group_ids))
  return it_lib.with_rewards(ro, rewards)


def jax_collect(hook: RolloutHook, jax_reward_fn: Callable[..., Array]
                ) -> Callable[..., tuple[Rollout, dict[str, Array]]]:
  """``collect(state, prompts, key) -> (batch, metrics)`` with an on-device
  reward."""
  finish = finish_fn(hook)

  def collect(state, prompts, key):
    ros = hook.rollouts(state, prompts, key)
    ros = tuple(score_rows(jax_reward_fn, r, prompts.answer, hook.reward_view)
                for r in ros)
    return finish(state, prompts, ros)

  return collect


def make_hooked_iteration(collect: Callable[..., tuple],
                          train_step: Callable[..., Any]
                          ) -> Callable[[TrainState, Prompts], tuple]:
  """``iteration(state, prompts) -> (state, metrics)``: collect (key
  ``step_key(state, "rollout")``) then the train step."""

  def iteration(state, prompts):
    ro, m = collect(state, prompts, types.step_key(state, "rollout"))
    state, metrics = train_step(state, ro)
    metrics.update(m)
    return state, metrics

  return iteration


# ----------------------------------------------------- dynamic sampling


def group_keep(rewards: Array, group_ids: Array, num_groups: int) -> Array:
  """[G] bool: group k is kept iff its rewards are not all equal (or it has
  one member), DAPO's ``std(R) > 0``."""
  r = rewards.astype(jnp.float32)
  hi = jax.ops.segment_max(r, group_ids, num_segments=num_groups)
  lo = jax.ops.segment_min(r, group_ids, num_segments=num_groups)
  n = jax.ops.segment_sum(jnp.ones_like(r), group_ids,
                          num_segments=num_groups)
  return (hi > lo) | (n < 2)


def group_sorted(ro: Rollout) -> Rollout:
  """The rows of ``ro`` reordered by group (stable): group k's rows are
  block k (equal group sizes)."""
  order = jnp.argsort(ro.group_ids, stable=True)
  rows = ro.response.shape[0]
  return jax.tree.map(lambda x: jnp.take(x, order, axis=0)
                      if x.ndim and x.shape[0] == rows else x, ro)


def select_groups(buffer: Rollout, keep: Array, num_groups: int
                  ) -> tuple[Rollout, Array]:
  """The first ``num_groups`` kept groups of a group-sorted buffer.

  Args:
    buffer: rows of ``K`` rounds, each group-sorted ([K·G_rows]).
    keep: [K·num_groups] bool, one flag per group block.
    num_groups: groups in the batch.

  Returns:
    ``(batch, valid [num_groups])``: the batch of ``num_groups`` groups
    (kept groups in round order; if fewer were kept, dropped groups fill
    the rest with a zero response mask) with ``group_ids`` = slot.
  """
  total = keep.shape[0]
  rows = buffer.response.shape[0]
  g = rows // total
  order = jnp.argsort(~keep, stable=True)[:num_groups]
  valid = jnp.arange(num_groups) < jnp.sum(keep)
  idx = (order[:, None] * g + jnp.arange(g)[None, :]).reshape(-1)
  out = jax.tree.map(lambda x: jnp.take(x, idx, axis=0)
                     if x.ndim and x.shape[0] == rows else x, buffer)
  row_valid = jnp.repeat(valid, g).astype(out.response_mask.dtype)
  out = out._replace(
      response_mask=out.response_mask * row_valid[:, None],
      group_ids=jnp.repeat(jnp.arange(num_groups, dtype=jnp.int32), g))
  return out, valid


def dynamic_sampling_metrics(kept: Array, sampled: Array, rounds: Array,
                             num_groups: int) -> dict[str, Array]:
  """Counts over the rounds sampled in one step."""
  kept = jnp.asarray(kept, jnp.float32)
  sampled = jnp.asarray(sampled, jnp.float32)
  return {"dynamic/kept_groups": kept,
          "dynamic/filtered_groups": sampled - kept,
          "dynamic/filtered_frac": (sampled - kept) / jnp.maximum(sampled, 1),
          "dynamic/rounds": jnp.asarray(rounds, jnp.float32),
          "dynamic/padded_groups": jnp.maximum(num_groups - kept, 0.0)}


def round_key(key: Array, r: Any) -> Array:
  """Round 0 uses the step's rollout key itself (so a step that filters
  nothing is the plain step); round r > 0 ``fold_in(key, r)``."""
  return jnp.where(jnp.asarray(r) == 0, key, jax.random.fold_in(key, r))


def round_prompts(prompts: Prompts, r: Any, num_groups: int) -> Prompts:
  """Rows ``[r·P, (r+1)·P)`` of the stacked prompts of all rounds."""
  return jax.tree.map(
      lambda x: jax.lax.dynamic_slice_in_dim(x, r * num_groups, num_groups,
                                             0), prompts)


def dynamic_sampling(collect: Callable[..., tuple], *, num_groups: int,
                     max_rounds: int) -> Callable[..., tuple]:
  """DAPO dynamic sampling around ``collect`` (static shapes, one jit).

  Args:
    collect: ``collect(state, prompts, key) -> (batch, metrics)`` of one
      round of ``num_groups`` prompts (scored; equal group sizes).
    num_groups: P, prompts (groups) per batch.
    max_rounds: generation rounds at most.

  Returns:
    ``collect(state, prompts, key)`` whose ``prompts`` hold
    ``max_rounds · P`` rows (round r: rows ``[r·P, (r+1)·P)``). Round 0 is
    always sampled; round r > 0 only while fewer than P groups were kept
    (one ``lax.while_loop`` holding the only copy of ``collect``). Metrics: round 0's reward metrics (the policy's
    accuracy on fresh prompts) and :func:`dynamic_sampling_metrics`.
  """
  if max_rounds < 1:
    raise ValueError(f"max_rounds must be >= 1, got {max_rounds}")
  b = num_groups

  def run(state, prompts, key):
    total = prompts.tokens.shape[0]
    if total != max_rounds * b:
      raise ValueError(f"dynamic sampling needs {max_rounds} x {b} prompt "
                       f"rows, got {total}")
    # One copy of ``collect`` in the program (compile time): every round,
    # round 0 included, runs in the loop; buffers start as zeros.
    shapes = jax.eval_shape(
        lambda: collect(state, round_prompts(prompts, 0, b), key))
    zeros = lambda t, k=1: jax.tree.map(  # noqa: E731
        lambda x: jnp.zeros((x.shape[0] * k,) + x.shape[1:], x.dtype)
        if x.ndim else jnp.zeros(x.shape, x.dtype), t)
    rows = shapes[0].response.shape[0]
    buf = zeros(shapes[0], max_rounds)
    keep = jnp.zeros((max_rounds * b,), bool)

    def cond(carry):
      r, _, keep, _ = carry
      return (r < max_rounds) & (jnp.sum(keep) < b)

    def body(carry):
      r, buf, keep, m0 = carry
      ro, m = collect(state, round_prompts(prompts, r, b), round_key(key, r))
      ro = group_sorted(ro)
      k = group_keep(ro.rewards, ro.group_ids, b)
      buf = jax.tree.map(
          lambda big, x: jax.lax.dynamic_update_slice_in_dim(
              big, x.astype(big.dtype), r * rows, 0)
          if x.ndim and x.shape[0] == rows else big, buf, ro)
      keep = jax.lax.dynamic_update_slice_in_dim(keep, k, r * b, 0)
      m0 = jax.tree.map(lambda new, old: jnp.where(r == 0, new, old), m, m0)
      return r + 1, buf, keep, m0

    rounds, buf, keep, m0 = jax.lax.while_loop(
        cond, body, (jnp.int32(0), buf, keep, zeros(shapes[1])))
    out, _ = select_groups(buf, keep, b)
    m = dict(m0)
    m.update(dynamic_sampling_metrics(jnp.sum(keep), rounds * b, rounds, b))
    return out, m

  return run


def python_dynamic_sampling(collect_round: Callable[[int], tuple],
                            select: Callable[..., tuple], *,
                            num_groups: int, max_rounds: int,
                            seeds: int = 1) -> tuple[Rollout, dict]:
  """The same rounds in Python (host rewards between jitted calls).

  Args:
    collect_round: ``r -> (scored batch, metrics)`` of round r (arrays with
      a leading seed axis when ``seeds > 1``).
    select: ``select(buffer, keep) -> (batch, valid)`` (jitted / vmapped
      :func:`select_groups`).
    num_groups: P.
    max_rounds: rounds at most.
    seeds: leading seed axis size (1: none).

  Returns:
    ``(batch, metrics)``; rounds that were not needed are padded with round
    0 marked dropped, so ``select`` always sees ``max_rounds`` rounds.
  """
  b = num_groups
  bufs, keeps, m0 = [], [], None
  for r in range(max_rounds):
    ro, m = collect_round(r)
    if m0 is None:
      m0 = dict(m)
    gids = np.asarray(ro.group_ids).reshape(seeds, -1)
    rew = np.asarray(ro.rewards).reshape(seeds, -1)
    order = np.argsort(gids, axis=1, kind="stable")
    k = np.zeros((seeds, b), bool)
    for s in range(seeds):
      g, x = gids[s][order[s]], rew[s][order[s]]
      hi = np.full(b, -np.inf)
      lo = np.full(b, np.inf)
      n = np.zeros(b)
      np.maximum.at(hi, g, x)
      np.minimum.at(lo, g, x)
      np.add.at(n, g, 1)
      k[s] = (hi > lo) | (n < 2)
    bufs.append(ro)
    keeps.append(k)
    if np.all(np.sum(np.concatenate(keeps, 1), 1) >= b):
      break
  rounds = len(bufs)
  kept = np.sum(np.concatenate(keeps, 1), 1).astype(np.float32)
  while len(bufs) < max_rounds:
    bufs.append(bufs[0])
    keeps.append(np.zeros_like(keeps[0]))
  axis = 1 if seeds > 1 else 0
  sort = jax.vmap(group_sorted) if seeds > 1 else group_sorted
  buf = jax.tree.map(lambda *xs: jnp.concatenate(xs, axis),
                     *[sort(x) for x in bufs])
  keep = np.concatenate(keeps, 1)
  out, _ = select(buf, jnp.asarray(keep if seeds > 1 else keep[0]))
  m = dict(m0)
  dm = dynamic_sampling_metrics(kept if seeds > 1 else kept[0],
                                np.float32(rounds * b), rounds, b)
  if seeds > 1:
    dm = {k: np.broadcast_to(np.asarray(v), (seeds,)) for k, v in dm.items()}
  m.update(dm)
  return out, m


def dynamic_sampling_hook(spec: RolloutHookSpec | None = None, *,
                          max_rounds: int = 3) -> RolloutHookSpec:
  """DAPO dynamic sampling around ``spec`` (None: the plain rollout).

  Args:
    spec: the hook whose groups are filtered; its batch must keep whole
      groups (not ``mixes_groups``).
    max_rounds: generation rounds at most (``max_num_gen_batches``), each
      of ``prompts_per_step`` prompts.

  Returns:
    ``spec`` reading ``max_rounds`` prompt batches per step, its collection
    wrapped by :func:`dynamic_sampling` (on device) and
    :func:`python_dynamic_sampling` (host rewards).
  """
  spec = plain_spec() if spec is None else spec
  if max_rounds < 1:
    raise ValueError(f"max_rounds must be >= 1, got {max_rounds}")
  if spec.mixes_groups:
    raise ValueError(f"the {spec.name} rollout replaces rows across groups; "
                     "it cannot be combined with dynamic sampling")
  if spec.wrap_collect is not None or spec.host_rounds is not None:
    raise ValueError(f"the {spec.name} rollout already runs its own rounds")

  def wrap_collect(collect, *, num_groups):
    return dynamic_sampling(collect, num_groups=num_groups,
                            max_rounds=max_rounds)

  def host_rounds(*, num_groups, seeds):
    select = functools.partial(select_groups, num_groups=num_groups)
    select = jax.jit(jax.vmap(select)) if seeds > 1 else select
    return lambda collect_round: python_dynamic_sampling(
        collect_round, select, num_groups=num_groups, max_rounds=max_rounds,
        seeds=seeds)

  return spec._replace(prompt_batches=int(max_rounds),
                       wrap_collect=wrap_collect, host_rounds=host_rounds)


__all__: Sequence[str] = (
    "HookContext", "RolloutHook", "RolloutHookSpec", "dynamic_sampling",
    "dynamic_sampling_hook", "finish_fn", "group_keep", "group_sorted",
    "jax_collect", "make_hooked_iteration", "plain_hook", "plain_spec",
    "python_dynamic_sampling", "round_key", "round_prompts", "row_answers",
    "score_rows", "select_groups")
