"""Rollout-side trainer hooks: DAPO dynamic sampling, AEPO, CURE.

A hook changes how one RL step's training batch is collected; the update is
unchanged. Hooks are chosen by ``config.rollout`` (read only in
``entropy_rl.builders``, which turns it into the plain dataclasses below on
the :class:`~entropy_rl.training.loop.Experiment`); nothing here sees a
ConfigDict, and every function is pure and static-shape, so a hooked step is
still one jitted (and seed-vmapped, mesh-sharded) program when the task's
reward is a JAX function.

A :class:`RolloutHook` has two pure halves around the reward:

* ``rollouts(state, prompts, key) -> tuple[Rollout, ...]`` samples (no
  rewards yet);
* ``finish(state, prompts, scored) -> (Rollout, metrics)`` turns the scored
  rollouts into the training batch.

The reward runs between them: on device (:func:`jax_collect`) or on the host
(the loop's Python-reward path), with each row's answer looked up by its
``group_ids`` (the prompt it answers).

* :func:`plain_hook` -- one rollout (the loop without hooks).
* :func:`aepo_hook` -- AEPO (methods_rlvr.md §5, steps 1-4): an extra
  rollout of the first ⌊P·``prompt_fraction``⌋ prompts at the controller's
  temperature ``T_reg`` (read from the ``aepo`` member's state), GRPO
  advantages of the main batch, selection ``A > threshold`` and
  ``concat(S[:n_reg], D[n_reg:])`` at the rollout level; the regulariser rows
  carry ``aux["aepo_reg"] = 1`` and every row its advantage in
  ``aux["aepo_adv"]`` (1 on regulariser rows), which
  :func:`assembled_advantages` (a chain member the builders insert after the
  advantage estimator) writes into the batch.
* :func:`cure_hook` -- CURE's first stage (§11): n₁ samples, a critical
  high-entropy token t* per sample (``regularizers.cure``), n₂ continuations
  of ``x ⊕ y[:t*]``; one group of n₁(1 + n₂) rows per prompt.
* :func:`dynamic_sampling` -- DAPO's filter (§1.4): groups whose rewards are
  all equal are dropped and more generation rounds are sampled until the
  batch is full or ``max_rounds`` rounds ran; the batch keeps its static
  size: missing groups are filled with dropped ones whose response mask is
  zeroed. On device the rounds run in a ``lax.while_loop`` that stops as
  soon as the batch is full (the loop feeds ``max_rounds`` prompt batches
  per step; the prompts of rounds that are not needed are skipped). The
  Python-reward path runs the same rounds in the Python loop between jitted
  calls (``select_groups`` is shared).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from entropy_rl.core import advantages as adv_lib
from entropy_rl.core import combine
from entropy_rl.core import ops
from entropy_rl.core import types as core_types
from entropy_rl import regularizers
from entropy_rl.training import iteration as it_lib
from entropy_rl.training import types

Array = jax.Array
Rollout = types.Rollout
Prompts = it_lib.Prompts
TrainState = types.TrainState

AEPO_REG_KEY = "aepo_reg"  # aux: 1 on AEPO regulariser rows (the aepo member's)
AEPO_ADV_KEY = "aepo_adv"  # aux: per-row advantage of an AEPO batch [B]
CURE_PREFIX_KEY = "cure_prefix_len"  # aux: t* of a branch row (0: original)
CURE_BRANCH_KEY = "cure_branch"  # aux: 1 on branch rows


# ------------------------------------------------------------- settings


@dataclasses.dataclass(frozen=True)
class DynamicSampling:
  """DAPO dynamic sampling: at most ``max_rounds`` generation rounds
  (``max_num_gen_batches``) of ``prompts_per_step`` prompts each."""
  max_rounds: int = 3


@dataclasses.dataclass(frozen=True)
class AepoRollout:
  """AEPO's rollout side; the controller settings are the ``aepo`` chain
  member's (``state_name``)."""
  state_name: str = "aepo"
  target_entropy: float = 0.5
  t_high: float = 1.2
  t_low: float = 0.8
  n_max: int = 60
  select_threshold: float = 0.05
  prompt_fraction: float = 0.25
  eps: float = 1e-6


@dataclasses.dataclass(frozen=True, eq=False)
class CureRollout:
  """CURE's first stage: ``n2`` continuations per branch, ``top_k``
  candidates, ``eligible`` a bool table over the vocabulary (None: every
  token), reward on the ``"continuation"`` (reference) or the ``"full"``
  response ``y[:t*] ⊕ continuation``."""
  n2: int = 3
  top_k: int = 20
  eligible: Any = None
  reward_on: str = "continuation"


# ----------------------------------------------------------------- hooks


class RolloutHook(NamedTuple):
  """See the module docstring.

  Attributes:
    rollouts: ``(state, prompts, key) -> tuple[Rollout, ...]`` (unscored).
    finish: ``(state, prompts, scored) -> (Rollout, metrics)``.
    reward_view: ``rollout -> (prompt, response, mask)`` the reward reads
      (None: the rollout's own fields).
    name: for messages.
  """
  rollouts: Callable[..., tuple]
  finish: Callable[..., tuple]
  reward_view: Callable[[Rollout], tuple] | None = None
  name: str = "plain"


def plain_hook(rollout_fn: Callable[..., Rollout]) -> RolloutHook:
  """One rollout of ``rollout_fn(params, prompts, rng, transform_state)``."""

  def rollouts(state, prompts, key):
    return (rollout_fn(state.params, prompts, key, state.transform_state),)

  def finish(state, prompts, scored):
    del state
    (ro,) = scored
    return ro, it_lib.reward_metrics(ro.rewards, ro.group_ids,
                                     prompts.tokens.shape[0])

  return RolloutHook(rollouts, finish, None, "plain")


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

  def collect(state, prompts, key):
    ros = hook.rollouts(state, prompts, key)
    ros = tuple(score_rows(jax_reward_fn, r, prompts.answer, hook.reward_view)
                for r in ros)
    return hook.finish(state, prompts, ros)

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


# ----------------------------------------------------------------- AEPO


def aepo_hook(rollout_fn: Callable[..., Rollout],
              reg_rollout_fn: Callable[..., Rollout], settings: AepoRollout,
              *, num_prompts: int) -> RolloutHook:
  """AEPO's batch (spec §5, steps 1-4).

  Args:
    rollout_fn: the main rollout (T = 1), ``rollout_fn(params, prompts, rng,
      transform_state)``.
    reg_rollout_fn: the same with AEPO's temperature processor last, whose
      parameter is ``T_reg`` of the ``aepo`` member's state.
    settings: :class:`AepoRollout`.
    num_prompts: P, prompts per step.
  """
  s = settings
  b_reg = max(1, int(num_prompts * s.prompt_fraction))

  def rollouts(state, prompts, key):
    d = rollout_fn(state.params, prompts, key, state.transform_state)
    sub = jax.tree.map(lambda x: x[:b_reg], prompts)
    r = reg_rollout_fn(state.params, sub,
                       jax.random.fold_in(key, types.tag("aepo")),
                       state.transform_state)
    return d, r

  def finish(state, prompts, scored):
    d, r = scored
    st = combine.get_state(state.transform_state, s.state_name)
    if st is None:
      raise ValueError(f"the AEPO rollout needs a chain member named "
                       f"{s.state_name!r} of kind 'aepo'")
    rows, rows_r = d.response.shape[0], r.response.shape[0]
    sel = regularizers.aepo_select(r.rewards, r.group_ids,
                               threshold=s.select_threshold, eps=s.eps)
    n_sel = jnp.sum(sel).astype(jnp.int32)
    _, n_reg = regularizers.aepo_controller(st.h_prev, s.target_entropy, n_sel,
                                        t_high=s.t_high, t_low=s.t_low,
                                        n_max=s.n_max)
    n_reg = jnp.minimum(n_reg, rows)
    order = jnp.argsort(~sel, stable=True)  # selected first, in order
    src = order[jnp.minimum(jnp.arange(rows), rows_r - 1)]
    use = jnp.arange(rows) < n_reg
    adv_d = adv_lib.grpo(d.rewards, d.group_ids, prompts.tokens.shape[0],
                         eps=s.eps)
    d2 = d._replace(aux={**(d.aux or {}),
                         AEPO_REG_KEY: jnp.zeros((rows,), jnp.float32),
                         AEPO_ADV_KEY: adv_d})
    r2 = r._replace(aux={**(r.aux or {}),
                         AEPO_REG_KEY: jnp.ones((rows_r,), jnp.float32),
                         AEPO_ADV_KEY: jnp.ones((rows_r,), jnp.float32)})

    def pick(xd, xr):
      u = use.reshape((rows,) + (1,) * (xd.ndim - 1))
      return jnp.where(u, jnp.take(xr, src, axis=0).astype(xd.dtype), xd)

    out = jax.tree.map(pick, d2, r2)
    m = it_lib.reward_metrics(d.rewards, d.group_ids, prompts.tokens.shape[0])
    m.update({"aepo/n_sel": n_sel.astype(jnp.float32),
              "aepo/n_reg_rows": n_reg.astype(jnp.float32),
              "aepo/reg_temperature": st.temperature,
              "aepo/reg_reward": jnp.mean(r.rewards)})
    return out, m

  return RolloutHook(rollouts, finish, None, "aepo")


def assembled_advantages() -> core_types.EntropyTransform:
  """Writes ``aux["aepo_adv"]`` (per row) as the advantages, if present.

  The AEPO rollout hook computes the main batch's GRPO advantages before
  its first rows are replaced (as the reference) and A ≡ 1 for the
  regulariser rows; this member, placed after the advantage estimator,
  makes them the batch's advantages. Without the key it is the identity.
  """

  def prepare(batch, state, *, rng=None, step=None, **extra):
    del rng, step, extra
    adv = (batch.aux or {}).get(AEPO_ADV_KEY)
    if adv is None:
      return batch, state
    return batch._replace(advantages=adv_lib.to_tokens(
        adv.astype(jnp.float32), batch.mask)), state

  return core_types.EntropyTransform(
      core_types.init_empty_state, core_types.identity_update, prepare)


# ----------------------------------------------------------------- CURE


def eligible_table(tokenizer: Any, rule: str) -> np.ndarray | None:
  """A bool [V] table of tokens that may be CURE branch points.

  ``"multichar"`` (the reference): not special and the decoded text,
  stripped, is longer than one character; ``"non_special"``: every token
  but pad/bos/eos/unk/end tokens; ``"all"``: None (no filter).
  """
  if rule == "all":
    return None
  if rule not in ("multichar", "non_special"):
    raise ValueError(f"unknown CURE eligibility rule {rule!r}; valid: "
                     "multichar, non_special, all")
  v = int(tokenizer.vocab_size)
  special = {int(i) for i in tuple(getattr(tokenizer, "end_ids", ())) + tuple(
      getattr(tokenizer, a, None) for a in ("pad_id", "bos_id", "eos_id",
                                           "unk_id")) if i is not None}
  table = np.ones((v,), bool)
  for i in special:
    if 0 <= i < v:
      table[i] = False
  if rule == "multichar":
    for i in range(v):
      if table[i]:
        table[i] = len(tokenizer.decode([i]).strip()) > 1
  return table


def cure_hook(sample_fn: Callable[..., Any], settings: CureRollout, *,
              num_samples: int, pad_id: int) -> RolloutHook:
  """CURE's first-stage rollout (spec §11) as a hook.

  Args:
    sample_fn: ``sample_fn(params, tokens, mask, rng, num_samples,
      transform_state) -> SampleOutput``.
    settings: :class:`CureRollout`.
    num_samples: n₁.
    pad_id: the padding token.

  Rows are the n₁ originals of every prompt (prompt left-padded to P + N)
  then the n₂ branches of each original (prompt ``x ⊕ y[:t*]``);
  ``group_ids`` is the prompt; ``aux["cure_prefix_len"]`` holds t* on
  branch rows (0 on originals) and ``aux["cure_branch"]`` marks them.
  """
  s = settings
  table = None if s.eligible is None else jnp.asarray(s.eligible, bool)
  if s.reward_on not in ("continuation", "full"):
    raise ValueError(f"CURE reward_on must be 'continuation' or 'full', got "
                     f"{s.reward_on!r}")

  def rollouts(state, prompts, key):
    fn = lambda t, m, k, n: sample_fn(  # noqa: E731
        state.params, t, m, k, n, state.transform_state)
    elig = None if table is None else (lambda toks: jnp.take(
        table, jnp.clip(toks, 0, table.shape[0] - 1)))
    c = regularizers.cure_rollout(fn, prompts.tokens, prompts.mask, key,
                              n1=num_samples, n2=s.n2, top_k=s.top_k,
                              eligible_fn=elig, pad_id=pad_id)
    r1 = c.t_star.shape[0]
    prefix = jnp.concatenate([jnp.zeros((r1,), jnp.int32),
                              jnp.repeat(c.t_star, s.n2)])
    ro = Rollout(
        prompt=c.prompt_tokens.astype(jnp.int32),
        prompt_mask=c.prompt_mask.astype(bool),
        response=c.tokens.astype(jnp.int32),
        response_mask=c.mask.astype(jnp.float32),
        logp=c.logp.astype(jnp.float32),
        entropy=c.entropy.astype(jnp.float32), rewards=None,
        group_ids=c.group_ids.astype(jnp.int32),
        aux={CURE_PREFIX_KEY: prefix,
             CURE_BRANCH_KEY: c.is_branch.astype(jnp.float32)})
    return (ro,)

  def finish(state, prompts, scored):
    del state
    (ro,) = scored
    m = it_lib.reward_metrics(ro.rewards, ro.group_ids,
                              prompts.tokens.shape[0])
    branch = ro.aux[CURE_BRANCH_KEY]
    nb = jnp.maximum(jnp.sum(branch), 1.0)
    m.update({"cure/branch_reward": jnp.sum(ro.rewards * branch) / nb,
              "cure/prefix_len": jnp.sum(
                  ro.aux[CURE_PREFIX_KEY] * branch) / nb})
    return ro, m

  view = full_response_view if s.reward_on == "full" else None
  return RolloutHook(rollouts, finish, view, "cure")


def full_response_view(ro: Rollout) -> tuple[Array, Array, Array]:
  """``(prompt, y[:t*] ⊕ continuation [R, 2N], mask)``: the whole response
  of a CURE branch row (originals: their response, then padding)."""
  n = ro.response.shape[1]
  t = ro.aux[CURE_PREFIX_KEY].astype(jnp.int32)[:, None]
  cat = jnp.concatenate([ro.prompt[:, -n:], ro.response], 1)
  catm = jnp.concatenate([jnp.ones_like(ro.response_mask),
                          ro.response_mask.astype(jnp.float32)], 1)
  src = jnp.arange(2 * n)[None, :] + n - t
  inside = src < 2 * n
  src = jnp.clip(src, 0, 2 * n - 1)
  toks = jnp.take_along_axis(cat, src, 1)
  mask = jnp.take_along_axis(catm, src, 1) * inside
  return ro.prompt, toks, mask


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


__all__: Sequence[str] = (
    "AepoRollout", "CureRollout", "DynamicSampling", "RolloutHook",
    "aepo_hook", "assembled_advantages", "cure_hook", "dynamic_sampling",
    "eligible_table", "full_response_view", "group_keep", "group_sorted",
    "jax_collect", "make_hooked_iteration", "plain_hook",
    "python_dynamic_sampling", "row_answers", "score_rows", "select_groups")
