"""Meshes, partition rules and sharded steps.

Step functions in entropy_rl know nothing of meshes. This module builds a
``jax.sharding.Mesh`` with axes ``("data", "fsdp", "tensor")``, maps each
parameter's logical axes (or, failing that, its path) to a ``PartitionSpec``
by rules, and wraps a pure step in ``jax.jit`` with in/out shardings and
donation -- the big_vision / MaxText recipe. Multi-host runs use
``jax.distributed``; JAX itself is the distributed engine.

Example::

    mesh = parallel.make_mesh((-1, 1, 1))            # data-parallel
    specs = parallel.param_specs(params, logical_axes, mesh=mesh)
    state_sh = parallel.tree_shardings(
        parallel.state_specs(abstract_state, specs), mesh)
    step = parallel.shard_train_step(step_fn, mesh=mesh,
                                     state_sharding=state_sh)
    state, metrics = step(state, parallel.shard_batch(batch, mesh))

Axis types are ``AxisType.Auto`` (jax 0.10 makes ``jax.make_mesh`` Explicit
by default; Auto lets XLA propagate activations' shardings from the
parameters' and the batch's, with no annotation in the step).
"""

from __future__ import annotations

import logging
import math
import os
import re
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# Logical axis -> mesh axis (or tuple of mesh axes, or None = replicated).
# The first matching rule wins; a mesh axis is used at most once per array.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", BATCH_AXES),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("q_heads", "tensor"),
    ("kv_heads", "tensor"),
    ("kv", None),
    ("head_dim", None),
    ("layers", None),
    ("norm", None),
    ("seq", None),
)

# Logical axis -> mesh axes of *activations* (``constrain``). Activations are
# split on the batch axes whatever the parameters' layout: under FSDP
# (weights split on ``embed`` over ``fsdp``) XLA then gathers each layer's
# weights instead of splitting the residual stream on D and replicating the
# batch. Heads and the MLP width follow the weights' ``tensor`` split
# (Megatron-style tensor parallelism); the residual width is never split.
ACTIVATION_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", BATCH_AXES),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("seq", None),
    ("embed", None),
    ("head_dim", None),
)

# Parameters as a decode step wants them: split over ``tensor`` only. Under
# FSDP a sampler would otherwise gather every layer's weights at every
# decode step (XLA does not hoist collectives out of loops); gathering them
# once per rollout costs one all-gather of the parameters.
DECODE_RULES: tuple[tuple[str, Any], ...] = tuple(
    (name, None if name in ("embed", "batch") else axes)
    for name, axes in DEFAULT_RULES)

# Path-regex rules used when a parameter has no logical axes: the first
# regex that ``re.search``es the "/"-joined path gives the spec.
DEFAULT_PATH_RULES: tuple[tuple[str, P], ...] = (
    (r"(embed|wte|tok_emb)", P("tensor", "fsdp")),
    (r"(lm_head|head)", P("fsdp", "tensor")),
    (r"(q_proj|k_proj|v_proj|wq|wk|wv|gate|up|w1|w3|fc1)", P("fsdp", "tensor")),
    (r"(o_proj|wo|down|w2|fc2)", P("tensor", "fsdp")),
)

log = logging.getLogger(__name__)


# ------------------------------------------------------------------- mesh


def resolve_mesh_shape(shape: Sequence[int] | Mapping[str, int],
                       num_devices: int) -> tuple[int, int, int]:
  """Resolves ``(data, fsdp, tensor)`` sizes; one ``-1`` takes the rest.

  Args:
    shape: three ints in :data:`MESH_AXES` order, or a mapping from axis name
      to size (missing axes are 1).
    num_devices: the number of devices the mesh must cover.

  Returns:
    The concrete ``(data, fsdp, tensor)`` sizes, whose product is
    ``num_devices``.
  """
  if isinstance(shape, Mapping):
    unknown = sorted(set(shape) - set(MESH_AXES))
    if unknown:
      raise ValueError(f"mesh shape names unknown axes {unknown}; valid axes "
                       f"are {MESH_AXES}")
    shape = tuple(int(shape.get(a, 1)) for a in MESH_AXES)
  shape = tuple(int(s) for s in shape)
  if len(shape) != len(MESH_AXES):
    raise ValueError(f"mesh shape must have {len(MESH_AXES)} entries "
                     f"{MESH_AXES}, got {shape}")
  if shape.count(-1) > 1:
    raise ValueError(f"mesh shape {shape} has more than one -1")
  if any(s == 0 or s < -1 for s in shape):
    raise ValueError(f"mesh shape {shape} must hold positive sizes or -1")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if num_devices % known:
      raise ValueError(f"mesh shape {shape}: {num_devices} devices are not "
                       f"divisible by {known}")
    shape = tuple(num_devices // known if s == -1 else s for s in shape)
  if math.prod(shape) != num_devices:
    raise ValueError(f"mesh shape {shape} covers {math.prod(shape)} devices, "
                     f"but there are {num_devices}")
  return shape  # type: ignore[return-value]


def make_mesh(shape: Sequence[int] | Mapping[str, int] = (-1, 1, 1), *,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh with axes ``("data", "fsdp", "tensor")`` of ``AxisType.Auto``.

  Args:
    shape: sizes in :data:`MESH_AXES` order (or a name -> size mapping);
      ``-1`` takes the remaining devices; explicit sizes covering fewer
      devices than there are use the first ones.
    devices: the devices (default: all of ``jax.devices()``).

  Returns:
    A ``jax.sharding.Mesh``.
  """
  devices = list(jax.devices() if devices is None else devices)
  if isinstance(shape, Mapping):
    shape = tuple(int(shape.get(a, 1)) for a in MESH_AXES)
  if -1 not in tuple(shape) and 0 < math.prod(shape) < len(devices):
    devices = devices[:math.prod(shape)]  # explicit sizes: a device subset
  sizes = resolve_mesh_shape(shape, len(devices))
  return jax.make_mesh(sizes, MESH_AXES, axis_types=(AxisType.Auto,) * 3,
                       devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
  """The fully replicated sharding on ``mesh``."""
  return NamedSharding(mesh, P())


# ---------------------------------------------------------- partition rules


def _axis_size(mesh: Mesh | None, axes) -> int:
  if mesh is None or axes is None:
    return 1
  axes = (axes,) if isinstance(axes, str) else tuple(axes)
  return math.prod(mesh.shape[a] for a in axes)


def logical_to_spec(logical_axes: Sequence[str | None],
                    rules: Sequence[tuple[str, Any]] = DEFAULT_RULES, *,
                    shape: Sequence[int] | None = None,
                    mesh: Mesh | None = None) -> P:
  """Maps one array's logical axis names to a ``PartitionSpec``.

  Each logical name takes the first rule that names it; unknown names and
  None are replicated. A mesh axis already used by an earlier dimension is
  not reused. With ``shape`` and ``mesh``, a dimension that does not divide
  by its mesh axes' size is replicated instead (logged).

  Args:
    logical_axes: one name (or None) per dimension.
    rules: ``(logical name, mesh axis | tuple of mesh axes | None)`` pairs.
    shape: the array's shape (for the divisibility check).
    mesh: the mesh (for the divisibility check and size-1 axes).

  Returns:
    A ``PartitionSpec`` with one entry per dimension.
  """
  if shape is not None and len(shape) != len(logical_axes):
    raise ValueError(f"logical_axes {tuple(logical_axes)} has "
                     f"{len(logical_axes)} names for an array of shape "
                     f"{tuple(shape)}")
  table: dict[str, Any] = {}
  for name, axes in rules:
    table.setdefault(name, axes)
  used: set[str] = set()
  out = []
  for dim, name in enumerate(logical_axes):
    axes = table.get(name) if name is not None else None
    if axes is not None:
      tup = (axes,) if isinstance(axes, str) else tuple(axes)
      tup = tuple(a for a in tup if a not in used)
      if mesh is not None:
        tup = tuple(a for a in tup if mesh.shape[a] > 1)
      if tup and shape is not None and mesh is not None:
        size = _axis_size(mesh, tup)
        if shape[dim] % size:
          log.info("replicating dim %d (%s, size %d) of shape %s: not "
                   "divisible by mesh axes %s (%d)", dim, name, shape[dim],
                   tuple(shape), tup, size)
          tup = ()
      used.update(tup)
      axes = None if not tup else tup[0] if len(tup) == 1 else tup
    out.append(axes)
  return P(*out)


def _path_str(path) -> str:
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def _fit_spec(spec: P, shape: Sequence[int], mesh: Mesh | None) -> P:
  """Trims a spec to the array's rank and drops non-dividing axes."""
  entries = list(spec)[:len(shape)]
  entries += [None] * (len(shape) - len(entries))
  used: set[str] = set()
  out = []
  for dim, axes in enumerate(entries):
    if axes is None:
      out.append(None)
      continue
    tup = (axes,) if isinstance(axes, str) else tuple(axes)
    tup = tuple(a for a in tup if a not in used)
    if mesh is not None:
      tup = tuple(a for a in tup if mesh.shape[a] > 1)
      if tup and shape[dim] % _axis_size(mesh, tup):
        tup = ()
    used.update(tup)
    out.append(None if not tup else tup[0] if len(tup) == 1 else tup)
  return P(*out)


def path_to_spec(path: str, shape: Sequence[int],
                 path_rules: Sequence[tuple[str, P]] = DEFAULT_PATH_RULES, *,
                 mesh: Mesh | None = None) -> P:
  """The spec of the first path rule whose regex matches (else replicated).

  Arrays of rank < 2 (norm scales, biases) are always replicated; a spec
  longer than the rank is trimmed, and axes that do not divide are dropped.
  """
  if len(shape) < 2:
    return P(*([None] * len(shape)))
  for pattern, spec in path_rules:
    if re.search(pattern, path):
      if len(spec) < len(shape):  # stacked layers: leading layer axis
        spec = P(*([None] * (len(shape) - len(spec)) + list(spec)))
      return _fit_spec(spec, shape, mesh)
  return P(*([None] * len(shape)))


def _is_axes(x) -> bool:
  return isinstance(x, tuple) and all(a is None or isinstance(a, str)
                                      for a in x)


def param_specs(params: Any, logical_axes: Any = None, *,
                rules: Sequence[tuple[str, Any]] = DEFAULT_RULES,
                path_rules: Sequence[tuple[str, P]] = DEFAULT_PATH_RULES,
                mesh: Mesh | None = None) -> Any:
  """``PartitionSpec``s for a parameter pytree.

  Args:
    params: the parameters (arrays or ``ShapeDtypeStruct``s).
    logical_axes: a pytree with the structure of ``params`` whose leaves are
      tuples of logical axis names (e.g. ``entropy_rl.models.logical_axes``),
      or None to use ``path_rules`` on the parameter paths.
    rules: logical-axis rules (see :func:`logical_to_spec`).
    path_rules: ``(regex, PartitionSpec)`` rules for the path fallback.
    mesh: the mesh, for divisibility checks.

  Returns:
    A pytree of ``PartitionSpec`` with the structure of ``params``.
  """
  if logical_axes is not None:
    flat_axes, axes_def = jax.tree.flatten(logical_axes, is_leaf=_is_axes)
    flat_params, params_def = jax.tree.flatten(params)
    if len(flat_axes) != len(flat_params):
      raise ValueError(f"logical_axes has {len(flat_axes)} leaves but params "
                       f"has {len(flat_params)} ({axes_def} vs {params_def})")
    specs = [logical_to_spec(a, rules, shape=p.shape, mesh=mesh)
             for a, p in zip(flat_axes, flat_params)]
    return jax.tree.unflatten(params_def, specs)
  return jax.tree_util.tree_map_with_path(
      lambda path, p: path_to_spec(_path_str(path), p.shape, path_rules,
                                   mesh=mesh), params)


def state_specs(state: Any, params_specs: Any, params: Any = None) -> Any:
  """Specs for a whole train state: every subtree shaped like the params
  (the params, a reference copy, Adam's moments) gets ``params_specs``;
  every other leaf is replicated.

  Args:
    state: the (abstract) state pytree.
    params_specs: the parameters' specs (:func:`param_specs`).
    params: a tree with the parameters' structure (default: the structure of
      ``params_specs``).

  Returns:
    A pytree of ``PartitionSpec`` with the structure of ``state``.
  """
  target = jax.tree.structure(params if params is not None else params_specs,
                              is_leaf=lambda x: isinstance(x, P))
  flat_specs = jax.tree.leaves(params_specs,
                               is_leaf=lambda x: isinstance(x, P))

  def is_params(x):
    if x is None or isinstance(x, P):
      return False
    try:
      return jax.tree.structure(x) == target
    except Exception:  # pylint: disable=broad-except
      return False

  def spec_for(x):
    if is_params(x):
      shapes = [np.shape(l) for l in jax.tree.leaves(x)]
      return jax.tree.unflatten(target, [
          s if len(s) == len(sh) else P() for s, sh in zip(flat_specs, shapes)
      ])
    return P()

  return jax.tree.map(spec_for, state, is_leaf=is_params)


def tree_shardings(specs: Any, mesh: Mesh) -> Any:
  """Turns a pytree of ``PartitionSpec`` into ``NamedSharding``s."""
  return jax.tree.map(lambda s: NamedSharding(mesh, s), specs,
                      is_leaf=lambda x: isinstance(x, P))


# ------------------------------------------------------------- activations


def _context_mesh():
  """The mesh of the enclosing ``jax.set_mesh`` (an ``AbstractMesh``; empty
  outside one)."""
  return jax.sharding.get_abstract_mesh()


def target_platform() -> str:
  """The platform programs are being built for: that of the enclosing
  ``jax.set_mesh`` (e.g. "tpu" when compiling for a TPU topology from a CPU
  host), else ``jax.default_backend()``. Read at trace time by the
  backend-dependent choices (attention kernel, sampler layout)."""
  mesh = _context_mesh()
  if not mesh.empty:
    platform = getattr(mesh.abstract_device, "platform", None)
    if platform:
      return str(platform)
  return jax.default_backend()


def in_mesh() -> bool:
  """True inside ``jax.set_mesh`` of a mesh of several devices (the
  sharded programs)."""
  mesh = _context_mesh()
  return not mesh.empty and mesh.size > 1


def constrain(x: jax.Array, logical_axes: Sequence[str | None],
              rules: Sequence[tuple[str, Any]] = ACTIVATION_RULES, *,
              gather: bool = False) -> jax.Array:
  """Pins an activation's sharding by logical axis names (MaxText's
  logical constraints): ``with_sharding_constraint`` to the spec that
  :func:`logical_to_spec` gives on the enclosing mesh.

  A no-op outside ``jax.set_mesh`` (single-device code, tests, a step that
  was not sharded) and for mesh axes that are not ``Auto`` (an Explicit
  mesh types its arrays itself). Dimensions that do not divide by their
  mesh axes stay unconstrained on those axes.

  Args:
    x: the activation.
    logical_axes: one logical name (or None) per dimension of ``x``, e.g.
      ``("batch", "seq", "embed")``.
    rules: logical name -> mesh axes (default :data:`ACTIVATION_RULES`).
    gather: also pin the dimensions the rules leave unsplit as replicated
      (a parameter gathered before use, e.g. the embedding table before
      its lookup); by default a spec with no split leaves ``x`` free.

  Returns:
    ``x``, constrained.
  """
  mesh = _context_mesh()
  if mesh.empty:
    return x
  if len(logical_axes) != x.ndim:
    raise ValueError(f"constrain: {len(logical_axes)} logical axes "
                     f"{tuple(logical_axes)} for an array of shape {x.shape}")
  auto = {a for a, t in zip(mesh.axis_names, mesh.axis_types)
          if t == AxisType.Auto}
  rules = tuple((name, _keep_axes(axes, auto)) for name, axes in rules)
  spec = logical_to_spec(logical_axes, rules, shape=x.shape, mesh=mesh)
  if not gather and all(s is None for s in spec):
    return x  # nothing to split: leave XLA free (never force replication)
  return jax.lax.with_sharding_constraint(x, spec)


def _keep_axes(axes, names: set[str]):
  """The mesh axes of a rule that exist (Auto) in the mesh, or None."""
  if axes is None:
    return None
  tup = (axes,) if isinstance(axes, str) else tuple(axes)
  tup = tuple(a for a in tup if a in names)
  return None if not tup else tup if len(tup) > 1 else tup[0]


def gather_params(params: Any, logical_axes: Any,
                  rules: Sequence[tuple[str, Any]] = DECODE_RULES) -> Any:
  """Constrains every parameter to ``rules``' spec of its logical axes
  (default :data:`DECODE_RULES`: gathered over the batch axes, still split
  over ``tensor``), for a program that reuses them many times (a
  sampler's decode loop). A no-op outside ``jax.set_mesh`` or without
  logical axes.

  Args:
    params: the parameters.
    logical_axes: a pytree like ``params`` of logical-axis tuples
      (``entropy_rl.models.logical_axes``), or None.
    rules: logical axis -> mesh axes.

  Returns:
    The constrained parameters.
  """
  if logical_axes is None or not in_mesh():
    return params
  flat_axes = jax.tree.leaves(logical_axes, is_leaf=_is_axes)
  flat, treedef = jax.tree.flatten(params)
  if len(flat_axes) != len(flat):
    raise ValueError(f"logical_axes has {len(flat_axes)} leaves but params "
                     f"has {len(flat)}")
  out = [constrain(x, a, rules, gather=True) if len(a) == np.ndim(x) else x
         for x, a in zip(flat, flat_axes)]
  return jax.tree.unflatten(treedef, out)


# ------------------------------------------------------------------ batches


def batch_spec(shape: Sequence[int], mesh: Mesh,
               axes: Sequence[str] = BATCH_AXES) -> P:
  """``P(("data", "fsdp"))`` on the leading dim if it divides, else
  replicated (scalars, odd-sized leaves)."""
  if not shape:
    return P()
  tup = tuple(a for a in axes if mesh.shape[a] > 1)
  if not tup or shape[0] % _axis_size(mesh, tup):
    return P()
  return P(tup if len(tup) > 1 else tup[0])


def batch_shardings(batch: Any, mesh: Mesh,
                    axes: Sequence[str] = BATCH_AXES) -> Any:
  """Data shardings (leading dim over ``data`` x ``fsdp``) for a batch."""
  return jax.tree.map(
      lambda x: NamedSharding(mesh, batch_spec(np.shape(x), mesh, axes)),
      batch)


def shard_batch(batch: Any, mesh: Mesh,
                axes: Sequence[str] = BATCH_AXES) -> Any:
  """Places a host batch on the mesh with the data sharding.

  Single process: ``jax.device_put``. Multi-process: each process passes its
  own rows (a per-process grain shard; every process as many) and the
  global array (rows in process order) is assembled with
  ``jax.make_array_from_process_local_data``; the sharding is chosen from
  the global shape, and a leaf whose global rows do not divide over the
  batch axes is an error (it cannot be replicated: processes hold
  different rows).
  """
  n = jax.process_count()
  if n == 1:
    return jax.device_put(batch, batch_shardings(batch, mesh, axes))

  def put(x):
    x = np.asarray(x)
    if x.ndim == 0:  # a scalar: the same on every process
      return jax.make_array_from_process_local_data(replicated(mesh), x)
    # The spec follows the *global* shape (every process feeds as many
    # rows): a local leading dim need not divide the data axes by itself.
    global_shape = (x.shape[0] * n,) + x.shape[1:]
    spec = batch_spec(global_shape, mesh, axes)
    if spec == P():
      raise ValueError(
          f"a batch leaf of {x.shape[0]} rows per process ({global_shape[0]}"
          f" in all) does not divide over the mesh's batch axes {axes}: "
          "multi-process batches must be sharded on their rows")
    return jax.make_array_from_process_local_data(
        NamedSharding(mesh, spec), x, global_shape)

  return jax.tree.map(put, batch)


# -------------------------------------------------------------------- steps


def shard_train_step(step_fn: Callable, *, mesh: Mesh, state_sharding: Any,
                     batch_sharding: Any = None, metrics_sharding: Any = None,
                     donate: bool = True, extra_in_shardings: tuple = (),
                     compiler_options: Mapping[str, Any] | None = None
                     ) -> Callable:
  """Wraps ``step_fn(state, batch, *extra) -> (state, metrics)`` in ``jax.jit``.

  Args:
    step_fn: a pure step that never mentions the mesh.
    mesh: the mesh.
    state_sharding: pytree of ``NamedSharding`` for the state (in and out).
    batch_sharding: shardings for the batch; None lets jit take the
      argument's own sharding (e.g. from :func:`shard_batch`).
    metrics_sharding: shardings of the metrics (default replicated).
    donate: donate the input state's buffers.
    extra_in_shardings: shardings of further positional arguments.
    compiler_options: XLA options for this one computation (``jax.jit``'s
      ``compiler_options``), e.g. ``{"xla_cpu_experimental_ynn_fusion_type":
      ""}`` for XLA:CPU's own GEMMs in place of YNNPACK (BENCHMARKS.md); an
      option the installed XLA does not know fails at the first call with
      "No such compile option".

  Returns:
    The jitted step; calls run under ``jax.set_mesh(mesh)`` so a model's
    bare-``PartitionSpec`` constraints resolve.
  """
  rep = replicated(mesh)
  jitted = jax.jit(
      step_fn,
      in_shardings=(state_sharding, batch_sharding) + tuple(extra_in_shardings),
      out_shardings=(state_sharding,
                     rep if metrics_sharding is None else metrics_sharding),
      donate_argnums=(0,) if donate else (),
      compiler_options=dict(compiler_options) if compiler_options else None)

  def call(*args):
    with jax.set_mesh(mesh):
      return jitted(*args)

  call.jitted = jitted  # type: ignore[attr-defined]
  call.lower = lambda *a: jitted.lower(*a)  # type: ignore[attr-defined]
  return call


def place(tree: Any, shardings: Any) -> Any:
  """Copies a pytree onto the given shardings (e.g. the state).

  Always copies, so donating the result to a sharded step never deletes the
  caller's arrays (a replicated placement may otherwise reuse the source
  buffer as one of its shards).
  """
  return jax.device_put(jax.tree.map(jnp.copy, tree), shardings)


def init_sharded(init_fn: Callable, shardings: Any, *args) -> Any:
  """Runs ``init_fn(*args)`` under jit with ``out_shardings`` (big_vision):
  large parameters are created directly on their shards."""
  return jax.jit(init_fn, out_shardings=shardings)(*args)


# --------------------------------------------------------------- multi-host


_ENV_VARS = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS")


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None, *,
                           force: bool = False, **kwargs) -> bool:
  """Initialises ``jax.distributed`` for a multi-host run (idempotent).

  Runs when an address is given, a coordinator variable is set in the
  environment (``JAX_COORDINATOR_ADDRESS``), or ``force`` (cluster
  auto-detection: TPU pods, SLURM, Open MPI). A single-host run does nothing.

  Returns:
    True when jax.distributed is initialised after the call.
  """
  if jax.distributed.is_initialized():
    return True
  env = any(os.environ.get(v) for v in _ENV_VARS)
  if coordinator_address is None and not env and not force:
    return False
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes,
                             process_id=process_id, **kwargs)
  return True


def process_shard() -> tuple[int, int]:
  """``(shard_index, shard_count)`` of this process for its data pipeline
  (pass to grain's ``ShardOptions``); ``(0, 1)`` on a single host."""
  return jax.process_index(), jax.process_count()


def local_batch_size(global_batch: int) -> int:
  """Rows this process feeds of a global batch."""
  n = jax.process_count()
  if global_batch % n:
    raise ValueError(f"global batch {global_batch} is not divisible by the "
                     f"{n} processes")
  return global_batch // n


def describe(mesh: Mesh) -> str:
  """A one-line summary, e.g. ``data=4 fsdp=2 tensor=1 (8 cpu devices)``."""
  sizes = " ".join(f"{a}={mesh.shape[a]}" for a in mesh.axis_names)
  plat = mesh.devices.flat[0].platform
  return f"{sizes} ({mesh.devices.size} {plat} devices)"


def is_sharded(x: jax.Array) -> bool:
  """True when ``x`` is split across devices (not fully replicated)."""
  return not x.sharding.is_fully_replicated


__all__ = [
    "ACTIVATION_RULES", "BATCH_AXES", "DECODE_RULES", "DEFAULT_PATH_RULES",
    "DEFAULT_RULES", "MESH_AXES",
    "batch_shardings", "batch_spec", "constrain", "describe", "gather_params", "init_sharded",
    "in_mesh", "initialize_distributed", "is_sharded", "local_batch_size",
    "logical_to_spec", "make_mesh", "param_specs", "path_to_spec", "place",
    "process_shard", "replicated", "resolve_mesh_shape", "shard_batch",
    "shard_train_step", "state_specs", "target_platform",
    "tree_shardings",
]
