"""Pre-flight: an experiment's real programs compiled for a TPU slice.

Before a run takes a TPU (or a GPU), compile its programs for the target and
read what they need, from any machine: with ``libtpu`` installed a CPU host
compiles for a named slice (``entropy_rl.aot.topology("v5e-8")``); on a TPU
or GPU host the local devices are the target. Nothing is materialised: the
parameters, the optimizer state and the batches are ``jax.ShapeDtypeStruct``s
with the mesh's shardings.

Two programs of an :class:`~entropy_rl.training.loop.Experiment`:

* ``train``: the RL update (``make_train_step`` with the experiment's
  objective, transform, optimizer and step settings) on the rows of one RL
  step (prompts × samples), sharded as the loop shards it (parameters and
  Adam's moments by the partition rules, the batch over ``data`` x
  ``fsdp``);
* ``rollout``: the sampler (prefill, KV-cache decode, the experiment's
  sampling method and processors) for one step's prompts, with every decode
  step run (``early_stop=False``: the worst case, so the loops' trip counts
  are known).

For each: memory per chip (parameters, optimizer state, the rest of the
arguments, temporaries) against HBM, the collectives with their sizes (and
flags for collectives as large as an activation or a logit block), an
estimated time (`entropy_rl.aot.analyze`: XLA:TPU's per-instruction
``estimated_cycles``, loop bodies times their trip counts, Pallas kernels at
the larger of their HBM traffic and their FLOPs at peak, collectives'
bytes at the ICI bandwidth, not overlapped), MFU and rollout tokens/s.
These are estimates of the compiled program, not measurements.

Model FLOPs (MFU's numerator) follow the convention of
``benchmarks/train_step.py`` and the transformers peer (every parameter, the
tied LM head included, on every token: 6 N per trained token), plus causal
attention; with N parameters, S = P + N tokens per row, R rows::

    train:   passes · (2 N R S + 2 · 2 L H Dh R S²/2)
             with passes = 3 per gradient epoch (forward + backward) plus 1
             for each extra forward pass (old policy when not fused,
             entropy-change measurement)
    rollout: 2 N per generated token plus attention over the live context,
             plus the prefill.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from entropy_rl import aot
from entropy_rl import parallel
from entropy_rl import sampling as sampling_lib
from entropy_rl.training import iteration as it_lib
from entropy_rl.training import step as step_lib
from entropy_rl.training import types

PROGRAMS = ("train", "rollout")


@dataclasses.dataclass(frozen=True)
class Program:
  """A function and its abstract, sharded arguments, ready to compile.

  Attributes:
    name: "train" or "rollout".
    fn: the pure function.
    args: its positional arguments (``jax.ShapeDtypeStruct`` pytrees
      carrying shardings).
    out_shardings: ``jax.jit``'s out_shardings (None: let XLA choose).
    donate_argnums: donated arguments (the train state).
    model_flops: FLOPs of the step over all chips (see the module
      docstring).
    kernel_flops: FLOPs per chip executed in Pallas kernels (splash
      attention), which XLA does not cost.
    tokens: tokens the program trains on (train) or generates (rollout).
    rows: rows (train) or prompts (rollout) of the program.
    notes: what the caller should know about the program's settings.
  """
  name: str
  fn: Callable[..., Any]
  args: tuple
  out_shardings: Any
  donate_argnums: tuple[int, ...]
  model_flops: float
  kernel_flops: float
  tokens: int
  rows: int
  notes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Result:
  """A program's pre-flight verdict (per chip; times are estimates).

  Attributes:
    name: the program.
    rows: rows (train) or prompts (rollout) it was compiled for.
    fits: whether it fits the chip's HBM.
    report: the `entropy_rl.aot.Report` (None when the compiler refused).
    error: the compiler's out-of-memory message when it refused.
    params_bytes, optimizer_bytes, other_args_bytes: argument memory per
      chip, by kind.
    estimated_seconds, mfu, tokens_per_second: estimates (None without a
      report).
    flags: large collectives worth a look (activation- or logit-sized).
    max_rows: the largest rows (prompts) that fit, when searched.
    notes: the program's notes.
  """
  name: str
  rows: int
  fits: bool
  report: aot.Report | None
  error: str | None
  params_bytes: int
  optimizer_bytes: int
  other_args_bytes: int
  estimated_seconds: float | None
  mfu: float | None
  tokens_per_second: float | None
  flags: tuple[str, ...] = ()
  max_rows: int | None = None
  notes: tuple[str, ...] = ()

  def to_dict(self) -> dict[str, Any]:
    d = {k: v for k, v in dataclasses.asdict(self).items() if k != "report"}
    d["report"] = None if self.report is None else self.report.to_dict()
    return d


# ----------------------------------------------------------------- helpers


def _abstract(tree: Any, shardings: Any) -> Any:
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=s),
      tree, shardings)


def _batch_struct(shape: Sequence[int], dtype: Any, mesh) -> Any:
  return jax.ShapeDtypeStruct(
      tuple(shape), dtype,
      sharding=NamedSharding(mesh, parallel.batch_spec(tuple(shape), mesh)))


def bytes_per_chip(tree: Any) -> int:
  """Bytes one device holds of an abstract, sharded pytree."""
  total = 0
  for x in jax.tree.leaves(tree):
    shape = x.sharding.shard_shape(x.shape) if getattr(
        x, "sharding", None) is not None else x.shape
    total += math.prod(shape) * jnp.dtype(x.dtype).itemsize
  return total


def _num_params(params: Any) -> int:
  return sum(math.prod(np.shape(x)) for x in jax.tree.leaves(params))


def _attention_flops(cfg: Any, rows: int, seq: int) -> float:
  """Forward FLOPs of causal attention (scores and values), all layers."""
  return 2.0 * 2.0 * cfg.num_layers * cfg.num_heads * cfg.head_dim * (
      rows * seq * seq / 2.0)


def _uses_splash(cfg: Any, platform: str, seq: int) -> bool:
  from entropy_rl.models import attention as attention_lib  # pylint: disable=import-outside-toplevel
  return attention_lib.resolve(cfg.attention, platform, seq,
                               dtype=cfg.dtype) == "splash"


def _state_shardings(exp: Any, abstract_state: Any, mesh) -> Any:
  specs = parallel.param_specs(exp.params, exp.logical_axes, mesh=mesh)
  return parallel.tree_shardings(
      parallel.state_specs(abstract_state, specs, exp.params), mesh)


def _abstract_state(exp: Any):
  need_ref = "ref_logp" in exp.transform.needs.fields
  return jax.eval_shape(lambda: types.init_train_state(
      exp.params, exp.optimizer, exp.transform, jax.random.PRNGKey(0),
      ref_params=exp.params if need_ref else None))


def _end_and_pad(exp: Any) -> tuple[tuple[int, ...], int]:
  """The tokenizer's end / pad ids, or (0,) / 0 without a tokenizer (they do
  not change the compiled program's cost)."""
  tok = exp.tokenizer
  if tok is None:
    return (0,), 0
  return tuple(int(e) for e in tok.end_ids), int(tok.pad_id)


# ---------------------------------------------------------------- programs


def train_program(exp: Any, mesh, *, rows: int | None = None) -> Program:
  """The RL update of ``exp`` on ``rows`` rows (default: one RL step's)."""
  s = exp.settings
  hook = exp.rollout_hook
  rows = int(rows or s.prompts_per_step * (
      s.num_samples if hook is None else hook.rows_per_prompt(s.num_samples)))
  p, n = s.max_prompt_len, s.max_new_tokens
  kw = dict(exp.step_kwargs)
  step = step_lib.make_train_step(exp.fns, exp.objective, exp.transform,
                                  exp.optimizer, **kw)
  state = _abstract_state(exp)
  state_sh = _state_shardings(exp, state, mesh)
  ro = types.Rollout(
      prompt=_batch_struct((rows, p), jnp.int32, mesh),
      prompt_mask=_batch_struct((rows, p), jnp.bool_, mesh),
      response=_batch_struct((rows, n), jnp.int32, mesh),
      response_mask=_batch_struct((rows, n), jnp.float32, mesh),
      logp=_batch_struct((rows, n), jnp.float32, mesh),
      entropy=_batch_struct((rows, n), jnp.float32, mesh),
      rewards=_batch_struct((rows,), jnp.float32, mesh),
      group_ids=_batch_struct((rows,), jnp.int32, mesh),
      # As `iteration.with_rewards` leaves it (GRPO-λ reads it).
      aux={"correct": _batch_struct((rows,), jnp.float32, mesh)})
  cfg = exp.fns.config
  seq = p + n
  epochs = int(kw.get("epochs", 1))
  fused = (kw.get("fuse_old_pass", True) and kw.get("recompute_old_logp", True)
           and epochs * int(kw.get("minibatches", 1)) == 1)
  forwards = (0 if fused else 1) + int(kw.get("measure_entropy_change", True))
  passes = 3 * epochs + forwards
  n_params = _num_params(exp.params)
  per_pass = 2.0 * n_params * rows * seq + _attention_flops(cfg, rows, seq)
  kernel = 0.0
  if _uses_splash(cfg, parallel.target_platform(), seq):
    # Splash runs the forward (2 products) and a backward with the scores
    # recomputed (5 products): 7/2 of the forward per gradient pass.
    kernel = _attention_flops(cfg, rows, seq) * (
        3.5 * epochs + forwards) / mesh.size
  notes = [f"{rows} rows x ({p} prompt + {n} response) tokens, "
           f"{epochs} epoch(s) x {kw.get('minibatches', 1)} minibatch(es)"]
  if s.num_seeds > 1:
    notes.append(f"compiled for one seed (the run vmaps {s.num_seeds})")
  return Program(
      name="train", fn=step, args=(_abstract(state, state_sh), ro),
      out_shardings=(state_sh, parallel.replicated(mesh)),
      donate_argnums=(0,), model_flops=passes * per_pass,
      kernel_flops=kernel, tokens=rows * seq, rows=rows, notes=tuple(notes))


def rollout_program(exp: Any, mesh, *, prompts: int | None = None
                    ) -> Program:
  """The sampler of ``exp`` for ``prompts`` prompts (default: one RL
  step's), every decode step run."""
  s = exp.settings
  b = int(prompts or s.prompts_per_step)
  p, n, g = s.max_prompt_len, s.max_new_tokens, s.num_samples
  end_ids, pad_id = _end_and_pad(exp)
  kw = dict(exp.sampler_kwargs)
  sample_fn = functools.partial(
      sampling_lib.sample, max_new_tokens=n, sampling=exp.sampling,
      end_ids=end_ids, pad_id=pad_id,
      processors=tuple(exp.rollout_processors), early_stop=False, **kw)
  roll = it_lib.make_rollout_fn(exp.fns, sample_fn, num_samples=g,
                                processor_params_fn=exp.processor_params_fn,
                                param_axes=exp.logical_axes)

  def rollout(params, prompts, rng, transform_state):
    return roll(params, prompts, rng, transform_state)

  state = _abstract_state(exp)
  state_sh = _state_shardings(exp, state, mesh)
  params = _abstract(state.params, state_sh.params)
  tstate = _abstract(state.transform_state, state_sh.transform_state)
  prompts_in = it_lib.Prompts(
      tokens=_batch_struct((b, p), jnp.int32, mesh),
      mask=_batch_struct((b, p), jnp.bool_, mesh))
  rng = jax.ShapeDtypeStruct((2,), jnp.uint32,
                             sharding=parallel.replicated(mesh))
  cfg = exp.fns.config
  r = b * g
  n_params = _num_params(exp.params)
  decode = r * n * 2.0 * n_params + 2.0 * 2.0 * cfg.num_layers * (
      cfg.num_heads * cfg.head_dim) * r * n * (p + n / 2.0)
  prefill = 2.0 * n_params * b * p + _attention_flops(cfg, b, p)
  kernel = 0.0
  if _uses_splash(cfg, parallel.target_platform(), p):
    kernel = _attention_flops(cfg, b, p) / mesh.size
  notes = (f"{b} prompts x {g} samples, {p} prompt + {n} new tokens, all "
           f"{n} decode steps (no early stop)",)
  return Program(
      name="rollout", fn=rollout, args=(params, prompts_in, rng, tstate),
      out_shardings=None, donate_argnums=(), model_flops=decode + prefill,
      kernel_flops=kernel, tokens=r * n, rows=b, notes=notes)


# ------------------------------------------------------------------- run


def suspicious_collectives(collectives: Sequence[aot.Collective],
                           params: Any, num_devices: int, *,
                           min_bytes: int = 1 << 20) -> list[aot.Collective]:
  """Collectives that move activations or logits rather than weights.

  A collective whose result's last two dimensions (of size > 1) are
  dimensions of a parameter (or of a shard of one: a dimension divided by a
  divisor of ``num_devices``) moves weights or their gradients; any other
  floating-point all-gather, all-reduce, reduce-scatter or
  collective-permute of at least ``min_bytes`` moves something
  batch-shaped (a residual stream split on D, a replicated activation, a
  logit block). Not counted: integer / boolean collectives (token ids and
  masks, 4 bytes a token) and all-to-alls, which move each element once
  between two splits of the same tensor (under FSDP the embedding lookup's
  [tokens, D/f] -> [tokens/f, D] reshard), never replicating it.

  Args:
    collectives: ``entropy_rl.aot.Report.collectives``.
    params: the parameters (arrays or ``ShapeDtypeStruct``s).
    num_devices: devices of the mesh.
    min_bytes: smaller collectives are ignored.

  Returns:
    The suspicious collectives.
  """
  splits = [m for m in range(1, num_devices + 1) if num_devices % m == 0]
  dims = {d // m for x in jax.tree.leaves(params) for d in np.shape(x)
          for m in splits if d % m == 0}
  out = []
  for col in collectives:
    shape = tuple(d for d in col.shape if d > 1)
    if (len(shape) < 2 or col.bytes < min_bytes or col.kind == "all-to-all"
        or not col.dtype.startswith(("f", "bf"))):
      continue
    if all(d in dims for d in shape[-2:]):
      continue  # a weight (or its gradient, or a shard of it)
    out.append(col)
  return out


def _flags(report: aot.Report, program: Program, mesh) -> tuple[str, ...]:
  params = (program.args[0].params if program.name == "train"
            else program.args[0])
  return tuple(
      f"{col.kind} {col.result_type} x{col.count} "
      f"({col.bytes / 2**20:.1f} MiB): not parameter-shaped (activations "
      f"or logits?) [{col.name}]"
      for col in suspicious_collectives(report.collectives, params,
                                        mesh.size))


def run_program(program: Program, topology: aot.TopologyInfo, mesh,
                *, compiler_options: Mapping[str, Any] | None = None
                ) -> Result:
  """Compiles ``program`` for ``topology`` and reads the result."""
  if program.name == "train":
    state = program.args[0]
    params_b = bytes_per_chip(state.params)
    opt_b = bytes_per_chip(state.opt_state)
    other = bytes_per_chip(program.args) - params_b - opt_b
  else:
    params_b, opt_b = bytes_per_chip(program.args[0]), 0
    other = bytes_per_chip(program.args[1:])
  try:
    compiled = aot.compile_for(
        program.fn, program.args, mesh=mesh,
        out_shardings=program.out_shardings,
        donate_argnums=program.donate_argnums,
        compiler_options=compiler_options)
  except aot.DoesNotFit as e:
    return Result(name=program.name, rows=program.rows, fits=False,
                  report=None, error=str(e), params_bytes=params_b,
                  optimizer_bytes=opt_b, other_args_bytes=other,
                  estimated_seconds=None, mfu=None, tokens_per_second=None,
                  notes=program.notes)
  report = aot.analyze(compiled, chip=topology.chip,
                       num_chips=topology.num_chips,
                       kernel_flops=program.kernel_flops)
  est = report.estimated_seconds
  return Result(
      name=program.name, rows=program.rows, fits=report.memory.fits,
      report=report, error=None, params_bytes=params_b,
      optimizer_bytes=opt_b, other_args_bytes=other, estimated_seconds=est,
      mfu=report.mfu(program.model_flops) if est > 0 else None,
      tokens_per_second=program.tokens / est if est > 0 else None,
      flags=_flags(report, program, mesh), notes=program.notes)


def largest_fitting(build: Callable[[int], Program], topology, mesh, *,
                    start: int, unit: int, resolution: float = 1 / 16,
                    compiler_options: Mapping[str, Any] | None = None
                    ) -> int:
  """A multiple of ``unit`` below ``start`` whose program fits, within
  ``resolution`` (relative) of the largest one (bisection over compiles;
  0 when not even ``unit`` fits)."""
  lo, hi = 0, max(start // unit, 1)  # fits(lo·unit) (0 trivially); not hi
  while hi - lo > max(1, int(hi * resolution)):
    mid = (lo + hi) // 2
    if run_program(build(mid * unit), topology, mesh,
                   compiler_options=compiler_options).fits:
      lo = mid
    else:
      hi = mid
  return lo * unit


def preflight(exp: Any, topology: aot.TopologyInfo, mesh, *,
              programs: Sequence[str] = PROGRAMS, find_batch: bool = True,
              compiler_options: Mapping[str, Any] | None = None
              ) -> dict[str, Result]:
  """Compiles ``programs`` of ``exp`` for ``topology`` over ``mesh``.

  Args:
    exp: an Experiment (``builders.build_experiment(config, abstract=True)``
      builds one without weights).
    topology: the target (``aot.topology(name)`` or ``aot.local()``).
    mesh: a ("data", "fsdp", "tensor") mesh over its devices.
    programs: a subset of `PROGRAMS`.
    find_batch: when a program does not fit, search the largest batch that
      does (rows of the train step, prompts of the rollout).
    compiler_options: XLA options of every compile.

  Returns:
    ``{name: Result}``.
  """
  unknown = sorted(set(programs) - set(PROGRAMS))
  if unknown:
    raise ValueError(f"unknown programs {unknown}; valid: {PROGRAMS}")
  s = exp.settings
  shards = math.prod(mesh.shape.get(a, 1) for a in parallel.BATCH_AXES)
  out = {}
  with jax.set_mesh(mesh):
    for name in programs:
      if name == "train":
        build = lambda rows: train_program(exp, mesh, rows=rows)  # noqa: E731
        unit = math.lcm(shards, s.num_samples) * max(
            1, int(exp.step_kwargs.get("minibatches", 1)))
      else:
        build = lambda b: rollout_program(exp, mesh, prompts=b)  # noqa: E731
        unit = max(1, shards // math.gcd(shards, s.num_samples))
      program = build(None)
      result = run_program(program, topology, mesh,
                           compiler_options=compiler_options)
      if not result.fits and find_batch:
        best = largest_fitting(build, topology, mesh, start=program.rows,
                               unit=unit, compiler_options=compiler_options)
        result = dataclasses.replace(result, max_rows=best)
      out[name] = result
  return out


def _gib(x: float) -> str:
  for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
    if x >= size:
      return f"{x / size:.2f} {unit}"
  return f"{int(x)} B"


def describe(results: Mapping[str, Result], topology: aot.TopologyInfo,
             mesh) -> str:
  """A human summary of `preflight`'s results."""
  chip = topology.chip
  lines = [f"pre-flight on {topology.name} ({topology.num_chips} x "
           f"{chip.name if chip else topology.device_kind}), mesh "
           f"{parallel.describe(mesh)}; times are ESTIMATES of the compiled "
           "programs (entropy_rl.aot), not measurements"]
  for name, r in results.items():
    lines.append(f"[{name}] " + "; ".join(r.notes))
    lines.append(f"  memory per chip: params {_gib(r.params_bytes)}, "
                 f"optimizer {_gib(r.optimizer_bytes)}, other args "
                 f"{_gib(r.other_args_bytes)}")
    if r.report is None:
      lines.append(f"  DOES NOT FIT: {r.error}")
    else:
      lines.extend("  " + line for line in r.report.describe().splitlines()
                   if "loop while" not in line)
      if r.mfu is not None:
        unit = "trained" if name == "train" else "generated"
        lines.append(f"  est. {r.estimated_seconds * 1e3:.1f} ms/step, MFU "
                     f"{100 * r.mfu:.1f}%, {r.tokens_per_second:,.0f} "
                     f"{unit} tokens/s")
    for flag in r.flags:
      lines.append(f"  FLAG: {flag}")
    if r.max_rows is not None:
      what = "rows" if name == "train" else "prompts"
      per = r.max_rows / max(1, mesh.size)
      lines.append(f"  largest batch that fits: {r.max_rows} {what} "
                   f"({per:g} per chip)")
  return "\n".join(lines)
