"""CURE: critical-token re-concatenation (rollout side, first stage).

Reference: Li et al. 2025, "Towards Understanding Entropy Collapse:
Critical-Token Re-concatenation (CURE)", bytedance/CURE (spec §11). Stage 1
branches new continuations from high-entropy positions of the model's own
responses and trains on originals and branches jointly in one group; stage 2
is plain DAPO.

For each prompt x: sample n₁ responses y; for each, walk positions in
descending old-policy entropy, skipping position 0, padding and ineligible
tokens (special tokens, tokens whose decoded text has length ≤ 1); take the
first K eligible positions and pick one, t*, uniformly (t* = 0 if none). The
new prompt is ``x ⊕ y[:t*]`` (the critical token excluded), from which n₂
continuations are sampled; only continuation tokens are response tokens. The
group is the n₁ + n₁·n₂ responses sharing x's id; the reward is computed on
the continuation alone; the loss is DAPO's.

Everything is static-shape: the branched prompt has P + N slots, left-padded.

In the trainer, :func:`cure_rollout_hook` is this stage as a rollout hook
(``entropy_rl.core.rollout``) around the loop's sampler.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from entropy_rl.core import rollout as rollout_lib
from entropy_rl.core import types

Array = types.Array
PREFIX_KEY = "cure_prefix_len"  # rollout aux: t* of a branch row (0: original)
BRANCH_KEY = "cure_branch"  # rollout aux: 1 on branch rows
ELIGIBLE_RULES = ("multichar", "non_special", "all")
REWARD_ON = ("continuation", "full")


def select_critical_positions(entropy: Array, mask: Array, eligible: Array,
                              rng: types.PRNGKey, *, top_k: int = 20
                              ) -> Array:
  """t* per row [R] (int32): a uniform pick among the K highest-entropy
  eligible positions > 0, or 0 if there is none.

  Args:
    entropy: [R, N] old-policy entropies of the response tokens.
    mask: [R, N] valid response tokens.
    eligible: [R, N] bool, tokens allowed as branch points.
    rng: PRNG key.
    top_k: K (``critical_top_k``).
  """
  r, n = entropy.shape
  pos = jnp.arange(n)[None, :]
  ok = (mask > 0) & eligible.astype(bool) & (pos > 0)
  score = jnp.where(ok, entropy, -jnp.inf)
  k = min(top_k, n)
  vals, idx = jax.lax.top_k(score, k)  # [R, k], descending, stable
  count = jnp.sum(jnp.isfinite(vals), -1)  # [R]
  u = jax.random.uniform(rng, (r,))
  pick = jnp.minimum((u * count).astype(jnp.int32), jnp.maximum(count - 1, 0))
  t_star = jnp.take_along_axis(idx, pick[:, None], -1)[:, 0]
  return jnp.where(count > 0, t_star, 0).astype(jnp.int32)


def branch_prompts(prompt_tokens: Array, prompt_mask: Array,
                   response_tokens: Array, t_star: Array, *,
                   pad_id: int = 0) -> tuple[Array, Array]:
  """Left-padded ``x ⊕ y[:t*]`` prompts [R, P + N] and their masks.

  Args:
    prompt_tokens: [R, P] left-padded prompts.
    prompt_mask: [R, P].
    response_tokens: [R, N] responses (valid from position 0).
    t_star: [R] branch positions (the prefix excludes position t*).
    pad_id: the padding token.
  """
  r, p = prompt_tokens.shape
  n = response_tokens.shape[1]
  keep = jnp.arange(n)[None, :] < t_star[:, None]
  tokens = jnp.concatenate([prompt_tokens, jnp.where(keep, response_tokens,
                                                     pad_id)], 1)
  valid = jnp.concatenate([prompt_mask.astype(bool), keep], 1)
  shift = (n - t_star)[:, None]  # move the row right so it ends at P + N
  src = jnp.arange(p + n)[None, :] - shift
  inside = src >= 0
  src = jnp.clip(src, 0, p + n - 1)
  out = jnp.where(inside, jnp.take_along_axis(tokens, src, 1), pad_id)
  out_mask = inside & jnp.take_along_axis(valid, src, 1)
  return jnp.where(out_mask, out, pad_id), out_mask


class CureRollout(NamedTuple):
  """Originals then branches, one group per original prompt."""
  tokens: Array  # [R1 + R1·n2, N] response tokens
  mask: Array  # [.., N]
  logp: Array  # [.., N] behaviour log-probs
  entropy: Array  # [.., N]
  group_ids: Array  # [..] original prompt ids
  is_branch: Array  # [..] bool
  prompt_tokens: Array  # [.., P + N] the prompt each row continues from
  prompt_mask: Array  # [.., P + N]
  t_star: Array  # [R1] branch positions of the originals


SampleFn = Callable[..., Any]


def cure_rollout(sample_fn: SampleFn, prompt_tokens: Array, prompt_mask: Array,
                 rng: types.PRNGKey, *, n1: int = 4, n2: int = 3,
                 top_k: int = 20,
                 eligible_fn: Callable[[Array], Array] | None = None,
                 pad_id: int = 0) -> CureRollout:
  """CURE's first-stage rollout around any sampler.

  Args:
    sample_fn: ``sample_fn(prompt_tokens [b, L], prompt_mask, rng,
      num_samples) -> out`` with ``out.tokens/.mask/.logp/.entropy`` of shape
      [b·num_samples, N] (row ``i·n + j`` is sample j of prompt i), e.g.
      ``functools.partial(entropy_rl.sampling.sample, fns, params, ...)``.
    prompt_tokens: [B, P] left-padded prompts.
    prompt_mask: [B, P].
    rng: PRNG key.
    n1: n₁ first-stage samples per prompt.
    n2: n₂ continuations per branched prompt (0: plain sampling).
    top_k: K.
    eligible_fn: ``tokens [R, N] -> bool [R, N]`` marking tokens that may be
      branch points (default: all).
    pad_id: padding token.

  Returns:
    A :class:`CureRollout`; groups have n₁(1 + n₂) members.
  """
  b, p = prompt_tokens.shape
  k1, k2, k3 = jax.random.split(rng, 3)
  first = sample_fn(prompt_tokens, prompt_mask, k1, n1)
  n = first.tokens.shape[1]
  eligible = (jnp.ones(first.tokens.shape, bool) if eligible_fn is None
              else eligible_fn(first.tokens))
  t_star = select_critical_positions(first.entropy, first.mask, eligible, k2,
                                     top_k=top_k)
  rep = lambda x: jnp.repeat(x, n1, axis=0)
  pt, pm = rep(prompt_tokens), rep(prompt_mask)
  ids1 = jnp.repeat(jnp.arange(b, dtype=jnp.int32), n1)
  pad_prompt = lambda t, m: (
      jnp.concatenate([jnp.full((t.shape[0], n), pad_id, t.dtype), t], 1),
      jnp.concatenate([jnp.zeros((m.shape[0], n), bool), m.astype(bool)], 1))
  orig_pt, orig_pm = pad_prompt(pt, pm)
  if n2 == 0:
    return CureRollout(first.tokens, first.mask, first.logp, first.entropy,
                       ids1, jnp.zeros_like(ids1, bool), orig_pt, orig_pm,
                       t_star)
  bt, bm = branch_prompts(pt, pm, first.tokens, t_star, pad_id=pad_id)
  second = sample_fn(bt, bm, k3, n2)
  cat = lambda a, c: jnp.concatenate([a, c], 0)
  return CureRollout(
      tokens=cat(first.tokens, second.tokens),
      mask=cat(first.mask, second.mask),
      logp=cat(first.logp, second.logp),
      entropy=cat(first.entropy, second.entropy),
      group_ids=cat(ids1, jnp.repeat(ids1, n2)),
      is_branch=cat(jnp.zeros_like(ids1, bool),
                    jnp.ones((ids1.shape[0] * n2,), bool)),
      prompt_tokens=cat(orig_pt, jnp.repeat(bt, n2, axis=0)),
      prompt_mask=cat(orig_pm, jnp.repeat(bm, n2, axis=0)),
      t_star=t_star)


# ------------------------------------------------------------ rollout hook


def eligible_table(tokenizer: Any, rule: str) -> np.ndarray | None:
  """A bool [V] table of tokens that may be CURE branch points.

  ``"multichar"`` (the reference): not special and the decoded text,
  stripped, is longer than one character; ``"non_special"``: every token
  but pad/bos/eos/unk/end tokens; ``"all"``: None (no filter).
  """
  if rule == "all":
    return None
  if rule not in ELIGIBLE_RULES:
    raise ValueError(f"unknown CURE eligibility rule {rule!r}; valid: "
                     f"{', '.join(ELIGIBLE_RULES)}")
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


def full_response_view(ro: rollout_lib.Rollout) -> tuple[Array, Array, Array]:
  """``(prompt, y[:t*] ⊕ continuation [R, 2N], mask)``: the whole response
  of a CURE branch row (originals: their response, then padding)."""
  n = ro.response.shape[1]
  t = ro.aux[PREFIX_KEY].astype(jnp.int32)[:, None]
  cat = jnp.concatenate([ro.prompt[:, -n:], ro.response], 1)
  catm = jnp.concatenate([jnp.ones_like(ro.response_mask),
                          ro.response_mask.astype(jnp.float32)], 1)
  src = jnp.arange(2 * n)[None, :] + n - t
  inside = src < 2 * n
  src = jnp.clip(src, 0, 2 * n - 1)
  toks = jnp.take_along_axis(cat, src, 1)
  mask = jnp.take_along_axis(catm, src, 1) * inside
  return ro.prompt, toks, mask


def cure_rollout_hook(n2: int = 3, top_k: int = 20,
                      eligible: str | np.ndarray | None = "multichar",
                      reward_on: str = "continuation", *,
                      tokenizer: Any = None) -> rollout_lib.RolloutHookSpec:
  """CURE's first-stage rollout (spec §11) as a rollout hook.

  Rows are the n₁ originals of every prompt (n₁: the loop's samples per
  prompt; prompt left-padded to P + N), then the n₂ branches of each
  original (prompt ``x ⊕ y[:t*]``, :func:`cure_rollout` around the loop's
  sampler); ``group_ids`` is the prompt (one group of n₁(1 + n₂) rows);
  ``aux["cure_prefix_len"]`` holds t* on branch rows (0 on originals) and
  ``aux["cure_branch"]`` marks them. Metrics: ``cure/branch_reward``,
  ``cure/prefix_len``.

  Args:
    n2: continuations per branch.
    top_k: K, candidates per response.
    eligible: a bool [V] table of tokens that may be branch points, None
      (every token), or a rule of :func:`eligible_table` applied to
      ``tokenizer`` (no tokenizer: no filter).
    reward_on: ``"continuation"`` (the reference) or ``"full"`` (the
      reward reads ``y[:t*] ⊕ continuation``, :func:`full_response_view`).
    tokenizer: the tokenizer of an ``eligible`` rule.

  Returns:
    A :class:`~entropy_rl.core.rollout.RolloutHookSpec` with 1 + n₂ rows
    per sample.
  """
  if reward_on not in REWARD_ON:
    raise ValueError(f"CURE reward_on must be 'continuation' or 'full', got "
                     f"{reward_on!r}")
  if isinstance(eligible, str):
    eligible = (None if tokenizer is None
                else eligible_table(tokenizer, eligible))
  n2, top_k = int(n2), int(top_k)

  def build(ctx: rollout_lib.HookContext) -> rollout_lib.RolloutHook:
    table = None if eligible is None else jnp.asarray(eligible, bool)

    def rollouts(state, prompts, key):
      fn = lambda t, m, k, n: ctx.sample_fn(  # noqa: E731
          state.params, t, m, k, n, state.transform_state)
      elig = None if table is None else (lambda toks: jnp.take(
          table, jnp.clip(toks, 0, table.shape[0] - 1)))
      c = cure_rollout(fn, prompts.tokens, prompts.mask, key,
                       n1=ctx.num_samples, n2=n2, top_k=top_k,
                       eligible_fn=elig, pad_id=ctx.pad_id)
      r1 = c.t_star.shape[0]
      prefix = jnp.concatenate([jnp.zeros((r1,), jnp.int32),
                                jnp.repeat(c.t_star, n2)])
      ro = rollout_lib.Rollout(
          prompt=c.prompt_tokens.astype(jnp.int32),
          prompt_mask=c.prompt_mask.astype(bool),
          response=c.tokens.astype(jnp.int32),
          response_mask=c.mask.astype(jnp.float32),
          logp=c.logp.astype(jnp.float32),
          entropy=c.entropy.astype(jnp.float32), rewards=None,
          group_ids=c.group_ids.astype(jnp.int32),
          aux={PREFIX_KEY: prefix,
               BRANCH_KEY: c.is_branch.astype(jnp.float32)})
      return (ro,)

    def finish(state, prompts, scored):
      del state, prompts
      (ro,) = scored
      branch = ro.aux[BRANCH_KEY]
      nb = jnp.maximum(jnp.sum(branch), 1.0)
      return ro, {"cure/branch_reward": jnp.sum(ro.rewards * branch) / nb,
                  "cure/prefix_len": jnp.sum(ro.aux[PREFIX_KEY] * branch) / nb}

    view = full_response_view if reward_on == "full" else None
    return rollout_lib.RolloutHook(rollouts, finish, view, "cure")

  return rollout_lib.RolloutHookSpec(build, name="cure", rows_per_sample=1 + n2)
