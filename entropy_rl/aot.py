"""Ahead-of-time compilation for named TPU slices, and what the program says.

With ``libtpu`` installed (``pip install entropy_rl[tpu]``) a CPU-only
machine can describe a TPU slice by name and compile a step for it. This
module names slices (``topology``), builds meshes over them (``mesh_for``),
compiles (``compile_for``, raising ``DoesNotFit`` when the compiler runs out
of HBM) and reads the compiled program (``analyze``): per-chip memory, the
collectives the partitioner inserted, FLOPs, and an estimated step time.

Example::

    topo = aot.topology("v5e-8")
    mesh = aot.mesh_for(topo, {"data": 2, "fsdp": 4, "tensor": 1})
    compiled = aot.compile_for(step, abstract_args, mesh=mesh)
    report = aot.analyze(compiled, chip=topo.chip, num_chips=topo.num_chips)
    print(report.describe())
    print(report.mfu(model_flops))

How the step time is estimated (an ESTIMATE from the compiler's cost model,
never a measured time):

* Compute. Every scheduled instruction of the optimised TPU HLO carries an
  ``"estimated_cycles"`` field in its ``backend_config`` JSON (fusions,
  copies, convolutions at the call site; the instructions *inside* a fused
  computation carry none, so a fusion is counted once, by its own field, and
  its body is entered only when the call site has no field). Starting from
  the entry computation, cycles are summed; a ``while`` adds its body and
  condition times its trip count (``known_trip_count`` in the while's
  ``backend_config`` when XLA wrote one, else the condition's comparison of
  the induction variable with a constant, its start from the while's initial
  tuple and its step from the body; ``loop_trip_counts`` overrides by while
  name, for data-dependent loops); a ``conditional`` adds its most expensive
  branch; other called computations are added once at their call site.
  Nested loops multiply through. Cycles become seconds at the chip clock
  ``peak_bf16_flops / (2 * MXU MACs per cycle)``.
* Collectives. Synchronous and asynchronous collectives carry no cycles, so
  their time is a separate, non-overlapped bound: bytes moved per chip over
  the chip's ICI bandwidth (one direction, all links), with the ring model
  all-reduce ``2 (n-1)/n * size``, all-gather ``(n-1)/n * size`` (size = the
  gathered result), reduce-scatter ``(n-1) * size`` (size = the scattered
  result, i.e. ``(n-1)/n`` of the input), all-to-all ``(n-1)/n * size``,
  collective-permute ``size``; ``n`` is the replica-group size. Using every
  link makes each collective's bound optimistic; adding it to compute with no
  overlap makes the total conservative. XLA:TPU repeats an async collective
  (same ``channel_id``) in its start, continuation and done fusions, and
  may move continuations (``async_collective_fusion_config`` flags >= 0:
  a part of the transfer) into other computations, such as a windowed
  einsum's loop: it is counted once, where it starts. Collectives in
  ``conditional`` branches count as if every branch ran.
* Pallas (Mosaic) kernels, ``tpu_custom_call``, carry no cycles either:
  ``kernel_seconds`` bounds them below by their operands' and results'
  bytes over HBM bandwidth (splash attention, for one, is undercounted).
* ``estimated_seconds = compute_seconds + kernel_seconds +
  collective_seconds``.

Calibration (libtpu 0.0.42.1, jax 0.10.2): one bf16 ``[4096, 4096] @ [4096,
4096]`` on one chip estimates 1.03x (v5e), 1.15x (v6e), 1.04x (v5p) and 1.14x
(v4) of ``flops / peak``; ``[8192]^3`` gives 1.14x, 1.42x, 1.11x, 1.08x.
These ratios are the cost model's idea of MXU efficiency, not measurements.

Memory: ``fits`` compares with the chip's whole HBM; the compiler itself
refuses a little earlier (15.75 GiB of v5e's 16), raising ``DoesNotFit``.

FLOPs: ``cost_analysis()["flops"]`` counts each loop body once whatever its
trip count (``Report.cost_flops_loops_counted_once`` says whether that
matters). Per-instruction FLOPs cannot be read back reliably from TPU HLO
(batched matmuls become base-dilated convolutions, matrix-vector products
become reductions), so there is no loop-corrected count: pass the model's
FLOPs to ``Report.mfu``. ``cost_analysis()["optimal_seconds"]`` is not
used: each ``ConcatBitcast`` custom call costs it -1 s.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
import sys
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType
from jax.sharding import Mesh

MESH_AXES = ("data", "fsdp", "tensor")
_GIB = 2**30


# --------------------------------------------------------------------------
# Chips and topologies.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Chip:
  """Published figures for one TPU chip (all TensorCores of the chip).

  Attributes:
    name: short name, as in topology names ("v5e").
    peak_bf16_flops: peak dense bf16 FLOP/s per chip.
    hbm_bytes: HBM capacity per chip.
    hbm_bandwidth: HBM bytes/s per chip.
    ici_bandwidth: inter-chip interconnect bytes/s per chip, one direction,
      all links together (half the published bidirectional figure).
    ici_links: ICI ports per chip.
    mxu_count: matrix units per chip, all TensorCores together.
    mxu_size: side of each (square) matrix unit.
    tensorcores: TensorCores per chip (Cloud names of v4/v5p count these).
    device_kind: ``jax.Device.device_kind`` of such a chip.
    dims: 2 for a 2D torus (v5e, v6e), 3 for 3D (v4, v5p).
    cloud_prefixes: accelerator-type prefixes in Cloud slice names.
  """

  name: str
  peak_bf16_flops: float
  hbm_bytes: int
  hbm_bandwidth: float
  ici_bandwidth: float
  ici_links: int
  mxu_count: int
  mxu_size: int
  tensorcores: int
  device_kind: str
  dims: int
  cloud_prefixes: tuple[str, ...]

  @property
  def mxu_macs_per_cycle(self) -> int:
    return self.mxu_count * self.mxu_size * self.mxu_size

  @property
  def clock_hz(self) -> float:
    """Clock implied by the peak: peak / (2 FLOPs per MAC * MACs per cycle)."""
    return self.peak_bf16_flops / (2 * self.mxu_macs_per_cycle)

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["clock_hz"] = self.clock_hz
    d["mxu_macs_per_cycle"] = self.mxu_macs_per_cycle
    return d


# Peak, HBM and HBM bandwidth: /work/shared/tpu-aot.md (Google Cloud's TPU
# system-architecture pages). ICI: the same pages give bidirectional bytes/s
# per chip -- v5e 400 GB/s (older page: 1,600 Gbit/s), v6e 800 GB/s, v5p
# 1,200 GB/s (4,800 Gbit/s); v4's page gives none, so v4 uses the commonly
# published 2,400 Gbit/s. We store one direction (half). MXUs: v5e 1
# TensorCore x 4 MXUs of 128x128; v5p and v4 2 TensorCores x 4 x 128x128;
# v6e: the Cloud page says one TensorCore with two 256x256 MXUs, but the
# XLA:TPU cost model's cycles for a 4096^3 matmul imply ~228k MACs/cycle, so
# we use 4 x 256x256 (262,144 MACs/cycle). Clocks: v5e 1.50 GHz, v6e 1.75,
# v5p 1.75, v4 1.05.
CHIPS: dict[str, Chip] = {
    "v4": Chip(
        name="v4", peak_bf16_flops=275e12, hbm_bytes=32 * _GIB,
        hbm_bandwidth=1228e9, ici_bandwidth=2400e9 / 8, ici_links=6,
        mxu_count=8, mxu_size=128, tensorcores=2, device_kind="TPU v4",
        dims=3, cloud_prefixes=("v4",)),
    "v5e": Chip(
        name="v5e", peak_bf16_flops=197e12, hbm_bytes=16 * _GIB,
        hbm_bandwidth=819e9, ici_bandwidth=400e9 / 2, ici_links=4,
        mxu_count=4, mxu_size=128, tensorcores=1, device_kind="TPU v5 lite",
        dims=2, cloud_prefixes=("v5e", "v5litepod")),
    "v5p": Chip(
        name="v5p", peak_bf16_flops=459e12, hbm_bytes=95 * _GIB,
        hbm_bandwidth=2765e9, ici_bandwidth=1200e9 / 2, ici_links=6,
        mxu_count=8, mxu_size=128, tensorcores=2, device_kind="TPU v5",
        dims=3, cloud_prefixes=("v5p",)),
    "v6e": Chip(
        name="v6e", peak_bf16_flops=918e12, hbm_bytes=32 * _GIB,
        hbm_bandwidth=1640e9, ici_bandwidth=800e9 / 2, ici_links=4,
        mxu_count=4, mxu_size=256, tensorcores=1, device_kind="TPU v6 lite",
        dims=2, cloud_prefixes=("v6e",)),
}

# Colab's TPU runtimes (one chip each), as Cloud-style names for topology().
COLAB_RUNTIMES = ("v5e-1", "v6e-1")

_EXAMPLES = ("v5e-1", "v5e-4", "v5e-8", "v5litepod-16", "v6e-1", "v6e-8",
             "v5p-8", "v4-8", "v5e:2x4", "v6e:2x2", "v5p:2x2x1", "v4:2x2x1")
_MAX_CHIPS = {2: 256, 3: 4096}  # Pod sizes: v5e/v6e 256, v4 4096.


@dataclasses.dataclass(frozen=True)
class TopologyInfo:
  """A (possibly abstract) set of TPU devices to compile for.

  Attributes:
    name: the JAX topology name ("v5e:2x4"), or "local:<platform>".
    cloud_name: the Cloud slice name ("v5e-8"), when there is one.
    devices: the devices (abstract ``TpuDevice``s for a named slice).
    device_kind: ``devices[0].device_kind``.
    chip: the chip's figures, or None for a device that is not a known TPU.
    num_chips: chips in the slice.
    shape: the chip grid ((2, 4) for "v5e:2x4"); () for local non-TPU.
  """

  name: str
  cloud_name: str | None
  devices: tuple[Any, ...]
  device_kind: str
  chip: Chip | None
  num_chips: int
  shape: tuple[int, ...]

  @property
  def num_devices(self) -> int:
    return len(self.devices)


def _bad_name(name: str, why: str) -> ValueError:
  return ValueError(
      f"topology name {name!r}: {why}. Valid names are JAX topology names "
      "'<chip>:<XxY>' (v5e, v6e) or '<chip>:<XxYxZ>' (v4, v5p), or Cloud "
      "slice names '<chip>-<n>' (n counts chips for v5e/v5litepod/v6e, "
      f"TensorCores for v4/v5p, 2 per chip); chips {sorted(CHIPS)}; "
      f"e.g. {', '.join(_EXAMPLES)}.")


def _default_shape(chip: Chip, num_chips: int) -> tuple[int, ...]:
  """Cloud's default slice shape for a chip count (v5p-64 -> 2x4x4)."""
  if chip.dims == 2 and num_chips == 1:
    return (1, 1)
  shape = [2, 2] if chip.dims == 2 else [2, 2, 1]
  while math.prod(shape) < num_chips:
    smallest = min(shape)
    i = max(j for j, s in enumerate(shape) if s == smallest)
    shape[i] *= 2
  return tuple(shape)


def _parse_name(name: str) -> tuple[Chip, tuple[int, ...], str | None]:
  """(chip, shape, cloud name) of a JAX or Cloud topology name."""
  if not isinstance(name, str):
    raise _bad_name(repr(name), "not a string")
  text = name.strip().lower()
  m = re.fullmatch(r"(v\d+[a-z]*):(\d+(?:x\d+)+)", text)
  if m:
    chip = CHIPS.get(m.group(1))
    if chip is None:
      raise _bad_name(name, f"unknown chip {m.group(1)!r}")
    shape = tuple(int(s) for s in m.group(2).split("x"))
    if len(shape) != chip.dims or min(shape) < 1:
      raise _bad_name(name, f"{chip.name} needs {chip.dims} positive dims")
    return chip, shape, None
  m = re.fullmatch(r"(v\d+[a-z]*)-(\d+)", text)
  if m:
    chip = next((c for c in CHIPS.values()
                 if m.group(1) in c.cloud_prefixes), None)
    if chip is None:
      raise _bad_name(name, f"unknown chip {m.group(1)!r}")
    count = int(m.group(2))
    if count % chip.tensorcores:
      raise _bad_name(name, f"{count} is not a whole number of chips")
    chips = count // chip.tensorcores
    ok = chips >= 1 and chips & (chips - 1) == 0
    ok = ok and chips <= _MAX_CHIPS[chip.dims]
    ok = ok and (chips == 1 if chip.dims == 2 and chips < 4 else chips >= 4)
    if not ok:
      raise _bad_name(name, f"no {chip.name} slice of {chips} chips")
    return chip, _default_shape(chip, chips), f"{m.group(1)}-{count}"
  raise _bad_name(name, "not a topology name")


def _ensure_tpu_env() -> None:
  """Environment for the TPU plugin; must run before it initialises."""
  # No metadata server to ask on a CPU machine.
  os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
  # Several processes (pytest workers, other engineers) may hold libtpu.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")


@functools.lru_cache(maxsize=None)
def _topology_devices(jax_name: str, host_bounds: tuple[int, ...] | None,
                      megacore: bool) -> tuple[Any, ...]:
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  _ensure_tpu_env()
  kwargs: dict[str, Any] = {}
  if host_bounds is not None:
    kwargs["chips_per_host_bounds"] = list(host_bounds)
  if megacore:
    kwargs["chip_config_name"] = "megacore"
  desc = topologies.get_topology_desc(
      platform="tpu", topology_name=jax_name, **kwargs)
  return tuple(desc.devices)


def topology(name: str) -> TopologyInfo:
  """Describes a named TPU slice, for compiling on a machine without one.

  Args:
    name: a JAX topology name ("v5e:2x4", "v6e:1x1", "v5p:2x2x1") or a Cloud
      slice name ("v5e-8", "v5litepod-8", "v6e-1", "v5p-8", "v4-8"). Cloud
      names of v5e/v6e count chips; of v4/v5p, TensorCores (2 per chip), so
      "v5p-8" is 4 chips, "v5p:2x2x1". See also ``COLAB_RUNTIMES``.

  Returns:
    A ``TopologyInfo`` with one abstract device per chip (v4 and v5p in
    megacore mode, as their VMs run).

  Raises:
    ValueError: for a name that is not a known chip or slice.
    RuntimeError: when libtpu is not installed.
  """
  chip, shape, cloud_name = _parse_name(name)
  jax_name = f"{chip.name}:{'x'.join(map(str, shape))}"
  # libtpu's default host is 2x2x1 chips; smaller slices need host bounds
  # that divide them.
  default = (2, 2, 1)[:len(shape)]
  bounds = tuple(math.gcd(s, d) for s, d in zip(shape, default))
  host_bounds = None
  if bounds != default:
    host_bounds = bounds + (1,) * (3 - len(bounds))
  try:
    devices = _topology_devices(jax_name, host_bounds, chip.name == "v4")
  except Exception as e:  # pylint: disable=broad-except
    msg = str(e)
    if "INVALID_ARGUMENT" in msg or "NOT_FOUND" in msg:
      raise _bad_name(name, f"libtpu rejected it ({msg.splitlines()[0]})"
                      ) from e
    raise RuntimeError(
        f"cannot describe TPU topology {jax_name!r}: {msg}. AOT compilation "
        "for TPU needs libtpu (pip install 'entropy_rl[tpu]').") from e
  return TopologyInfo(
      name=jax_name, cloud_name=cloud_name, devices=devices,
      device_kind=devices[0].device_kind, chip=chip,
      num_chips=math.prod(shape), shape=shape)


def chip_for_device_kind(device_kind: str) -> Chip | None:
  """The ``Chip`` of a ``jax.Device.device_kind``, or None if not a TPU."""
  kind = device_kind.lower()
  if "v6" in kind:
    return CHIPS["v6e"]
  if "v5 lite" in kind or "v5e" in kind or "v5lite" in kind:
    return CHIPS["v5e"]
  if "v5" in kind:
    return CHIPS["v5p"]
  if "v4" in kind:
    return CHIPS["v4"]
  return None


def local() -> TopologyInfo:
  """Describes the devices this process runs on (all of the slice's hosts).

  The chip figures are filled in when the device kind is a known TPU; for a
  GPU or CPU ``chip`` is None.
  """
  devices = tuple(jax.devices())
  kind = devices[0].device_kind
  chip = chip_for_device_kind(kind) if devices[0].platform == "tpu" else None
  coords = {tuple(getattr(d, "coords", ())) for d in devices}
  num_chips = len(coords) if chip is not None and len(coords) > 1 else len(
      devices)
  shape: tuple[int, ...] = ()
  if chip is not None:
    shape = tuple(int(x) + 1 for x in np.max(np.array(list(coords)), axis=0))
  return TopologyInfo(
      name=f"local:{devices[0].platform}", cloud_name=None, devices=devices,
      device_kind=kind, chip=chip, num_chips=num_chips, shape=shape)


def mesh_for(topology_info: TopologyInfo,
             shape: Mapping[str, int] | Sequence[int],
             axis_names: Sequence[str] = MESH_AXES) -> Mesh:
  """A ``Mesh`` with ``AxisType.Auto`` axes over a topology's devices.

  Args:
    topology_info: from ``topology`` or ``local``.
    shape: ``{"data": 2, "fsdp": 4}`` (axis names from the keys, in order)
      or a tuple of sizes matched with ``axis_names``.
    axis_names: names for a tuple ``shape``.

  Returns:
    The mesh; devices are laid out by ``mesh_utils.create_device_mesh`` so
    that mesh axes follow the physical torus where they can.

  Raises:
    ValueError: when the sizes' product is not the number of devices, or
      the names and sizes do not match.
  """
  if isinstance(shape, Mapping):
    names = tuple(shape)
    sizes = tuple(int(v) for v in shape.values())
  else:
    sizes = tuple(int(v) for v in shape)
    names = tuple(axis_names)
    if len(names) != len(sizes):
      raise ValueError(
          f"shape {tuple(shape)} has {len(sizes)} sizes but axis_names "
          f"{names} has {len(names)}; pass one name per size.")
  n = topology_info.num_devices
  if math.prod(sizes) != n or min(sizes, default=1) < 1:
    raise ValueError(
        f"mesh shape {dict(zip(names, sizes))} has {math.prod(sizes)} "
        f"devices but topology {topology_info.name!r} has {n}; the sizes "
        f"must be positive and multiply to {n}.")
  devices = list(topology_info.devices)
  try:
    grid = mesh_utils.create_device_mesh(
        sizes, devices, allow_split_physical_axes=True)
  except Exception:  # pylint: disable=broad-except
    grid = np.array(devices, dtype=object).reshape(sizes)
  return Mesh(grid, names, axis_types=(AxisType.Auto,) * len(names))


# --------------------------------------------------------------------------
# Compiling.
# --------------------------------------------------------------------------


class DoesNotFit(RuntimeError):
  """The compiler ran out of device memory (RESOURCE_EXHAUSTED).

  Attributes:
    compiler_message: the compiler's own message.
    required_bytes: bytes the compiler asked for, when the message says
      (rounded as printed, e.g. "20.00G"), else None.
    available_bytes: bytes it had, when the message says, else None.
  """

  def __init__(self, compiler_message: str,
               required_bytes: int | None = None,
               available_bytes: int | None = None):
    self.compiler_message = compiler_message
    self.required_bytes = required_bytes
    self.available_bytes = available_bytes
    need = "?" if required_bytes is None else _fmt_bytes(required_bytes)
    have = "?" if available_bytes is None else _fmt_bytes(available_bytes)
    super().__init__(
        f"does not fit in device memory: needs {need}, has {have}. "
        f"Compiler: {compiler_message}")


_SIZE = r"([\d.]+)\s*([KMGTP]?)i?B?"
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50}


def _size_bytes(number: str, unit: str) -> int:
  return int(round(float(number) * _UNITS[unit]))


def _parse_oom(message: str) -> tuple[int | None, int | None]:
  """(required, available) bytes from an XLA:TPU out-of-memory message."""
  patterns = (
      # "... required for HLO temporaries (40.00G) exceeds available HBM
      # (15.75G)."
      (rf"required[^()]*\({_SIZE}\)", rf"available[^()]*\({_SIZE}\)"),
      # "Used 20.00G of 15.75G hbm."
      (rf"Used {_SIZE} of", rf"Used [\d.]+\s*[KMGTP]?i?B? of {_SIZE}"),
  )
  for need_re, have_re in patterns:
    need = re.search(need_re, message)
    if need:
      have = re.search(have_re, message)
      return (_size_bytes(*need.groups()),
              _size_bytes(*have.groups()) if have else None)
  return None, None


def _is_oom(message: str) -> bool:
  lowered = message.lower()
  return ("resource_exhausted" in lowered or "out of memory" in lowered
          or "ran out of memory" in lowered)


def compile_for(fn: Callable[..., Any], abstract_args: Sequence[Any], *,
                mesh: Mesh | None = None, in_shardings: Any = None,
                out_shardings: Any = None,
                donate_argnums: int | Sequence[int] = (),
                compiler_options: Mapping[str, Any] | None = None
                ) -> jax.stages.Compiled:
  """``jax.jit(fn, ...).lower(*abstract_args).compile()``, under the mesh.

  Args:
    fn: the function (a step).
    abstract_args: ``jax.ShapeDtypeStruct`` pytrees (with shardings over a
      topology's devices) or arrays, one per positional argument.
    mesh: set with ``jax.set_mesh`` while lowering and compiling.
    in_shardings: passed to ``jax.jit`` when given.
    out_shardings: passed to ``jax.jit`` when given.
    donate_argnums: passed to ``jax.jit``.
    compiler_options: XLA options for ``compile``.

  Returns:
    The ``jax.stages.Compiled`` program.

  Raises:
    DoesNotFit: when the compiler runs out of HBM.
  """
  kwargs: dict[str, Any] = {"donate_argnums": donate_argnums}
  if in_shardings is not None:
    kwargs["in_shardings"] = in_shardings
  if out_shardings is not None:
    kwargs["out_shardings"] = out_shardings
  jitted = jax.jit(fn, **kwargs)

  def run():
    lowered = jitted.lower(*abstract_args)
    if compiler_options:
      return lowered.compile(compiler_options=dict(compiler_options))
    return lowered.compile()

  try:
    if mesh is None:
      return run()
    with jax.set_mesh(mesh):
      return run()
  except Exception as e:  # pylint: disable=broad-except
    message = str(e)
    if not _is_oom(message):
      raise
    raise DoesNotFit(message, *_parse_oom(message)) from e


# --------------------------------------------------------------------------
# Reading the optimised HLO text.
# --------------------------------------------------------------------------


@dataclasses.dataclass
class _Instr:
  name: str
  type_text: str      # result type, layouts included
  opcode: str
  operands: list[str]  # operand instruction names (or literal text)
  attrs: str          # attributes, metadata and backend_config removed
  backend: str        # backend_config text ("" when none)
  is_root: bool
  op_name: str = ""   # metadata op_name (the JAX operation), if any


@dataclasses.dataclass
class _Computation:
  name: str
  instrs: list[_Instr]
  by_name: dict[str, _Instr]
  is_entry: bool

  @property
  def root(self) -> _Instr | None:
    return next((i for i in self.instrs if i.is_root),
                self.instrs[-1] if self.instrs else None)


_COMP_HEADER = re.compile(r"^(ENTRY\s+)?%([\w.\-]+)\s*\(.*\{\s*$")
_INSTR = re.compile(r"^\s+(ROOT\s+)?%([\w.\-]+)\s*=\s*(.*)$", re.DOTALL)
_ARRAY = re.compile(r"\b(pred|token|[a-z]+\d+[a-z0-9]*)\[([\d,]*)\]")
_DTYPE_BITS = {"pred": 8, "s4": 4, "u4": 4, "s2": 2, "u2": 2}


def _matching(text: str, start: int) -> int:
  """Index just past the bracket that closes text[start]."""
  pairs = {"(": ")", "{": "}", "[": "]"}
  close = pairs[text[start]]
  depth, quote = 0, False
  for i in range(start, len(text)):
    ch = text[i]
    if ch == '"' and (i == 0 or text[i - 1] != "\\"):
      quote = not quote
    elif quote:
      continue
    elif ch == text[start]:
      depth += 1
    elif ch == close:
      depth -= 1
      if depth == 0:
        return i + 1
  return len(text)


def _split_operands(text: str) -> list[str]:
  out, depth, cur = [], 0, []
  for ch in text:
    if ch in "([{":
      depth += 1
    elif ch in ")]}":
      depth -= 1
    if ch == "," and depth == 0:
      out.append("".join(cur))
      cur = []
    else:
      cur.append(ch)
  if cur:
    out.append("".join(cur))
  names = []
  for o in out:
    o = re.sub(r"/\*.*?\*/", "", o).strip()
    m = re.search(r"%([\w.\-]+)\s*$", o)
    names.append(m.group(1) if m else o)
  return names


def _parse_instr(line: str) -> _Instr | None:
  m = _INSTR.match(line)
  if not m:
    return None
  rest = m.group(3)
  if rest.startswith("("):
    end = _matching(rest, 0)
  else:
    end = rest.find(" ")
    end = len(rest) if end < 0 else end
  type_text, rest = rest[:end], rest[end:]
  m2 = re.match(r"\s*([a-z][\w\-]*)\(", rest)
  if not m2:
    return None
  opcode = m2.group(1)
  open_at = m2.end() - 1
  close_at = _matching(rest, open_at)
  operands = _split_operands(rest[open_at + 1:close_at - 1])
  attrs = rest[close_at:]
  backend = ""
  k = attrs.find("backend_config=")
  if k >= 0:
    backend = attrs[k:]
    attrs = attrs[:k]
  op = re.search(r'metadata=\{[^}]*?op_name="([^"]*)"', attrs)
  attrs = re.sub(r"metadata=\{[^}]*\}", "", attrs)
  return _Instr(name=m.group(2), type_text=type_text, opcode=opcode,
                operands=operands, attrs=attrs, backend=backend,
                is_root=bool(m.group(1)), op_name=op.group(1) if op else "")


def _balance(line: str, state: tuple[int, bool, bool]
             ) -> tuple[int, bool, bool]:
  """(bracket depth, in a quoted string, after a backslash) after a line."""
  depth, quote, escape = state
  for ch in line:
    if escape:
      escape = False
    elif quote:
      if ch == "\\":
        escape = True
      elif ch == '"':
        quote = False
    elif ch == '"':
      quote = True
    elif ch in "([{":
      depth += 1
    elif ch in ")]}":
      depth -= 1
  return depth, quote, escape


def _logical_lines(text: str):
  """Lines, with an instruction's continuation lines joined to it.

  Attributes such as a Pallas kernel's ``kernel_metadata`` span lines; one
  can start with "}" at column 0, so an instruction ends where its brackets
  balance (outside quoted strings), or at the next computation header.
  """
  pending, state = None, (0, False, False)
  for line in text.splitlines():
    if pending is not None:
      if _COMP_HEADER.match(line):
        yield pending
        pending = None
      else:
        pending += "\n" + line
        state = _balance(line, state)
        if state[0] <= 0 and not state[1]:
          yield pending
          pending = None
        continue
    if not _INSTR.match(line):
      yield line
      continue
    state = _balance(line, (0, False, False))
    if state[0] <= 0 and not state[1]:
      yield line
    else:
      pending = line
  if pending is not None:
    yield pending


def _parse_module(text: str) -> tuple[dict[str, _Computation], str, str]:
  """Computations by name, the entry's name, and the module header line."""
  comps: dict[str, _Computation] = {}
  entry, header, cur = "", "", None
  for line in _logical_lines(text):
    if line.startswith("HloModule"):
      header = line
      continue
    m = _COMP_HEADER.match(line)
    if m:
      if cur is not None:
        comps[cur.name] = cur
      cur = _Computation(m.group(2), [], {}, bool(m.group(1)))
      if cur.is_entry:
        entry = cur.name
      continue
    if cur is None:
      continue
    if line.strip() == "}":
      comps[cur.name] = cur
      cur = None
      continue
    instr = _parse_instr(line)
    if instr is not None:
      cur.instrs.append(instr)
      cur.by_name[instr.name] = instr
  if not entry:
    raise ValueError("compiled: no ENTRY computation in compiled.as_text().")
  return comps, entry, header


def _called(instr: _Instr) -> list[tuple[str, str]]:
  """(role, computation) pairs an instruction calls."""
  out = []
  for role, name in re.findall(
      r"\b(calls|body|condition|to_apply|true_computation|"
      r"false_computation)=%?([\w.\-]+)", instr.attrs):
    out.append((role, name))
  for role, names in re.findall(
      r"\b(branch_computations|called_computations|calls)=\{([^}]*)\}",
      instr.attrs):
    for name in re.findall(r"%?([\w.\-]+)", names):
      out.append((role, name))
  return out


def _arrays(type_text: str) -> list[tuple[str, tuple[int, ...]]]:
  return [(dt, tuple(int(d) for d in dims.split(",") if d))
          for dt, dims in _ARRAY.findall(type_text)]


def _nbytes(arrays: list[tuple[str, tuple[int, ...]]]) -> int:
  total = 0
  for dtype, dims in arrays:
    if dtype == "token":
      continue
    bits = _DTYPE_BITS.get(dtype)
    if bits is None:
      m = re.search(r"(\d+)", dtype)
      bits = int(m.group(1)) if m else 8
    total += math.prod(dims) * bits // 8
  return total


def _cycles(instr: _Instr) -> int | None:
  found = re.findall(r'"estimated_cycles":"?(\d+)', instr.backend)
  return max(int(c) for c in found) if found else None


# --------------------------------------------------------------------------
# Loops.
# --------------------------------------------------------------------------


_PASS_THROUGH = ("copy", "convert", "bitcast", "reshape", "broadcast")


def _resolve(comp: _Computation, name: str, depth: int = 0
             ) -> tuple[str, int] | None:
  """("const", v) or ("param", tuple index) for a scalar in a loop comp."""
  instr = comp.by_name.get(name)
  if instr is None or depth > 20:
    return None
  if instr.opcode == "constant":
    try:
      return ("const", int(float(instr.operands[0])))
    except (ValueError, IndexError):
      return None
  if instr.opcode in _PASS_THROUGH and instr.operands:
    return _resolve(comp, instr.operands[0], depth + 1)
  if instr.opcode == "get-tuple-element":
    src = comp.by_name.get(instr.operands[0])
    m = re.search(r"\bindex=(\d+)", instr.attrs)
    if src is not None and src.opcode == "parameter" and m:
      return ("param", int(m.group(1)))
  return None


def _tuple_element(comp: _Computation, tuple_name: str, index: int
                   ) -> str | None:
  instr = comp.by_name.get(tuple_name)
  while instr is not None and instr.opcode in ("copy",):
    instr = comp.by_name.get(instr.operands[0])
  if instr is None or instr.opcode != "tuple" or index >= len(instr.operands):
    return None
  return instr.operands[index]


def _compare_in(comps: Mapping[str, _Computation], cond: _Computation
                ) -> tuple[tuple[str, int] | None, tuple[str, int] | None,
                           str] | None:
  """(lhs, rhs, direction) of the condition's root comparison."""
  root = cond.root
  if root is None:
    return None
  if root.opcode == "compare":
    m = re.search(r"direction=(\w+)", root.attrs)
    return (_resolve(cond, root.operands[0]), _resolve(cond, root.operands[1]),
            m.group(1) if m else "")
  if root.opcode == "fusion":
    callee = next((c for r, c in _called(root) if r == "calls"), None)
    inner = comps.get(callee) if callee else None
    if inner is None or inner.root is None or inner.root.opcode != "compare":
      return None
    m = re.search(r"direction=(\w+)", inner.root.attrs)

    def outer(name):
      instr = inner.by_name.get(name)
      while instr is not None and instr.opcode in _PASS_THROUGH:
        instr = inner.by_name.get(instr.operands[0])
      if instr is None:
        return None
      if instr.opcode == "constant":
        return _resolve(inner, instr.name)
      if instr.opcode == "parameter":
        k = int(instr.operands[0])
        return _resolve(cond, root.operands[k]) if k < len(
            root.operands) else None
      return None

    return (outer(inner.root.operands[0]), outer(inner.root.operands[1]),
            m.group(1) if m else "")
  return None


def _infer_trip_count(comps: Mapping[str, _Computation], parent: _Computation,
                      loop: _Instr) -> int | None:
  """Trip count from the condition, initial tuple and body; None if unsure."""
  called = dict(_called(loop))
  cond, body = comps.get(called.get("condition", "")), comps.get(
      called.get("body", ""))
  if cond is None or body is None or not loop.operands:
    return None
  compared = _compare_in(comps, cond)
  if compared is None:
    return None
  lhs, rhs, direction = compared
  flip = {"LT": "GT", "LE": "GE", "GT": "LT", "GE": "LE", "NE": "NE"}
  if lhs is not None and lhs[0] == "const":
    lhs, rhs, direction = rhs, lhs, flip.get(direction, "")
  if lhs is None or lhs[0] != "param" or rhs is None:
    return None
  k = lhs[1]
  init_tuple = loop.operands[0]

  def init_value(index):
    element = _tuple_element(parent, init_tuple, index)
    got = _resolve(parent, element) if element else None
    return got[1] if got and got[0] == "const" else None

  def body_element(index):
    root = body.root
    if root is None or root.opcode != "tuple" or index >= len(root.operands):
      return None
    return body.by_name.get(root.operands[index])

  if rhs[0] == "param":  # A loop-invariant limit carried in the tuple.
    passed = body_element(rhs[1])
    if passed is None or _resolve(body, passed.name) != ("param", rhs[1]):
      return None
    limit = init_value(rhs[1])
  else:
    limit = rhs[1]
  start = init_value(k)
  update = body_element(k)
  if limit is None or start is None or update is None:
    return None
  while update.opcode in _PASS_THROUGH and update.operands:
    update = body.by_name.get(update.operands[0])
    if update is None:
      return None
  if update.opcode not in ("add", "subtract") or len(update.operands) != 2:
    return None
  a, b = (_resolve(body, o) for o in update.operands)
  if a == ("param", k) and b and b[0] == "const":
    step = b[1]
  elif update.opcode == "add" and b == ("param", k) and a and a[0] == "const":
    step = a[1]
  else:
    return None
  if update.opcode == "subtract":
    step = -step
  if step == 0:
    return None
  if direction in ("LT", "LE") and step > 0:
    span = limit - start + (1 if direction == "LE" else 0)
    return max(0, -(-span // step))
  if direction in ("GT", "GE") and step < 0:
    span = start - limit + (1 if direction == "GE" else 0)
    return max(0, -(-span // -step))
  if direction == "NE" and (limit - start) % step == 0:
    return max(0, (limit - start) // step)
  return None


# --------------------------------------------------------------------------
# The report.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Memory:
  """Per-chip memory from ``compiled.memory_analysis()`` (bytes)."""

  argument_bytes: int
  output_bytes: int
  alias_bytes: int
  temp_bytes: int
  generated_code_bytes: int
  total_bytes: int     # arguments + temp + output - alias + code
  hbm_bytes: int       # the chip's HBM
  fits: bool           # total_bytes <= hbm_bytes


@dataclasses.dataclass(frozen=True)
class Collective:
  """One collective of the partitioned program, per chip.

  Attributes:
    kind: "all-gather", "all-reduce", "reduce-scatter", "all-to-all",
      "collective-permute", ...
    name: the HLO instruction's name.
    computation: the HLO computation that holds it.
    result_type: its result type without layouts ("bf16[1024,1024]").
    dtype: dtype of its (first) result array.
    shape: shape of its (first) result array.
    bytes: result bytes per execution (all result arrays).
    group_size: devices per replica group (collective-permute: devices in
      its source-target pairs).
    count: executions per step (loop trip counts multiplied through).
    moved_bytes: bytes each chip sends per execution (the ring model).
    seconds: count * moved_bytes / ICI bandwidth.
  """

  kind: str
  name: str
  computation: str
  result_type: str
  dtype: str
  shape: tuple[int, ...]
  bytes: int
  group_size: int
  count: int
  moved_bytes: float
  seconds: float


@dataclasses.dataclass(frozen=True)
class Loop:
  """A ``while`` loop: its trip count, where it came from, how often run.

  ``source`` is "override" (``loop_trip_counts``), "backend_config"
  (XLA's ``known_trip_count``), "condition" (parsed), or "unknown" (counted
  as 1 trip). ``runs`` is how many times the body runs per step.
  """

  name: str
  computation: str
  body: str
  trip_count: int
  source: str
  runs: int


@dataclasses.dataclass(frozen=True)
class Kernel:
  """A Mosaic (Pallas) kernel, which XLA's cost model does not cost.

  A ``tpu_custom_call`` carries no ``estimated_cycles``; its time is bounded
  below by moving its operands and results through HBM once:
  ``seconds = runs * bytes / chip.hbm_bandwidth``.
  """

  name: str
  computation: str
  runs: int
  bytes: int
  seconds: float


@dataclasses.dataclass(frozen=True)
class HotSpot:
  """One scheduled instruction's share of the estimated compute cycles.

  Attributes:
    name: the instruction ("fusion.12", "convolution.3").
    opcode: its opcode.
    op_name: the JAX operation it came from (``metadata={op_name=...}``).
    cycles: ``estimated_cycles`` of one execution times its runs per step.
    runs: executions per step (its computation's loop multiplicity).
  """

  name: str
  opcode: str
  op_name: str
  cycles: int
  runs: int


def _fmt_bytes(n: float) -> str:
  for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
    if abs(n) >= size:
      return f"{n / size:.2f} {unit}"
  return f"{int(n)} B"


def _fmt_seconds(s: float) -> str:
  if s >= 1:
    return f"{s:.3f} s"
  if s >= 1e-3:
    return f"{s * 1e3:.3f} ms"
  return f"{s * 1e6:.1f} us"


@dataclasses.dataclass(frozen=True)
class Report:
  """What a compiled program says, per chip. Times are ESTIMATES.

  Attributes:
    chip: the chip figures used.
    num_chips: chips the program runs on.
    memory: per-chip memory.
    collectives: each logical collective (async start/done pairs once).
    collective_totals: per kind: count, bytes (result bytes x count),
      moved_bytes and seconds.
    loops: the while loops and their trip counts.
    compute_cycles: summed ``estimated_cycles``, loops multiplied.
    compute_seconds: ``compute_cycles / chip.clock_hz``.
    kernels: Pallas/Mosaic kernels, which carry no cycles.
    kernel_flops: the FLOPs the caller says those kernels execute per
      chip (e.g. splash attention's, which the caller can count), or 0.
    kernel_seconds: ``max(HBM-traffic bound (see Kernel), kernel_flops /
      peak)``: a lower bound (the kernels at the MXU's peak).
    hot_spots: the scheduled instructions with the most estimated cycles
      per step (loop runs included), most first.
    collective_seconds: sum of the collectives' seconds (not overlapped).
    estimated_seconds: compute + kernel + collective seconds.
    cost_flops: ``cost_analysis()["flops"]`` (per chip, loop bodies once).
    cost_flops_loops_counted_once: True when some loop runs more than once,
      so ``cost_flops`` undercounts.
    warnings: things the estimate could not resolve.
  """

  chip: Chip
  num_chips: int
  memory: Memory
  collectives: tuple[Collective, ...]
  collective_totals: dict[str, dict[str, float]]
  loops: tuple[Loop, ...]
  compute_cycles: int
  compute_seconds: float
  kernels: tuple[Kernel, ...]
  kernel_flops: float
  kernel_seconds: float
  hot_spots: tuple[HotSpot, ...]
  collective_seconds: float
  estimated_seconds: float
  cost_flops: float | None
  cost_flops_loops_counted_once: bool
  warnings: tuple[str, ...]

  def mfu(self, model_flops: float) -> float:
    """model_flops / (estimated_seconds * peak * num_chips).

    Args:
      model_flops: the whole step's FLOPs over all chips (e.g. 6 N D for a
        training step).
    """
    if self.estimated_seconds <= 0:
      raise ValueError(
          f"estimated_seconds is {self.estimated_seconds}; MFU needs a "
          "positive estimate (the program had no estimated cycles).")
    return model_flops / (self.estimated_seconds * self.chip.peak_bf16_flops
                          * self.num_chips)

  def large_collectives(self, threshold_bytes: int) -> list[Collective]:
    """Collectives whose result is at least ``threshold_bytes``, largest first.

    Large all-gathers of activations or all-reduces of logits usually mean a
    sharding annotation is missing (replicated activations, gathered logits).
    """
    return sorted((c for c in self.collectives if c.bytes >= threshold_bytes),
                  key=lambda c: -c.bytes)

  def to_dict(self) -> dict[str, Any]:
    """A JSON-serialisable dict of every field."""
    d = dataclasses.asdict(self)
    d["chip"] = self.chip.to_dict()
    d["estimate_note"] = (
        "estimated_seconds is an estimate from XLA:TPU estimated_cycles and "
        "an ICI bandwidth bound, not a measured time")
    return json.loads(json.dumps(d))

  def describe(self) -> str:
    """A multi-line human summary."""
    m, c = self.memory, self.chip
    lines = [
        f"AOT report: {self.num_chips} x {c.name} (per chip; times are "
        "estimates, not measurements)",
        f"  memory: args {_fmt_bytes(m.argument_bytes)} + temp "
        f"{_fmt_bytes(m.temp_bytes)} + output {_fmt_bytes(m.output_bytes)} "
        f"- alias {_fmt_bytes(m.alias_bytes)} + code "
        f"{_fmt_bytes(m.generated_code_bytes)} = {_fmt_bytes(m.total_bytes)}"
        f" of {_fmt_bytes(m.hbm_bytes)} HBM: "
        f"{'fits' if m.fits else 'DOES NOT FIT'}",
    ]
    if self.collectives:
      lines.append("  collectives per step:")
      for kind, t in sorted(self.collective_totals.items()):
        lines.append(
            f"    {kind}: {int(t['count'])} runs, "
            f"{_fmt_bytes(t['bytes'])} results, "
            f"{_fmt_bytes(t['moved_bytes'])} moved, "
            f"{_fmt_seconds(t['seconds'])}")
      for col in self.large_collectives(0)[:5]:
        result = col.result_type
        if len(result) > 60:
          result = f"({result.count('[')} arrays, first {col.dtype}" + (
              f"[{','.join(map(str, col.shape))}])")
        lines.append(
            f"    largest: {col.kind} {result} "
            f"({_fmt_bytes(col.bytes)}) x{col.count} over {col.group_size} "
            f"devices [{col.name}]")
    else:
      lines.append("  collectives: none")
    for loop in self.loops:
      lines.append(f"  loop {loop.name}: {loop.trip_count} trips "
                   f"({loop.source}), body runs {loop.runs}x per step")
    kernels = ""
    if self.kernels:
      bound = "FLOPs at peak" if self.kernel_flops and (
          self.kernel_seconds > sum(k.seconds for k in self.kernels)) else (
              "HBM traffic")
      kernels = (f" + {len(self.kernels)} Pallas kernels >= "
                 f"{_fmt_seconds(self.kernel_seconds)} ({bound})")
    lines.append(
        f"  estimate: compute {_fmt_seconds(self.compute_seconds)} "
        f"({self.compute_cycles} cycles at {c.clock_hz / 1e9:.2f} GHz)"
        f"{kernels} + collectives {_fmt_seconds(self.collective_seconds)} "
        f"(bytes / {c.ici_bandwidth / 1e9:.0f} GB/s ICI, not overlapped) = "
        f"{_fmt_seconds(self.estimated_seconds)}")
    if self.cost_flops is not None:
      note = (" (loop bodies counted once: undercounted)"
              if self.cost_flops_loops_counted_once else "")
      lines.append(f"  cost_analysis flops: {self.cost_flops:.4g}{note}")
    for w in self.warnings:
      lines.append(f"  warning: {w}")
    return "\n".join(lines)


_COLLECTIVE_KINDS = ("all-gather", "all-reduce", "reduce-scatter",
                     "all-to-all", "ragged-all-to-all", "collective-permute",
                     "collective-broadcast")


def _collective_kind(opcode: str) -> tuple[str | None, bool]:
  """(kind, is_start) of an opcode; kind None for non-collectives/-done."""
  for kind in _COLLECTIVE_KINDS:
    if opcode == kind:
      return kind, False
    if opcode == kind + "-start":
      return kind, True
  return None, False


def _group_size(instr: _Instr, num_devices: int) -> int:
  attrs = instr.attrs
  m = re.search(r"source_target_pairs=\{(.*?)\}\}", attrs)
  if m:
    ids = set(re.findall(r"\d+", m.group(1)))
    return max(1, len(ids))
  k = attrs.find("replica_groups=")
  if k < 0:
    return num_devices
  text = attrs[k + len("replica_groups="):]
  if text.startswith("mesh["):
    # mesh['axis_0'=4,'axis_1'=1] {'axis_0'}: the named axes' product.
    sizes = dict(re.findall(r"'([^']+)'=(\d+)",
                            text[:_matching(text, 4)]))
    rest = text[_matching(text, 4):].lstrip()
    if rest.startswith("{"):
      chosen = rest[:_matching(rest, 0)]
      sub = re.findall(r"'([^']+)'(?::\((\d+)\)(\d+))?", chosen)
      n = 1
      for axis, _, sub_size in sub:
        n *= int(sub_size) if sub_size else int(sizes.get(axis, 1))
      return max(1, n)
    return num_devices
  if text.startswith("["):
    # Iota groups: [num_groups, group_size]<=[...].
    dims = [int(x) for x in re.findall(r"\d+", text[:_matching(text, 0)])]
    return dims[-1] if dims else num_devices
  if text.startswith("{"):
    groups = text[:_matching(text, 0)]
    first = re.search(r"\{([\d,\s]*)\}", groups[1:])
    if first and first.group(1).strip():
      return len(first.group(1).split(","))
  return num_devices


def _moved_bytes(kind: str, size: int, n: int) -> float:
  if n <= 1 and kind != "collective-permute":
    return 0.0
  if kind == "all-reduce":
    return 2 * (n - 1) / n * size
  if kind == "reduce-scatter":
    return (n - 1) * size
  if kind in ("all-gather", "all-to-all", "ragged-all-to-all"):
    return (n - 1) / n * size
  return float(size)


_ASYNC_FLAGS = re.compile(
    r'"async_collective_fusion_config":\{"flag_start":"(-?\d+)"')


def _strip_layout(type_text: str) -> str:
  text = re.sub(r"\{[^{}]*\}", "", type_text)
  text = re.sub(r"/\*.*?\*/", "", text)
  return re.sub(r"\s+", " ", text).strip()


def _memory(compiled: Any, chip: Chip) -> Memory:
  stats = compiled.memory_analysis()
  if stats is None:
    raise ValueError("compiled: memory_analysis() returned None; compile "
                     "for a TPU topology (see aot.topology).")
  get = lambda k: int(getattr(stats, k, 0) or 0)
  args, out = get("argument_size_in_bytes"), get("output_size_in_bytes")
  alias, temp = get("alias_size_in_bytes"), get("temp_size_in_bytes")
  code = get("generated_code_size_in_bytes")
  total = args + temp + out - alias + code
  return Memory(argument_bytes=args, output_bytes=out, alias_bytes=alias,
                temp_bytes=temp, generated_code_bytes=code, total_bytes=total,
                hbm_bytes=chip.hbm_bytes, fits=total <= chip.hbm_bytes)


def _cost_flops(compiled: Any) -> float | None:
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost or "flops" not in cost:
    return None
  return float(cost["flops"])


def analyze(compiled: jax.stages.Compiled, *, chip: Chip, num_chips: int,
            loop_trip_counts: Mapping[str, int] | None = None,
            kernel_flops: float = 0.0, num_hot_spots: int = 12) -> Report:
  """Memory, collectives, FLOPs and an estimated step time of a program.

  Args:
    compiled: ``jax.jit(f).lower(*abstract_args).compile()`` for a TPU
      topology (``compile_for``).
    chip: the chip's figures (``topology(...).chip`` or ``CHIPS["v5e"]``).
    num_chips: chips the program runs on (for ``Report.mfu``).
    loop_trip_counts: trip counts by while-instruction name ("while.32"; see
      ``Report.loops``) for loops whose count is data-dependent or was not
      found; they replace the inferred ones.
    kernel_flops: FLOPs per chip and step inside Pallas kernels (which XLA
      does not cost); their time is at least this over the chip's peak.
    num_hot_spots: how many of the costliest instructions to list.

  Returns:
    A ``Report``; see the module docstring for the method.
  """
  if not isinstance(chip, Chip):
    raise ValueError(f"chip must be a Chip (one of aot.CHIPS: "
                     f"{sorted(CHIPS)}), got {chip!r}.")
  if not isinstance(num_chips, (int, np.integer)) or num_chips < 1:
    raise ValueError(f"num_chips must be a positive int, got {num_chips!r}.")
  overrides = {k.lstrip("%"): int(v)
               for k, v in (loop_trip_counts or {}).items()}
  comps, entry, header = _parse_module(compiled.as_text())
  m = re.search(r"num_partitions=(\d+)", header)
  r = re.search(r"replica_count=(\d+)", header)
  num_devices = (int(m.group(1)) if m else 1) * (int(r.group(1)) if r else 1)
  warnings: list[str] = []
  unknown_overrides = set(overrides)

  # Trip counts of every while, by name.
  trips: dict[str, tuple[int, str]] = {}
  callers: dict[str, list[tuple[str, _Instr, str]]] = {}
  for comp in comps.values():
    for instr in comp.instrs:
      for role, callee in _called(instr):
        callers.setdefault(callee, []).append((comp.name, instr, role))
      if instr.opcode != "while":
        continue
      if instr.name in overrides:
        trips[instr.name] = (overrides[instr.name], "override")
        unknown_overrides.discard(instr.name)
        continue
      known = re.search(r'"known_trip_count":\{"n":"?(\d+)', instr.backend)
      if known:
        trips[instr.name] = (int(known.group(1)), "backend_config")
        continue
      n = _infer_trip_count(comps, comp, instr)
      if n is None:
        trips[instr.name] = (1, "unknown")
        warnings.append(
            f"trip count of {instr.name} not found (data-dependent?): "
            f"counted once; pass loop_trip_counts={{'{instr.name}': n}}")
      else:
        trips[instr.name] = (n, "condition")
  for name in sorted(unknown_overrides):
    warnings.append(f"loop_trip_counts names {name!r}, which is not a while "
                    f"instruction; whiles: {sorted(trips)}")

  # How many times each computation runs per step.
  @functools.lru_cache(maxsize=None)
  def runs(comp_name: str) -> int:
    if comp_name == entry:
      return 1
    total = 0
    for parent, instr, role in callers.get(comp_name, ()):
      if instr.opcode.endswith(("-done", "-update")):
        continue  # The async op's computation runs once, from its -start.
      factor = 1
      if instr.opcode == "while":
        n = trips[instr.name][0]
        factor = n + 1 if role == "condition" else n
      total += runs(parent) * factor
    return total

  # Estimated cycles of one execution of a computation.
  @functools.lru_cache(maxsize=None)
  def cycles(comp_name: str) -> int:
    comp = comps.get(comp_name)
    if comp is None:
      return 0
    total = 0
    for instr in comp.instrs:
      own = _cycles(instr)
      total += own or 0
      called = _called(instr)
      if instr.opcode == "while":
        n = trips[instr.name][0]
        for role, callee in called:
          total += (n + 1 if role == "condition" else n) * cycles(callee)
      elif instr.opcode == "conditional":
        total += max((cycles(c) for _, c in called), default=0)
      elif own is not None or instr.opcode.endswith(("-done", "-update")):
        continue  # Costed at its call site, or at its -start.
      elif instr.opcode == "call":
        total += sum(cycles(c) for _, c in called)
      else:
        total += sum(cycles(c) for role, c in called if role != "to_apply")
    return total

  limit = sys.getrecursionlimit()
  sys.setrecursionlimit(max(limit, 10000))
  try:
    compute_cycles = cycles(entry)
    comp_runs = {name: runs(name) for name in comps}
  finally:
    sys.setrecursionlimit(limit)

  loops = []
  for comp in comps.values():
    for instr in comp.instrs:
      if instr.opcode == "while":
        body = dict(_called(instr)).get("body", "")
        n, source = trips[instr.name]
        loops.append(Loop(name=instr.name, computation=comp.name, body=body,
                          trip_count=n, source=source,
                          runs=comp_runs.get(comp.name, 0) * n))

  # Collectives: one per channel (TPU async collectives repeat the op, with
  # the same channel_id, in the start, continuation and done fusions).
  done_types: dict[str, str] = {}
  scatter_types: dict[str, str] = {}
  for comp in comps.values():
    for instr in comp.instrs:
      if instr.opcode.endswith("-done") and instr.operands:
        done_types[instr.operands[0]] = instr.type_text
      # XLA:TPU writes a reduce-scatter as a kCustom fusion (emitter
      # "AllReduceScatterFusion") of an all-reduce and a dynamic-slice.
      if instr.opcode == "fusion" and "AllReduceScatter" in instr.backend:
        for _, callee in _called(instr):
          scatter_types[callee] = instr.type_text

  @functools.lru_cache(maxsize=None)
  def home(comp_name: str) -> str:
    """The scheduled computation a fused computation's code runs in."""
    sites = callers.get(comp_name, ())
    if sites and all(i.opcode in ("fusion", "async-start")
                     for _, i, _ in sites):
      return home(sites[0][0])
    return comp_name

  groups: dict[Any, list[tuple[_Computation, _Instr, str]]] = {}
  continuations: list[tuple[Any, _Computation, _Instr, str]] = []
  for comp in comps.values():
    if comp_runs.get(comp.name, 0) == 0:
      continue
    for instr in comp.instrs:
      kind, is_start = _collective_kind(instr.opcode)
      if kind is None:
        continue
      type_text = instr.type_text
      if is_start:
        type_text = done_types.get(instr.name, type_text)
        if type_text.startswith("(") and instr.name not in done_types:
          type_text = "(" + type_text.rsplit(",", 1)[-1]
      if kind == "all-reduce" and comp.name in scatter_types:
        kind, type_text = "reduce-scatter", scatter_types[comp.name]
      # One logical collective per channel and scheduled computation.
      channel = re.search(r"\bchannel_id=(\d+)", instr.attrs)
      key = ((kind, int(channel.group(1)), home(comp.name)) if channel
             else (kind, instr.name, comp.name))
      flags = _ASYNC_FLAGS.search(instr.backend)
      if channel and flags and int(flags.group(1)) >= 0:
        # A continuation: XLA:TPU moves part of an async collective (flags
        # flag_start..flag_end of its transfer) inside other work, often a
        # windowed-einsum loop elsewhere; the collective is counted at its
        # start (flag_start = -1).
        continuations.append(((kind, int(channel.group(1))), comp, instr,
                              type_text))
        continue
      groups.setdefault(key, []).append((comp, instr, type_text))
  started = {(k[0], k[1]) for k in groups if isinstance(k[1], int)}
  for (kind, channel), comp, instr, type_text in continuations:
    if (kind, channel) not in started:  # no start seen: count the pieces
      groups.setdefault((kind, channel, home(comp.name)), []).append(
          (comp, instr, type_text))
  collectives = []
  for (kind, _, _), members in groups.items():
    comp, instr, type_text = max(
        members, key=lambda x: (comp_runs.get(x[0].name, 0),
                                _nbytes(_arrays(x[2]))))
    arrays = _arrays(type_text)
    size = _nbytes(arrays)
    n = _group_size(instr, num_devices)
    count = max(comp_runs.get(c.name, 0) for c, _, _ in members)
    moved = _moved_bytes(kind, size, n)
    collectives.append(Collective(
        kind=kind, name=instr.name, computation=comp.name,
        result_type=_strip_layout(type_text),
        dtype=arrays[0][0] if arrays else "", shape=arrays[0][1] if arrays
        else (), bytes=size, group_size=n, count=count, moved_bytes=moved,
        seconds=count * moved / chip.ici_bandwidth))
  collectives.sort(key=lambda c: (c.kind, c.name))
  totals: dict[str, dict[str, float]] = {}
  for col in collectives:
    t = totals.setdefault(col.kind, {"count": 0, "bytes": 0,
                                     "moved_bytes": 0.0, "seconds": 0.0})
    t["count"] += col.count
    t["bytes"] += col.bytes * col.count
    t["moved_bytes"] += col.moved_bytes * col.count
    t["seconds"] += col.seconds

  kernels = []
  for comp in comps.values():
    for instr in comp.instrs:
      if (instr.opcode != "custom-call" or _cycles(instr) is not None
          or 'custom_call_target="tpu_custom_call"' not in instr.attrs):
        continue
      size = _nbytes(_arrays(instr.type_text)) + sum(
          _nbytes(_arrays(comp.by_name[o].type_text))
          for o in instr.operands if o in comp.by_name)
      count = comp_runs.get(comp.name, 0)
      kernels.append(Kernel(name=instr.name, computation=comp.name,
                            runs=count, bytes=size,
                            seconds=count * size / chip.hbm_bandwidth))
  if kernels:
    warnings.append(
        f"{len(kernels)} Pallas/Mosaic kernel(s) (tpu_custom_call) carry no "
        "estimated_cycles; kernel_seconds counts only their HBM traffic, a "
        "lower bound, and cost_analysis flops may omit their FLOPs")

  spots = []
  for comp in comps.values():
    count = comp_runs.get(comp.name, 0)
    if not count:
      continue
    for instr in comp.instrs:
      own = _cycles(instr)
      if own:
        spots.append(HotSpot(name=instr.name, opcode=instr.opcode,
                             op_name=instr.op_name,
                             cycles=own * count, runs=count))
  spots.sort(key=lambda h: -h.cycles)

  compute_seconds = compute_cycles / chip.clock_hz
  kernel_seconds = max(sum(k.seconds for k in kernels),
                       float(kernel_flops) / chip.peak_bf16_flops)
  collective_seconds = sum(c.seconds for c in collectives)
  if compute_cycles == 0:
    warnings.append("no estimated_cycles in the program (not compiled for "
                    "TPU?): compute time is 0")
  return Report(
      chip=chip, num_chips=int(num_chips), memory=_memory(compiled, chip),
      collectives=tuple(collectives), collective_totals=totals,
      loops=tuple(loops), compute_cycles=int(compute_cycles),
      compute_seconds=compute_seconds, kernels=tuple(kernels),
      kernel_flops=float(kernel_flops), kernel_seconds=kernel_seconds,
      hot_spots=tuple(spots[:num_hot_spots]), collective_seconds=collective_seconds,
      estimated_seconds=compute_seconds + kernel_seconds + collective_seconds,
      cost_flops=_cost_flops(compiled),
      cost_flops_loops_counted_once=any(l.trip_count > 1 for l in loops),
      warnings=tuple(warnings))
