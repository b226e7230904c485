"""One RL iteration: rollout, reward, advantage and update.

Two paths share the same pieces:

* **One compiled iteration** (``make_rl_iteration``) for tasks whose reward
  is a pure JAX function (the built-in ones): sampling, scoring, the
  transform's ``prepare`` (advantages) and the update run as one jitted
  program, and ``vmap_seeds`` runs ``num_seeds`` independent copies of it
  side by side (PureJaxRL, https://github.com/luchris429/purejaxrl).
* **Python rewards** (user checkers, reasoning-gym, math-verify): the loop
  calls the jitted ``rollout_fn``, scores the decoded responses on the host
  and calls the jitted ``train_step`` (``python_reward_iteration``).

Both draw the rollout key as ``step_key(state, "rollout")``, so the two paths
give the same numbers.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from entropy_rl import parallel
from entropy_rl.training import types

Array = jax.Array
Rollout = types.Rollout
TrainState = types.TrainState


class Prompts(NamedTuple):
  """A device batch of prompts (one row per prompt).

  Attributes:
    tokens: [B, P] int32, left-padded.
    mask: [B, P] bool.
    answer: [B, ...] int32 encoded answers for a JAX checker, or None.
  """
  tokens: Array
  mask: Array
  answer: Array | None = None


def make_rollout_fn(fns: Any, sample_fn: Callable[..., Any], *,
                    num_samples: int = 1,
                    processor_params_fn: Callable[[Any], tuple] | None = None,
                    param_axes: Any = None) -> Callable[..., Rollout]:
  """``rollout_fn(params, prompts, rng, transform_state=None) -> Rollout``
  (rewards unset).

  Args:
    fns: model functions.
    sample_fn: ``sample_fn(fns, params, tokens, mask, rng, num_samples=n,
      [processor_params=...]) -> SampleOutput``, e.g.
      ``functools.partial(entropy_rl.sampling.sample, max_new_tokens=...,
      sampling=..., end_ids=..., processors=...)``.
    num_samples: responses per prompt (the group size G); row ``b·G + j``
      is sample j of prompt b and its ``group_ids`` is b.
    processor_params_fn: ``fn(transform_state) -> processor_params``: the
      parameters of the sampler's extra ``processors`` read from the
      transform state (HAPO's adaptive temperature); None: defaults.
    param_axes: the parameters' logical axes: on a sharded mesh the
      rollout first casts the parameters to the model's compute dtype
      (exact: the model casts every weight before use) and gathers them
      over the batch axes once (`entropy_rl.parallel.gather_params`), so
      an FSDP-sharded policy is not gathered again at every decode step.
  """

  def rollout_fn(params, prompts: Prompts, rng,
                 transform_state: Any = None) -> Rollout:
    kw = {}
    if processor_params_fn is not None and transform_state is not None:
      kw["processor_params"] = processor_params_fn(transform_state)
    if param_axes is not None and parallel.in_mesh():
      params = parallel.gather_params(_in_compute_dtype(fns, params),
                                      param_axes)
    out = sample_fn(fns, params, prompts.tokens, prompts.mask, rng,
                    num_samples=num_samples, **kw)
    return Rollout(
        prompt=out.prompt_tokens.astype(jnp.int32),
        prompt_mask=out.prompt_mask.astype(bool),
        response=out.tokens.astype(jnp.int32),
        response_mask=out.mask.astype(jnp.float32),
        logp=out.logp.astype(jnp.float32),
        entropy=out.entropy.astype(jnp.float32),
        rewards=None, group_ids=out.group_ids.astype(jnp.int32), aux=None)

  return rollout_fn


def _in_compute_dtype(fns: Any, params: Any) -> Any:
  """Floating parameters cast to the model's compute dtype (if it has
  one)."""
  dtype = getattr(getattr(fns, "config", None), "dtype", None)
  if dtype is None:
    return params
  return jax.tree.map(
      lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating)
      else x, params)


def repeat_answers(answer: Any, num_samples: int) -> Any:
  """Repeats per-prompt answers for the ``num_samples`` rows of each."""
  if answer is None or num_samples == 1:
    return answer
  return jax.tree.map(lambda a: jnp.repeat(a, num_samples, axis=0), answer)


def with_rewards(ro: Rollout, rewards: Array, success: float = 1.0
                 ) -> Rollout:
  """Sets ``ro.rewards`` and ``ro.aux["correct"]`` (reward >= ``success``;
  read by GRPO-λ)."""
  rewards = jnp.asarray(rewards, jnp.float32)
  correct = (rewards >= success - 1e-6).astype(jnp.float32)
  return ro._replace(rewards=rewards,
                     aux={**(ro.aux or {}), "correct": correct})


def score(jax_reward_fn: Callable[..., Array], ro: Rollout, answer: Any,
          num_samples: int) -> Rollout:
  """Fills ``ro.rewards`` with a JAX checker
  ``fn(prompt_tokens, response_tokens, response_mask, answer) -> [B]``."""
  rewards = jax_reward_fn(ro.prompt, ro.response, ro.response_mask,
                          repeat_answers(answer, num_samples))
  return with_rewards(ro, rewards)


def reward_metrics(rewards: Array, group_ids: Array, num_groups: int,
                   success: float = 1.0) -> dict[str, Array]:
  """Accuracy (reward >= ``success``), the fraction of groups whose rewards
  all tie (no GRPO signal), and pass@G over the groups."""
  r = rewards.astype(jnp.float32)
  ok = (r >= success - 1e-6).astype(jnp.float32)
  g_max = jax.ops.segment_max(r, group_ids, num_segments=num_groups)
  g_min = jax.ops.segment_min(r, group_ids, num_segments=num_groups)
  g_ok = jax.ops.segment_max(ok, group_ids, num_segments=num_groups)
  return {"accuracy": jnp.mean(ok),
          "tied_groups": jnp.mean((g_max == g_min).astype(jnp.float32)),
          "pass@group": jnp.mean(g_ok)}


def make_rl_iteration(rollout_fn: Callable[..., Rollout],
                      jax_reward_fn: Callable[..., Array],
                      train_step: Callable[..., Any], *,
                      num_samples: int = 1
                      ) -> Callable[[TrainState, Prompts],
                                    tuple[TrainState, dict[str, Array]]]:
  """``iteration(state, prompts) -> (state, metrics)``: one pure RL step.

  rollout (key ``step_key(state, "rollout")``) -> JAX reward -> the train
  step (prepare/advantages + update). Jit it (or shard it with
  ``parallel.shard_train_step``); ``vmap_seeds`` runs several seeds.
  """

  def iteration(state: TrainState, prompts: Prompts):
    ro = rollout_fn(state.params, prompts, types.step_key(state, "rollout"),
                    state.transform_state)
    ro = score(jax_reward_fn, ro, prompts.answer, num_samples)
    state, metrics = train_step(state, ro)
    metrics.update(reward_metrics(ro.rewards, ro.group_ids,
                                  prompts.tokens.shape[0]))
    return state, metrics

  return iteration


def vmap_seeds(iteration: Callable[..., Any]) -> Callable[..., Any]:
  """Runs an iteration over a leading seed axis of the state; the prompts
  are shared (every seed sees the same data, as separate runs with the same
  data seed would)."""
  return jax.vmap(iteration, in_axes=(0, None))


def stack_states(states: list[TrainState]) -> TrainState:
  """Stacks per-seed states on a new leading axis."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def unstack_state(state: TrainState, i: int) -> TrainState:
  """Seed ``i`` of a stacked state."""
  return jax.tree.map(lambda x: x[i], state)


def python_reward_iteration(
    state: TrainState, prompts: Prompts, answers: Any, *,
    rollout_fn: Callable[..., Rollout], train_step: Callable[..., Any],
    reward_fn: Callable[[np.ndarray, np.ndarray, Any],
                        tuple[np.ndarray, np.ndarray]],
    num_samples: int = 1) -> tuple[TrainState, dict[str, Any]]:
  """One RL step with a host-side reward between two jitted programs.

  Args:
    state: the train state.
    prompts: the device prompts.
    answers: per-prompt answers for ``reward_fn`` (host objects).
    rollout_fn: jitted ``rollout_fn(params, prompts, rng,
      transform_state)``.
    train_step: jitted ``train_step(state, rollout)``.
    reward_fn: ``reward_fn(response_tokens [B, N], response_mask [B, N],
      answers (one per row)) -> (rewards [B], parse_failed [B])`` on host
      arrays, e.g. ``functools.partial(data.score_responses, task, tok)``.
    num_samples: responses per prompt.

  Returns:
    ``(state, metrics)``; metrics add ``parse_failures`` (fraction of rows).
  """
  ro = rollout_fn(state.params, prompts, types.step_key(state, "rollout"),
                  state.transform_state)
  row_answers = [a for a in answers for _ in range(num_samples)]
  toks, mask = jax.device_get((ro.response, ro.response_mask))
  rewards, failed = reward_fn(np.asarray(toks), np.asarray(mask), row_answers)
  rewards = jnp.asarray(np.asarray(rewards, np.float32))
  ro = with_rewards(ro, rewards)
  state, metrics = train_step(state, ro)
  metrics = dict(metrics)
  metrics.update(reward_metrics(rewards, ro.group_ids,
                                prompts.tokens.shape[0]))
  metrics["parse_failures"] = float(np.mean(np.asarray(failed, np.float32)))
  return state, metrics
