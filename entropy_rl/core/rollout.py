"""The rollout batch and the rollout-hook protocol of rollout-side methods.

A rollout-side method (AEPO's tempered regulariser samples, CURE's
critical-token branches, DAPO's dynamic sampling) changes how one RL step's
training batch is *collected*; the update is unchanged. The train loop runs
such a method through one interface, so it never names a method:

* a method's own module exports a factory returning a :class:`RolloutHookSpec`
  (plain data: how many rows per prompt its batch has, how many prompt
  batches it reads per step, the chain members it needs, and ``build``);
* the loop calls ``spec.build(HookContext(...))`` once, handing it the
  rollout pieces it owns (the main rollout function, a way to add logits
  processors, the raw sampler), and gets a :class:`RolloutHook` of two pure,
  static-shape halves around the reward:

  - ``rollouts(state, prompts, key) -> tuple[Rollout, ...]`` samples (rewards
    unset);
  - ``finish(state, prompts, scored) -> (Rollout, metrics)`` turns the scored
    rollouts into the training batch. The loop adds the reward metrics of
    ``scored[0]`` (the main rollout) itself.

  The reward runs between them, on device or on the host, each row's answer
  looked up by its ``group_ids`` (the prompt it answers); ``reward_view``
  says which tokens the reward reads.

Why here, in the core. The methods live in ``entropy_rl.regularizers``, which
imports only the core (DESIGN.md's walls: the catalogue never imports
sampling or training). Defining the protocol and its batch type
(:class:`Rollout`) in the core lets each method implement its hook in its own
module without importing the loop; the loop (``entropy_rl.training``)
implements the generic side (``training.hooks``: scoring, one jitted
iteration, the Python-reward path, DAPO's group filter as a wrapper of any
spec). Everything here is a plain NamedTuple of arrays or functions: no
model, sampler or config.
"""

from __future__ import annotations

import zlib
from typing import Any, Callable, Mapping, NamedTuple

import jax

Array = jax.Array


class Rollout(NamedTuple):
  """One rollout batch: prompts, sampled responses and their rewards.

  Rows are samples (``B`` = prompts x samples per prompt). The policy's
  sequence is ``concat(prompt, response)``; response token t is predicted
  from position ``P + t − 1``.

  Attributes:
    prompt: [B, P] int32, left-padded.
    prompt_mask: [B, P] bool, real prompt tokens.
    response: [B, N] int32 sampled tokens.
    response_mask: [B, N] float32, 1 up to and including the end token.
    logp: [B, N] behaviour log-probs from the sampler.
    entropy: [B, N] sampler entropies, or None.
    rewards: [B] float32 outcome rewards (None until scored).
    group_ids: [B] int32 prompt group of each row, in [0, B).
    aux: per-method inputs ([B] or [B, N] arrays), or None.
  """
  prompt: Array
  prompt_mask: Array
  response: Array
  response_mask: Array
  logp: Array
  entropy: Array | None = None
  rewards: Array | None = None
  group_ids: Array | None = None
  aux: Mapping[str, Array] | None = None


class RolloutHook(NamedTuple):
  """A built rollout hook (see the module docstring).

  Attributes:
    rollouts: ``(state, prompts, key) -> tuple[Rollout, ...]`` (unscored);
      ``state`` is the train state (``.params``, ``.transform_state``),
      ``prompts`` has ``.tokens [P, L]``, ``.mask``, ``.answer``.
    finish: ``(state, prompts, scored) -> (Rollout, metrics)``: the
      method's batch and its own metrics.
    reward_view: ``rollout -> (prompt, response, mask)`` the reward reads
      (None: the rollout's own fields).
    name: for messages.
  """
  rollouts: Callable[..., tuple]
  finish: Callable[..., tuple]
  reward_view: Callable[[Rollout], tuple] | None = None
  name: str = "plain"


class HookContext(NamedTuple):
  """What the loop hands a hook's ``build`` (plain functions and ints).

  Attributes:
    rollout_fn: the main rollout, ``(params, prompts, rng, transform_state)
      -> Rollout`` with ``num_samples`` rows per prompt (row ``b·G + j`` is
      sample j of prompt b).
    with_processors: ``(processors, params_fn) -> rollout_fn``: the main
      rollout with extra ``LogitsProcessor``s applied after the rollout's
      own; ``params_fn(transform_state) -> tuple`` gives their parameters.
    sample_fn: the raw sampler, ``(params, tokens, mask, rng, num_samples,
      transform_state) -> SampleOutput`` (``.tokens``, ``.mask``, ``.logp``,
      ``.entropy``, ``.prompt_tokens``, ``.prompt_mask``, ``.group_ids``).
    num_prompts: P, prompts per step (one round).
    num_samples: G, samples per prompt of the main rollout.
    pad_id: the padding token.
  """
  rollout_fn: Callable[..., Rollout] | None = None
  with_processors: Callable[..., Callable[..., Rollout]] | None = None
  sample_fn: Callable[..., Any] | None = None
  num_prompts: int = 0
  num_samples: int = 0
  pad_id: int = 0


class RolloutHookSpec(NamedTuple):
  """A rollout-side method as data: what the loop and the builder read.

  Attributes:
    build: ``(HookContext) -> RolloutHook``.
    name: for messages and metrics.
    rows_per_sample: rows of the batch per sample of the main rollout (CURE:
      1 + n₂); see :meth:`rows_per_prompt`.
    prompt_batches: prompt batches the loop feeds per step, stacked on rows
      (round r: rows ``[r·P, (r+1)·P)``; dynamic sampling's rounds).
    wrap_collect: ``(collect, *, num_groups) -> collect`` around the
      on-device ``collect(state, prompts, key) -> (batch, metrics)`` of one
      round (None: one round).
    host_rounds: ``(*, num_groups, seeds) -> drive``, built once, with
      ``drive(collect_round) -> (batch, metrics)`` running the rounds of
      the Python-reward path (``collect_round(r) -> (batch, metrics)``;
      None: round 0 only).
    after_advantages: ``(name, EntropyTransform)`` chain members the batch
      needs after the advantage estimator (AEPO's assembled advantages).
    mixes_groups: the batch replaces rows across groups (AEPO), so a group
      filter cannot wrap it.
  """
  build: Callable[[HookContext], RolloutHook]
  name: str = "plain"
  rows_per_sample: int = 1
  prompt_batches: int = 1
  wrap_collect: Callable[..., Callable[..., tuple]] | None = None
  host_rounds: Callable[..., Callable[..., tuple]] | None = None
  after_advantages: tuple = ()
  mixes_groups: bool = False

  def rows_per_prompt(self, num_samples: int) -> int:
    """Rows of the training batch per prompt, for ``num_samples`` samples
    per prompt in the main rollout."""
    return int(num_samples) * int(self.rows_per_sample)


def fold_name(key: Array, name: str) -> Array:
  """``fold_in(key, crc32(name))``: a hook's own stream of randomness (the
  tag ``training.types.tag`` and ``named_chain`` use)."""
  return jax.random.fold_in(key, zlib.crc32(name.encode()) & 0x7FFFFFFF)


__all__ = ("HookContext", "Rollout", "RolloutHook", "RolloutHookSpec",
           "fold_name")
