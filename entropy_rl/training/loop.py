"""The outer loop: SFT warm-up, then RL, with checkpoints, metrics and eval.

``run_sft(experiment, workdir)`` and ``run_rl(experiment, workdir, params)``
take an :class:`Experiment` (plain objects: model functions, task,
transform, optimizer, settings -- built from a config by
``entropy_rl.builders``; nothing here reads a ConfigDict) and a directory.
Each phase resumes from its directory's latest checkpoint: the train state
and the grain iterator are restored together, so a resumed run repeats
exactly the numbers an uninterrupted one produces. SIGTERM / SIGINT finish
the current step, save a checkpoint and return ``status="preempted"`` (RL)
or raise :class:`Preempted` (SFT); ``experiments.main`` then exits with
status 143.

Per step, ``metrics.jsonl`` and TensorBoard get every scalar (entropy and
quantiles, predicted and realised ΔH, cov(logp, A), clip fractions, KL,
reward, accuracy, response length, tokens/s, step time) and, every
``eval_every`` steps, the held-out ``eval/accuracy`` (greedy) and
``eval/pass@k``. A (re)started phase first rewrites ``metrics.jsonl`` to
the well-formed rows before its restored step (a torn last line and the
rows it redoes dropped), so the file holds one row per (phase, step)
whatever the point at which a run was killed; TensorBoard's event files
are only appended to.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
import threading
import time
from typing import Any, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from entropy_rl import data as data_lib
from entropy_rl import parallel
from entropy_rl import sampling as sampling_lib
from entropy_rl.core import types as core_types
from entropy_rl.training import checkpoint as ckpt_lib
from entropy_rl.training import hooks as hooks_lib
from entropy_rl.training import iteration as it_lib
from entropy_rl.training import metrics as metrics_lib
from entropy_rl.training import step as step_lib
from entropy_rl.training import types

TrainState = types.TrainState


@dataclasses.dataclass(frozen=True)
class Settings:
  """Loop settings (all plain values)."""
  num_steps: int = 100
  prompts_per_step: int = 16
  num_samples: int = 4
  max_prompt_len: int = 32
  max_new_tokens: int = 16
  seed: int = 0
  num_seeds: int = 1
  data_seed: int = 0
  use_chat_template: bool = False
  add_bos: bool = False
  jax_reward: bool = True
  sft_steps: int = 0
  sft_batch_size: int = 32
  sft_seq_len: int = 32
  eval_every: int = 0
  eval_prompts: int = 64
  eval_samples: int = 4
  eval_ks: tuple[int, ...] = (1,)
  eval_seed: int = 12345
  checkpoint_every: int = 0
  keep_checkpoints: int = 2
  keep_best: int = 1
  best_metric: str = "eval/accuracy"
  async_checkpoints: bool = True
  log_every: int = 1
  tensorboard: bool = True
  progress: bool = True
  mesh_shape: tuple[int, ...] = (-1, 1, 1)
  # XLA options of the jitted SFT / RL steps ((name, value) pairs).
  xla_options: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True)
class Experiment:
  """Everything a run needs, as objects.

  Attributes:
    fns: model functions (``entropy_rl.models.as_functions``).
    params: initial parameters.
    logical_axes: the parameters' logical axes (None: path rules).
    tokenizer: the tokenizer.
    task: the ``entropy_rl.data.Task``.
    transform: the entropy transform (chain incl. advantages).
    objective: the policy-gradient objective.
    optimizer: the RL optimizer.
    sft_optimizer: the warm-up optimizer (None: no warm-up).
    sampling: the rollout ``SamplingMethod``.
    eval_sampling: the ``SamplingMethod`` of pass@k samples.
    rollout_processors: extra ``LogitsProcessor``s of training rollouts
      (applied before the method's), e.g. an entropy-adaptive temperature.
    processor_params_fn: ``fn(transform_state) -> params`` of those
      processors (None: their defaults).
    rollout_hook: how a step's batch is collected
      (:class:`~entropy_rl.core.rollout.RolloutHookSpec`, e.g. a
      rollout-side method's hook, or dynamic sampling around one; None:
      one plain rollout).
    step_kwargs: keyword arguments of ``make_train_step``.
    sampler_kwargs: extra keyword arguments of ``sampling.sample``.
    settings: :class:`Settings`.
    config: the config it was built from (a record for builders' reuse;
      the loop never reads it).
  """
  fns: Any
  params: Any
  logical_axes: Any
  tokenizer: Any
  task: Any
  transform: core_types.EntropyTransform
  objective: Any
  optimizer: optax.GradientTransformation
  sft_optimizer: optax.GradientTransformation | None
  sampling: Any
  eval_sampling: Any
  step_kwargs: dict[str, Any]
  sampler_kwargs: dict[str, Any]
  settings: Settings
  config: Any = None
  rollout_processors: tuple = ()
  processor_params_fn: Any = None
  rollout_hook: hooks_lib.RolloutHookSpec | None = None

  @functools.cached_property
  def step_functions(self) -> dict[str, Any]:
    """The pure step functions (``update``, ``rollout`` and ``iteration`` or
    the hook's), built on first use and kept with this Experiment, so a
    second ``run_rl`` of it (a resume, an evaluation) reuses their
    compilations; ``dataclasses.replace`` gives a new Experiment that builds
    its own."""
    return _build_step_functions(self)


# --------------------------------------------------------------- preemption


class Preempted(Exception):
  """Raised when a signal stopped the SFT phase (after saving).

  Attributes:
    step: the SFT step of the saved checkpoint.
    workdir: the SFT directory (a re-run resumes from it).
  """

  def __init__(self, step: int, workdir: str):
    super().__init__(step, workdir)  # args: picklable as (step, workdir)
    self.step, self.workdir = step, workdir

  def __str__(self) -> str:
    return (f"stopped by a signal during SFT (checkpoint at step "
            f"{self.step} in {self.workdir}); re-run to resume")


class StopSignal:
  """Turns SIGTERM / SIGINT into a flag checked between steps.

  A second signal of the same kind restores the default behaviour (a second
  Ctrl-C interrupts at once). Only installed in the main thread.
  """

  def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
    self.signals, self.received, self._old = signals, None, {}

  def _handler(self, signum, frame):
    del frame
    self.received = signum
    signal.signal(signum, self._old.get(signum, signal.SIG_DFL))

  def __enter__(self) -> StopSignal:
    if threading.current_thread() is threading.main_thread():
      for s in self.signals:
        self._old[s] = signal.signal(s, self._handler)
    return self

  def __exit__(self, *exc) -> None:
    for s, h in self._old.items():
      signal.signal(s, h)

  @property
  def stop(self) -> bool:
    return self.received is not None


# ------------------------------------------------------------------ helpers


def _resume_jsonl(path: str, redo: Mapping[str, int]) -> None:
  """Prepares a run's metrics file for a (re)start.

  Rewrites ``path`` atomically (:func:`metrics.rewrite_jsonl`) to its
  well-formed records, less those of each phase ``p`` in ``redo`` at steps
  ``>= redo[p]``: the run writes them again. With a torn last line dropped
  and the earlier rows kept, the file then holds one row per (phase, step)
  whatever the point at which the previous run was killed.
  """
  metrics_lib.rewrite_jsonl(
      path, lambda r: r.get("phase") not in redo or
      not isinstance(r.get("step"), int) or r["step"] < redo[r["phase"]])


def _mesh_and_specs(exp: Experiment, params: Any):
  mesh = parallel.make_mesh(exp.settings.mesh_shape)
  return mesh, parallel.param_specs(params, exp.logical_axes, mesh=mesh)


def _state_shardings(abstract: Any, pspecs: Any, params: Any, mesh,
                     num_seeds: int) -> Any:
  specs = parallel.state_specs(abstract, pspecs, params)
  if num_seeds > 1:
    specs = jax.tree.map(lambda s: P(None, *s), specs,
                         is_leaf=lambda x: isinstance(x, P))
  return parallel.tree_shardings(specs, mesh)


def _sft_batch(tokens: np.ndarray, loss_mask: np.ndarray) -> types.SFTBatch:
  """(tokens, loss_mask) of ``data.sft_batches`` -> SFTBatch (right-padded
  rows: real tokens run up to the last supervised one)."""
  lm = np.asarray(loss_mask, bool)
  s = lm.shape[1]
  last = np.where(lm.any(1), s - 1 - np.argmax(lm[:, ::-1], 1), s - 1)
  mask = np.arange(s)[None] <= last[:, None]
  return types.SFTBatch(np.asarray(tokens, np.int32), mask,
                        lm.astype(np.float32))


def _prompts(batch: Any, with_answer: bool) -> it_lib.Prompts:
  return it_lib.Prompts(
      tokens=jnp.asarray(batch.tokens, jnp.int32),
      mask=jnp.asarray(batch.mask, bool),
      answer=(jnp.asarray(batch.answer)
              if with_answer and batch.answer is not None else None))


def _use_jax_reward(exp: Experiment) -> bool:
  task = exp.task
  return bool(exp.settings.jax_reward and task.jax_reward_fn is not None and (
      task.tokenizer is None or task.tokenizer is exp.tokenizer or
      type(task.tokenizer) is type(exp.tokenizer)))


def _sample_fn(exp: Experiment, method: Any, processors: tuple = ()):
  tok = exp.tokenizer
  return functools.partial(
      sampling_lib.sample, max_new_tokens=exp.settings.max_new_tokens,
      sampling=method, end_ids=tuple(tok.end_ids), pad_id=int(tok.pad_id),
      processors=tuple(processors), **exp.sampler_kwargs)


# --------------------------------------------------------------------- SFT


def run_sft(exp: Experiment, workdir: str) -> Any:
  """Supervised warm-up on the task's gold solutions; returns the params.

  Resumes from ``workdir/checkpoints``; a finished warm-up is loaded, not
  redone.
  """
  s = exp.settings
  if s.sft_steps <= 0 or exp.sft_optimizer is None:
    return exp.params
  os.makedirs(workdir, exist_ok=True)
  mesh, pspecs = _mesh_and_specs(exp, exp.params)
  init = lambda: types.init_train_state(  # noqa: E731
      exp.params, exp.sft_optimizer, None, s.seed)
  state_sh = _state_shardings(jax.eval_shape(init), pspecs, exp.params, mesh,
                              1)
  state = parallel.place(init(), state_sh)
  ds = data_lib.sft_batches(
      exp.task, exp.tokenizer, s.sft_batch_size, s.sft_seq_len,
      seed=s.data_seed, use_chat_template=s.use_chat_template,
      add_bos=s.add_bos)
  it = iter(ds)
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                               keep=1, keep_best=0,
                               async_save=s.async_checkpoints)
  restored = ckpt.restore(state, data_iterator=it)
  if restored is not None:
    state = restored[0]
  start = int(state.step)
  if start >= s.sft_steps:
    ckpt.close()
    return state.params
  _resume_jsonl(os.path.join(workdir, "metrics.jsonl"), {"sft": start + 1})
  writer = metrics_lib.MetricWriter(workdir, tensorboard=s.tensorboard)
  step = parallel.shard_train_step(
      step_lib.make_sft_step(exp.fns, exp.sft_optimizer,
                             **_sft_kwargs(exp.step_kwargs)),
      mesh=mesh, state_sharding=state_sh,
      compiler_options=dict(s.xla_options))
  bar = metrics_lib.Progress(s.sft_steps, desc="sft",
                             every=max(1, s.sft_steps // 10))
  with StopSignal() as stop:
    for i in range(start, s.sft_steps):
      t0 = time.time()
      batch = _sft_batch(*next(it))
      state, m = step(state, parallel.shard_batch(batch, mesh))
      m = dict(m, step_time=time.time() - t0)
      if (i + 1) % s.log_every == 0 or i + 1 == s.sft_steps:
        vals = writer.write(i + 1, m, phase="sft")
        if s.progress:
          bar.update(i + 1, vals)
      done = i + 1 == s.sft_steps
      if done or stop.stop or (s.checkpoint_every and
                               (i + 1) % s.checkpoint_every == 0):
        writer.sync()  # the rows up to here on disk before the checkpoint
        ckpt.save(i + 1, state, data_iterator=it, meta={"phase": "sft"},
                  force=True)
      if stop.stop and not done:
        ckpt.close()
        writer.close()
        raise Preempted(i + 1, workdir)
  bar.close()
  ckpt.close()
  writer.close()
  return state.params


def _sft_kwargs(step_kwargs: dict[str, Any]) -> dict[str, Any]:
  keys = ("max_grad_norm", "token_chunk", "vocab_chunk", "compute_dtype")
  return {k: step_kwargs[k] for k in keys if k in step_kwargs}


# --------------------------------------------------------------------- eval


class Evaluator:
  """Held-out accuracy (greedy) and pass@k (``eval_samples`` samples).

  The held-out prompts are the first batch of the task's pipeline under
  ``eval_seed`` (a different seed from training). Randomness is a fixed key
  folded with the step, so evaluation is identical after a resume.
  """

  def __init__(self, exp: Experiment):
    s = exp.settings
    self.exp, self.s = exp, s
    ds = data_lib.prompt_map_dataset(
        exp.task, seed=s.eval_seed, batch_size=s.eval_prompts,
        tokenizer=exp.tokenizer, max_prompt_len=s.max_prompt_len,
        use_chat_template=s.use_chat_template, add_bos=s.add_bos,
        truncate="left", shard_index=0, shard_count=1)
    self.batch = ds[0]
    self._timeouts = 0  # Responses over the reward time budget (a call).
    self.use_jax = _use_jax_reward(exp)
    self.prompts = _prompts(self.batch, self.use_jax)
    n = s.eval_samples
    sample = _sample_fn(exp, exp.eval_sampling)
    greedy = _sample_fn(exp, sampling_lib.greedy())
    # Not wrapped in an outer jit: the sampler's own jit is cached by its
    # static arguments, so runs sharing a model share its compilation.
    axes = exp.logical_axes
    self._sample = it_lib.make_rollout_fn(exp.fns, sample, num_samples=n,
                                          param_axes=axes)
    self._greedy = it_lib.make_rollout_fn(exp.fns, greedy, num_samples=1,
                                          param_axes=axes)

  def _rewards(self, ro, n: int) -> np.ndarray:
    if self.use_jax:
      return np.asarray(_jax_rewards(self.exp.task.jax_reward_fn, ro.prompt,
                                     ro.response, ro.response_mask,
                                     self.prompts.answer, n))
    answers = [a for a in self.batch.answers for _ in range(n)]
    r, _, timeouts = data_lib.score_responses_bounded(
        self.exp.task, self.exp.tokenizer, np.asarray(ro.response),
        np.asarray(ro.response_mask), answers)
    self._timeouts += int(np.sum(timeouts))
    return r

  def __call__(self, params: Any, step: int) -> dict[str, float]:
    n = self.s.eval_samples
    key = jax.random.fold_in(jax.random.PRNGKey(self.s.eval_seed), step)
    out = {}
    self._timeouts = 0
    ro = self._greedy(params, self.prompts, key)
    r = self._rewards(ro, 1)
    out["eval/accuracy"] = float(np.mean(r >= 1.0 - 1e-6))
    out["eval/response_length"] = float(np.mean(
        np.asarray(ro.response_mask).sum(-1)))
    if n > 0:
      ro = self._sample(params, self.prompts, key)
      r = self._rewards(ro, n).reshape(-1, n)
      out.update({f"eval/{k}": v for k, v in metrics_lib.mean_pass_at_k(
          r >= 1.0 - 1e-6, self.s.eval_ks).items()})
      out["eval/sample_reward"] = float(np.mean(r))
      m = np.asarray(ro.response_mask)
      out["eval/entropy"] = float(
          (np.asarray(ro.entropy) * m).sum() / max(m.sum(), 1.0))
    if not self.use_jax:
      out["eval/reward_timeouts"] = float(self._timeouts)
    return out


@functools.partial(jax.jit, static_argnums=(0, 5))
def _jax_rewards(reward_fn: Any, prompt: jax.Array, response: jax.Array,
                 mask: jax.Array, answer: Any, n: int) -> jax.Array:
  """The evaluation's JAX rewards in one program (run op by op, a checker's
  scan over the response costs more than the evaluation's sampling)."""
  return reward_fn(prompt, response, mask, it_lib.repeat_answers(answer, n))


def _evaluate(evaluator: Evaluator, state: TrainState, step: int,
              num_seeds: int) -> dict[str, float]:
  if num_seeds == 1:
    return evaluator(state.params, step)
  per = [evaluator(it_lib.unstack_state(state, i).params, step)
         for i in range(num_seeds)]
  out = {k: float(np.mean([p[k] for p in per])) for k in per[0]}
  for i, p in enumerate(per):
    out.update({f"{k}@seed{i}": v for k, v in p.items()})
  return out


# ----------------------------------------------------------------------- RL


def init_rl_state(exp: Experiment, params: Any) -> tuple[TrainState, Any,
                                                          Any]:
  """The (stacked, sharded) initial RL state, its shardings and the mesh."""
  s = exp.settings
  need_ref = "ref_logp" in exp.transform.needs.fields
  mesh, pspecs = _mesh_and_specs(exp, params)

  def init(seed):
    return types.init_train_state(
        params, exp.optimizer, exp.transform, jax.random.PRNGKey(seed),
        ref_params=params if need_ref else None)

  abstract = jax.eval_shape(lambda: init(0))
  state_sh = _state_shardings(abstract, pspecs, params, mesh, s.num_seeds)
  if s.num_seeds == 1:
    state = init(s.seed)
  else:
    state = it_lib.stack_states([init(s.seed + i)
                                 for i in range(s.num_seeds)])
  return parallel.place(state, state_sh), state_sh, mesh


def run_rl(exp: Experiment, workdir: str, params: Any = None
           ) -> dict[str, Any]:
  """RL from ``params`` (default ``exp.params``); resumes from ``workdir``.

  Returns:
    A summary: ``status`` ("done" / "preempted"), ``step``, ``seconds``,
    ``final`` (the last logged train metrics), ``eval`` (the last eval).
  """
  s = exp.settings
  params = exp.params if params is None else params
  os.makedirs(workdir, exist_ok=True)
  state, state_sh, mesh = init_rl_state(exp, params)
  ds = data_lib.prompt_dataset(
      exp.task, seed=s.data_seed, batch_size=s.prompts_per_step,
      tokenizer=exp.tokenizer, max_prompt_len=s.max_prompt_len,
      use_chat_template=s.use_chat_template, add_bos=s.add_bos,
      truncate="left")
  it = iter(ds)
  ckpt = ckpt_lib.Checkpointer(
      os.path.join(workdir, "checkpoints"), keep=s.keep_checkpoints,
      keep_best=s.keep_best if s.eval_every else 0,
      best_metric=s.best_metric, async_save=s.async_checkpoints)
  restored = ckpt.restore(state, data_iterator=it)
  last_eval: dict[str, float] = {}
  if restored is not None:
    state, meta = restored
    last_eval = dict(meta.get("eval", {}))
  start = int(np.asarray(state.step).reshape(-1)[0])
  # Rows after the restored step are redone; so is the step-0 evaluation
  # when no checkpoint was found (it runs before the first step).
  _resume_jsonl(os.path.join(workdir, "metrics.jsonl"),
                {"rl": start + 1, "eval": start + 1 if start else 0})
  writer = metrics_lib.MetricWriter(workdir, tensorboard=s.tensorboard)

  fns = exp.step_functions
  use_jax = _use_jax_reward(exp)
  hooked = "hook" in fns
  seeds = s.num_seeds
  if use_jax:
    step_fn = parallel.shard_train_step(
        fns["iteration"], mesh=mesh, state_sharding=state_sh,
        compiler_options=dict(s.xla_options))
  else:
    roll = fns["rollout"]
    update = parallel.shard_train_step(
        fns["update"], mesh=mesh, state_sharding=state_sh,
        compiler_options=dict(s.xla_options))
  evaluator = Evaluator(exp) if s.eval_every else None

  bar = metrics_lib.Progress(s.num_steps, desc="rl",
                             every=max(1, s.num_steps // 20))
  t_start, status, vals = time.time(), "done", {}
  # Rollouts and evaluation run under the mesh too (the sharded steps set
  # it themselves): the model's activation constraints and the sharded
  # statistics pass then apply to the sampler's programs as well.
  if evaluator is not None and start == 0:
    with jax.set_mesh(mesh):
      last_eval = _evaluate(evaluator, state, 0, seeds)
    writer.write(0, last_eval, phase="eval")
  with StopSignal() as stop, jax.set_mesh(mesh):
    for i in range(start, s.num_steps):
      t0 = time.time()
      batch = _next_batch(it, _rounds(exp))
      prompts = parallel.shard_batch(_prompts(batch, use_jax), mesh)
      if use_jax:
        state, m = step_fn(state, prompts)
        m = dict(m)
      elif hooked:
        state, m = _python_hooked_step(exp, fns, update, state, prompts,
                                       batch, seeds)
      else:
        state, m = _python_step(exp, roll, update, state, prompts, batch,
                                seeds)
      m = metrics_lib.to_floats(m)
      m["data_index"] = float(np.asarray(batch.index).reshape(-1)[0])
      dt = time.time() - t0
      rows = rows_per_step(exp)
      m.update(step_time=dt, tokens_per_s=m.get("response_length", 0.0) *
               rows / max(dt, 1e-9))
      step_no = i + 1
      if evaluator is not None and (step_no % s.eval_every == 0 or
                                    step_no == s.num_steps):
        last_eval = _evaluate(evaluator, state, step_no, seeds)
        writer.write(step_no, last_eval, phase="eval")
      if step_no % s.log_every == 0 or step_no == s.num_steps:
        vals = writer.write(step_no, m, phase="rl")
        if s.progress:
          bar.update(step_no, {**vals, **last_eval})
      done = step_no == s.num_steps
      if done or stop.stop or (s.checkpoint_every and
                               step_no % s.checkpoint_every == 0):
        writer.sync()  # the rows up to here on disk before the checkpoint
        ckpt.save(step_no, state, data_iterator=it,
                  metrics={s.best_metric: last_eval.get(s.best_metric,
                                                        float("-inf"))},
                  meta={"phase": "rl", "eval": last_eval}, force=True)
      if stop.stop and not done:
        status = "preempted"
        break
  bar.close()
  ckpt.close()
  writer.close()
  final_step = int(np.asarray(state.step).reshape(-1)[0])
  summary = {"status": status, "step": final_step,
             "seconds": time.time() - t_start, "final": vals,
             "eval": last_eval}
  with open(os.path.join(workdir, "summary.json"), "w",
            encoding="utf-8") as f:
    json.dump(summary, f, indent=1, default=float)
  return summary


def _build_step_functions(exp: Experiment) -> dict[str, Any]:
  """The pure step functions of an experiment (see
  :attr:`Experiment.step_functions`)."""
  s = exp.settings
  train_step = step_lib.make_train_step(exp.fns, exp.objective,
                                        exp.transform, exp.optimizer,
                                        **exp.step_kwargs)
  rollout_fn = it_lib.make_rollout_fn(
      exp.fns, _sample_fn(exp, exp.sampling, exp.rollout_processors),
      num_samples=s.num_samples, processor_params_fn=exp.processor_params_fn,
      param_axes=exp.logical_axes)
  vm = (lambda f, axes: jax.vmap(f, in_axes=axes)) if s.num_seeds > 1 else (
      lambda f, axes: f)
  out = {"update": vm(train_step, (0, 0))}
  roll = vm(lambda st, pr: rollout_fn(
      st.params, pr, types.step_key(st, "rollout"), st.transform_state),
             (0, None))
  # One seed: no outer jit, the sampler's own jit (cached by its static
  # arguments) is shared by every run of the process.
  out["rollout"] = jax.jit(roll) if s.num_seeds > 1 else roll
  if exp.rollout_hook is not None:
    _hook_functions(exp, rollout_fn, train_step, vm, out)
  elif exp.task.jax_reward_fn is not None:
    out["iteration"] = vm(it_lib.make_rl_iteration(
        rollout_fn, exp.task.jax_reward_fn, train_step,
        num_samples=s.num_samples), (0, None))
  return out


def _python_step(exp: Experiment, roll, update, state: TrainState,
                 prompts: it_lib.Prompts, batch: Any, seeds: int):
  """Rollout (jitted) -> Python rewards on the host -> update (jitted)."""
  s = exp.settings
  n = s.num_samples
  ro = roll(state, prompts)
  toks, mask = jax.device_get((ro.response, ro.response_mask))
  toks = np.asarray(toks).reshape(-1, toks.shape[-1])
  mask = np.asarray(mask).reshape(toks.shape)
  answers = [a for a in batch.answers for _ in range(n)] * seeds
  rewards, failed, timeouts = data_lib.score_responses_bounded(
      exp.task, exp.tokenizer, toks, mask, answers)
  rewards = jnp.asarray(rewards.reshape(ro.response.shape[:-1]))
  ro = it_lib.with_rewards(ro, rewards)
  state, m = update(state, ro)
  m = dict(m)
  rm = (jax.vmap(it_lib.reward_metrics, in_axes=(0, 0, None))
        if seeds > 1 else it_lib.reward_metrics)
  m.update(rm(rewards, ro.group_ids, s.prompts_per_step))
  m["parse_failures"] = float(np.mean(failed))
  m["reward/timeouts"] = float(np.sum(timeouts))
  return state, m


# ------------------------------------------------------------ rollout hooks


def _rounds(exp: Experiment) -> int:
  """Prompt batches fed per step (the hook's rounds, else 1)."""
  spec = exp.rollout_hook
  return 1 if spec is None else int(spec.prompt_batches)


def rows_per_step(exp: Experiment) -> int:
  """Rows of one step's training batch (all seeds)."""
  s = exp.settings
  spec = exp.rollout_hook
  per_prompt = (s.num_samples if spec is None
                else spec.rows_per_prompt(s.num_samples))
  return s.prompts_per_step * per_prompt * s.num_seeds


class _Batches(NamedTuple):
  """Several host prompt batches stacked on rows (one per round)."""
  tokens: np.ndarray
  mask: np.ndarray
  answer: Any
  answers: tuple
  index: np.ndarray


def _next_batch(it: Any, rounds: int) -> Any:
  """The next prompt batch, or ``rounds`` of them stacked on rows (round r:
  rows ``[r·P, (r+1)·P)`` on one process)."""
  if rounds == 1:
    return next(it)
  bs = [next(it) for _ in range(rounds)]
  cat = lambda xs: np.concatenate([np.asarray(x) for x in xs], 0)  # noqa: E731
  return _Batches(
      tokens=cat([b.tokens for b in bs]), mask=cat([b.mask for b in bs]),
      answer=(None if bs[0].answer is None else cat([b.answer for b in bs])),
      answers=tuple(a for b in bs for a in b.answers),
      index=cat([b.index for b in bs]))


def hook_context(exp: Experiment, rollout_fn: Any) -> hooks_lib.HookContext:
  """What a rollout hook's ``build`` gets from the loop: the main rollout
  ``rollout_fn``, the same with extra logits processors, the raw sampler
  (with the experiment's processors and their parameters) and the sizes."""
  s = exp.settings
  procs = tuple(exp.rollout_processors)
  base_fn = exp.processor_params_fn

  def with_processors(extra: tuple, extra_params_fn: Any) -> Any:
    def params_fn(ts):
      base = (tuple(base_fn(ts)) if base_fn is not None
              else tuple(p.init() for p in procs))
      return base + tuple(extra_params_fn(ts))

    return it_lib.make_rollout_fn(
        exp.fns, _sample_fn(exp, exp.sampling, procs + tuple(extra)),
        num_samples=s.num_samples, processor_params_fn=params_fn,
        param_axes=exp.logical_axes)

  base = _sample_fn(exp, exp.sampling, procs)

  def sample_fn(params, tokens, mask, rng, n, transform_state):
    kw = {}
    if base_fn is not None and transform_state is not None:
      kw["processor_params"] = base_fn(transform_state)
    return base(exp.fns, params, tokens, mask, rng, num_samples=n, **kw)

  return hooks_lib.HookContext(
      rollout_fn=rollout_fn, with_processors=with_processors,
      sample_fn=sample_fn, num_prompts=s.prompts_per_step,
      num_samples=s.num_samples, pad_id=int(exp.tokenizer.pad_id))


def _hook_functions(exp: Experiment, rollout_fn: Any, train_step: Any,
                    vm: Any, out: dict[str, Any]) -> None:
  """The hooked step functions: one jitted iteration (JAX reward) and the
  pieces of the Python-reward path."""
  s = exp.settings
  b = s.prompts_per_step
  spec = exp.rollout_hook
  seeds = s.num_seeds
  hook = spec.build(hook_context(exp, rollout_fn))
  out["hook"] = hook
  if exp.task.jax_reward_fn is not None:
    collect = hooks_lib.jax_collect(hook, exp.task.jax_reward_fn)
    if spec.wrap_collect is not None:
      collect = spec.wrap_collect(collect, num_groups=b)
    out["iteration"] = vm(hooks_lib.make_hooked_iteration(collect,
                                                          train_step),
                          (0, None))
  jit = jax.jit if seeds > 1 else (lambda f: f)
  out["hook_rollouts"] = jit(vm(
      lambda st, pr, r: hook.rollouts(st, pr, hooks_lib.round_key(
          types.step_key(st, "rollout"), r)), (0, None, None)))
  out["hook_finish"] = jit(vm(hooks_lib.finish_fn(hook), (0, None, 0)))
  view = hook.reward_view
  out["reward_view"] = None if view is None else jit(vm(view, (0,)))
  out["host_rounds"] = (None if spec.host_rounds is None else
                        spec.host_rounds(num_groups=b, seeds=seeds))


def _host_rewards(exp: Experiment, fns: dict[str, Any], ro: types.Rollout,
                  answers: Sequence[Any]
                  ) -> tuple[Any, np.ndarray, np.ndarray]:
  """Python rewards of a (seed-stacked) rollout; row answers by group.
  Returns ``(rewards, parse_failed, timeouts)``."""
  view = fns["reward_view"]
  _, toks, mask = ((None, ro.response, ro.response_mask) if view is None
                   else view(ro))
  toks, mask, gids = jax.device_get((toks, mask, ro.group_ids))
  toks = np.asarray(toks).reshape(-1, np.shape(toks)[-1])
  mask = np.asarray(mask).reshape(toks.shape)
  row_answers = [answers[int(g)] for g in np.asarray(gids).reshape(-1)]
  rewards, failed, timeouts = data_lib.score_responses_bounded(
      exp.task, exp.tokenizer, toks, mask, row_answers)
  return (jnp.asarray(rewards.reshape(np.shape(gids))), np.asarray(failed),
          np.asarray(timeouts))


def _python_hooked_step(exp: Experiment, fns: dict[str, Any], update: Any,
                        state: TrainState, prompts: it_lib.Prompts,
                        batch: Any, seeds: int):
  """A hooked step with Python rewards: rollouts (jitted) -> host rewards
  -> finish (jitted) [-> more rounds] -> update (jitted)."""
  s = exp.settings
  b = s.prompts_per_step
  failed_all, timeouts_all = [], []

  def collect_round(r):
    pr = jax.tree.map(lambda x: x[r * b:(r + 1) * b], prompts)
    answers = batch.answers[r * b:(r + 1) * b]
    ros = fns["hook_rollouts"](state, pr, jnp.int32(r))
    scored = []
    for ro in ros:
      rewards, failed, timeouts = _host_rewards(exp, fns, ro, answers)
      failed_all.append(failed)
      timeouts_all.append(timeouts)
      scored.append(it_lib.with_rewards(ro, rewards))
    return fns["hook_finish"](state, pr, tuple(scored))

  drive = fns["host_rounds"]
  ro, hm = collect_round(0) if drive is None else drive(collect_round)
  hm = jax.device_get(hm)  # may alias the state, which update donates
  state, m = update(state, ro)
  m = dict(m)
  m.update(hm)
  m["parse_failures"] = float(np.mean(np.concatenate(failed_all)))
  m["reward/timeouts"] = float(np.sum(np.concatenate(timeouts_all)))
  return state, m


def run(exp: Experiment, workdir: str) -> dict[str, Any]:
  """SFT warm-up (``workdir/sft``) then RL (``workdir``)."""
  params = run_sft(exp, os.path.join(workdir, "sft"))
  return run_rl(exp, workdir, params)


def describe(exp: Experiment) -> str:
  """A short text summary of an experiment (printed at start)."""
  n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(exp.params))
  s = exp.settings
  return (f"model {n / 1e6:.2f}M params; task {exp.task.name}; "
          f"{s.prompts_per_step} prompts x {s.num_samples} samples, "
          f"{s.max_new_tokens} new tokens; {s.num_steps} RL steps "
          f"(SFT {s.sft_steps}); seeds {s.num_seeds}; objective "
          f"{getattr(exp.objective, 'name', '?')}; "
          f"reward {'jax (one jit)' if _use_jax_reward(exp) else 'python'}")


__all__: Sequence[str] = (
    "Evaluator", "Experiment", "Preempted", "Settings", "StopSignal",
    "describe", "hook_context", "init_rl_state", "run", "run_rl", "run_sft")
