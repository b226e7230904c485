"""Per-token vocabulary statistics without materialising [N, V] logits.

For hidden states h [N, D], an LM head W [D, V] and temperature τ the logits
are z = h·W / τ. The statistics every method reads are, per token n::

    lse_n = log Σ_v exp z_nv                      (log-partition)
    ℓ_n   = z_{n,y_n} − lse_n                     (log π(y_n), ``logp``)
    H_n   = lse_n − Σ_v p_nv z_nv,  p = softmax(z) (``entropy``)
    m_n   = max_v z_nv                            (``max_logit``, no gradient)

:func:`token_stats` computes them with an online softmax: tokens are processed
in chunks (``lax.map``) and, inside a chunk, the vocabulary in chunks
(``lax.scan``) whose body is wrapped in ``jax.checkpoint``. The forward pass
keeps one [tc, vc] block alive, and the backward pass recomputes each block
instead of storing it, so neither pass holds an [N, V] (or [tc, V]) float32
array. Methods that need more than these four numbers declare *vocabulary
reductions* (:class:`~entropy_rl.core.types.MonoidReduction` for associative
ones, :class:`~entropy_rl.core.types.RowReduction` for order statistics);
this module is the engine that runs them, and `entropy_rl.core.reductions`
holds the online-softmax monoid and the catalogue's reductions (SIREN's
nucleus entropy, Lp-Reg's min-p proxy, ERA's scaled log-probs).

Sharded batches: inside ``jax.set_mesh`` whose mesh has the row axes of
:class:`StatsSharding` (``data``, ``fsdp``), the pass runs under
``jax.shard_map``: each device computes the statistics of its own rows
with the whole (gathered) LM head, so no [tc, vc] logit block ever crosses
devices; with a ``tensor`` axis the LM head stays split over the
vocabulary and each device reduces its vocabulary slice, the per-token
online-softmax states ([tc] floats) being combined across it. The same
numbers as one device (tested on 8 fake devices).

References:
  Online softmax: Milakov & Gimelshein 2018, https://arxiv.org/abs/1805.02867.
  Gradient checkpointing: Chen et al. 2016, https://arxiv.org/abs/1604.06174.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from entropy_rl.core import reductions as reductions_lib
from entropy_rl.core import types

Array = types.Array
MonoidReduction = types.MonoidReduction
RowReduction = types.RowReduction
VocabReduction = types.VocabReduction
Needs = types.Needs
sg = lax.stop_gradient

NEG = reductions_lib.NEG
CORE = reductions_lib.CORE  # the online softmax: logp, entropy, lse, max_logit
CORE_KEYS = ("logp", "entropy", "lse", "max_logit")
RESIDUAL_NAME = reductions_lib.RESIDUAL_NAME
_SUBLANE = 8  # token chunks are rounded up to a multiple of this

# Deprecated aliases: the reductions and their helpers moved to
# `entropy_rl.core.reductions`; import them from there.
saved_residual = reductions_lib.saved_residual
masked_entropy = reductions_lib.masked_entropy
nucleus_threshold = reductions_lib.nucleus_threshold
scaled_logp = reductions_lib.scaled_logp
topk_logits = reductions_lib.topk_logits
topk_logp = reductions_lib.topk_logp
nucleus_entropy = reductions_lib.nucleus_entropy
nucleus_entropy_topk = reductions_lib.nucleus_entropy_topk
minp_logp = reductions_lib.minp_logp


# ----------------------------------------------------------------------------
# The pass.


def _split_reductions(reductions: Mapping[str, VocabReduction]
                      ) -> tuple[dict[str, MonoidReduction],
                                 dict[str, RowReduction]]:
  monoids, rows = {}, {}
  for name, r in reductions.items():
    if not isinstance(name, str) or not name or name in CORE_KEYS:
      raise ValueError(f"reduction name {name!r} must be a non-empty string "
                       f"other than {CORE_KEYS}")
    if isinstance(r, MonoidReduction):
      monoids[name] = r
    elif isinstance(r, RowReduction):
      rows[name] = r
    else:
      raise ValueError(f"reductions[{name!r}] is a {type(r).__name__}; "
                       "expected a MonoidReduction or a RowReduction")
  return monoids, rows


def _put(out: dict[str, Array], name: str, value: Any) -> None:
  """Stores a reduction result; a dict result gives keys ``name/suffix``."""
  if isinstance(value, Mapping):
    for suffix, v in value.items():
      out[f"{name}/{suffix}" if suffix else name] = v
  else:
    out[name] = value


def _chunk_all(z: Array, offset: Array | int, targets: Array,
               monoids: Mapping[str, MonoidReduction]) -> tuple[Any, Any]:
  return (CORE.chunk(z, offset, targets),
          {k: r.chunk(z, offset, targets) for k, r in monoids.items()})


def _combine_all(a: tuple[Any, Any], b: tuple[Any, Any],
                 monoids: Mapping[str, MonoidReduction]) -> tuple[Any, Any]:
  return (CORE.combine(a[0], b[0]),
          {k: r.combine(a[1][k], b[1][k]) for k, r in monoids.items()})


def _finalize_all(carry: tuple[Any, Any],
                  monoids: Mapping[str, MonoidReduction],
                  rows: Mapping[str, RowReduction] | None = None,
                  z: Array | None = None,
                  targets: Array | None = None) -> dict[str, Array]:
  core = CORE.finalize(carry[0], None)
  out = dict(core)
  for name, r in monoids.items():
    _put(out, name, r.finalize(carry[1][name], core))
  for name, r in (rows or {}).items():
    _put(out, name, r.fn(z, targets, core))
  return out


def _row_stats(z: Array, targets: Array,
               monoids: Mapping[str, MonoidReduction],
               rows: Mapping[str, RowReduction]) -> dict[str, Array]:
  """All statistics of full rows z [n, V] (float32)."""
  return _finalize_all(_chunk_all(z, 0, targets, monoids), monoids, rows, z,
                       targets)


def _logits(h: Array, w: Array, temperature: Any, compute_dtype: Any) -> Array:
  """z = h·W / τ with float32 accumulation; h [n, D], w [D, c] -> [n, c]."""
  z = jnp.dot(h.astype(compute_dtype), w.astype(compute_dtype),
              preferred_element_type=jnp.float32)
  return z / temperature


def _vocab_scan(h: Array, w: Array, targets: Array,
                monoids: Mapping[str, MonoidReduction], temperature: Any,
                vocab_chunk: int, compute_dtype: Any,
                vocab_offset: Array | int = 0) -> tuple[Any, Any]:
  """Online reduction over vocabulary chunks of one token chunk.

  ⌊V / vc⌋ full chunks run in a ``lax.scan``; a remainder of V mod vc columns
  runs once more after it with its own static width, so no column is padded
  and no copy of W is made. Each step is checkpointed: the backward pass
  recomputes its [n, vc] logits block. ``vocab_offset`` is the global id
  of W's first column (a vocabulary shard).
  """
  v = w.shape[1]
  n_full, rem = divmod(v, vocab_chunk)

  def block(carry, start, width):
    w_c = lax.dynamic_slice_in_dim(w, start, width, axis=1)  # [D, width]
    z = _logits(h, w_c, temperature, compute_dtype)  # [n, width] f32
    return _combine_all(
        carry, _chunk_all(z, start + vocab_offset, targets, monoids), monoids)

  @functools.partial(jax.checkpoint, prevent_cse=False)
  def step(carry, j):
    return block(carry, j * vocab_chunk, vocab_chunk), None

  n = h.shape[0]
  carry = (CORE.init(n), {k: r.init(n) for k, r in monoids.items()})
  carry = _varying_like(carry, h, w)
  carry, _ = lax.scan(step, carry, jnp.arange(n_full, dtype=jnp.int32))
  if rem:
    tail = jax.checkpoint(
        functools.partial(block, start=n_full * vocab_chunk, width=rem),
        prevent_cse=False)
    carry = tail(carry)
  return carry


def _varying_like(tree: Any, *refs: Array) -> Any:
  """``tree`` marked as varying over the mesh axes ``refs`` vary over.

  Inside ``jax.shard_map`` a loop's constant initial state must have the
  type of the state the body returns (which varies with the device's rows
  and vocabulary slice); a no-op elsewhere.
  """
  axes = set()
  for r in refs:
    axes |= _varying_axes(r)
  if not axes:
    return tree

  def cast(x):
    missing = tuple(sorted(axes - _varying_axes(x)))
    return lax.pcast(x, missing, to="varying") if missing else x
  return jax.tree.map(cast, tree)


def _varying_axes(x: Array) -> set[str]:
  """The manual mesh axes ``x`` varies over (empty outside shard_map)."""
  t = jax.typeof(x)
  manual = getattr(t, "manual_axis_type", None)
  if manual is not None:
    return set(manual.varying)
  return set(getattr(t, "vma", ()))


def _token_chunking(n: int, token_chunk: int) -> tuple[int, int]:
  """(number of chunks, chunk size ≤ token_chunk) with little padding."""
  n_chunks = max(1, -(-n // token_chunk))
  tc = -(-n // n_chunks)
  if tc > _SUBLANE:
    tc = min(token_chunk, -(-tc // _SUBLANE) * _SUBLANE)
  return n_chunks, max(tc, 1)


def _map_tokens(fn, xs: tuple[Array, ...], n: int, token_chunk: int
                ) -> dict[str, Array]:
  """``lax.map`` of ``fn`` over token chunks of xs (leading dim n).

  N is padded up to n_chunks·tc (at most a few tokens with balanced chunks)
  with zeros; the padded outputs are sliced away, so their cotangent is 0.
  """
  n_chunks, tc = _token_chunking(n, token_chunk)
  pad = n_chunks * tc - n

  def split(x):
    if pad:
      x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
    return x.reshape((n_chunks, tc) + x.shape[1:])

  out = lax.map(fn, tuple(split(x) for x in xs))
  return {k: v.reshape((n_chunks * tc,) + v.shape[2:])[:n]
          for k, v in out.items()}


class StatsSharding(NamedTuple):
  """Mesh axes of the sharded statistics pass (see the module docstring).

  Attributes:
    rows: mesh axes the token rows are split over (the batch axes).
    vocab: mesh axis the LM head's vocabulary is split over, or None.
    params: the row axes the LM head's D dimension is split over (FSDP):
      each device gathers it inside the pass, so its gradient leaves as a
      reduce-scatter instead of an all-reduce of the whole [D, V].
  """
  rows: tuple[str, ...] = ("data", "fsdp")
  vocab: str | None = "tensor"
  params: tuple[str, ...] = ("fsdp",)


def _shard_plan(sharding: StatsSharding | None, n: int, d: int, v: int,
                has_rows: bool):
  """(row axes, vocab axis, D axes of the LM head) of the enclosing mesh
  that split N, V and D, or None when nothing is split (no mesh, or size-1
  / non-dividing axes)."""
  if sharding is None:
    return None
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return None
  sizes = dict(zip(mesh.axis_names, mesh.axis_sizes))
  rows = tuple(a for a in sharding.rows if sizes.get(a, 1) > 1)
  if rows and n % math.prod(sizes[a] for a in rows):
    rows = ()
  vocab = sharding.vocab
  # Row reductions see whole rows: the vocabulary is gathered for them.
  if (vocab is None or sizes.get(vocab, 1) == 1 or v % sizes[vocab] or
      has_rows or vocab in rows):
    vocab = None
  if not rows and vocab is None:
    return None
  params = tuple(a for a in sharding.params if a in rows)
  if params and d % math.prod(sizes[a] for a in params):
    params = ()
  return rows, vocab, params


def _gather_invariant(x: Array, axis: str, size: int) -> Array:
  """[size, ...]: every shard's ``x`` on every shard, as one ``psum`` of
  the shards' slots (varying -> invariant: its transpose hands each shard
  the cotangent of its own slot; ``all_gather``'s result stays varying)."""
  slots = jnp.zeros((size,) + x.shape, x.dtype)
  return lax.psum(slots.at[lax.axis_index(axis)].set(x), axis)


def _combine_across(carry: Any, axis: str, size: int,
                    monoids: Mapping[str, MonoidReduction]) -> Any:
  """Folds the monoid states of the ``size`` vocabulary shards, in shard
  order (so ties keep lower vocabulary ids first, as on one device)."""
  gathered = jax.tree.map(lambda x: _gather_invariant(x, axis, size), carry)
  acc = jax.tree.map(lambda x: x[0], gathered)
  for i in range(1, size):
    acc = _combine_all(acc, jax.tree.map(lambda x, i=i: x[i], gathered),
                       monoids)
  return acc


def _check_temperature(temperature: Any) -> None:
  if isinstance(temperature, (int, float)) and not temperature > 0:
    raise ValueError(f"temperature must be > 0, got {temperature}")


def token_stats(hidden: Array, lm_head: Array, targets: Array, *,
                reductions: Mapping[str, VocabReduction] = {},
                temperature: float | Array = 1.0, token_chunk: int = 1024,
                vocab_chunk: int = 4096, compute_dtype: Any = None,
                sharding: StatsSharding | None = StatsSharding()
                ) -> dict[str, Array]:
  """Per-token log-prob, entropy and declared reductions, chunked.

  With z = h·W / τ (float32 accumulation) and p = softmax(z)::

      logp = z_y − lse,   entropy = lse − Σ_v p_v z_v,   lse = log Σ_v e^{z_v}

  plus ``max_logit`` = max_v z_v (no gradient) and one entry per reduction
  (a dict-valued result ``{suffix: [N]}`` gives keys ``"name/suffix"``, and
  the empty suffix gives ``"name"``).

  Monoid mode (no :class:`RowReduction`): ``lax.map`` over token chunks, an
  inner ``lax.scan`` over vocabulary chunks whose body is ``jax.checkpoint``-ed
  (the online softmax, running max under stop-gradient, identity NEG = −1e30).
  Neither the forward nor the backward pass holds a [tc, V] or [N, V] float32
  array; the backward pass recomputes each [tc, vc] block (4 matrix products
  instead of 3). The W gradient is one [D, V] accumulator in W's dtype.

  Row mode (any :class:`RowReduction`): each token chunk gets full rows
  [tc, V] under a ``jax.checkpoint`` of the chunk function that saves only
  values marked with :func:`saved_residual`; memory is O(tc·V).

  N need not divide by ``token_chunk`` (chunks are balanced and the last one
  zero-padded) nor V by ``vocab_chunk`` (a remainder chunk). bfloat16
  ``hidden``/``lm_head`` are multiplied in ``compute_dtype`` (default: their
  promoted dtype) with float32 accumulation; all statistics are float32 and
  the per-chunk hidden gradient accumulates over vocabulary chunks in
  float32. Pass float32 ``lm_head`` and ``compute_dtype=jnp.bfloat16`` to get
  bfloat16 products with a float32 W-gradient accumulator.

  Args:
    hidden: [N, D] final hidden states (after the final norm).
    lm_head: [D, V] output projection (for a tied embedding E [V, D], E.T).
    targets: [N] int token ids in [0, V) (outside: the target logit is 0).
    reductions: name -> :class:`MonoidReduction` | :class:`RowReduction`.
    temperature: τ > 0 (a Python float or a scalar array).
    token_chunk: maximum tokens per chunk (tc).
    vocab_chunk: vocabulary columns per chunk (vc), monoid mode.
    compute_dtype: dtype of the matrix products (default: promoted input).
    sharding: the mesh axes of the sharded pass (used inside a
      ``jax.set_mesh`` whose mesh has them; see the module docstring), or
      None for the single-device program whatever the mesh.

  Returns:
    Dict of float32 [N] arrays (a reduction may add trailing dims):
    ``logp``, ``entropy``, ``lse``, ``max_logit`` and the reductions.

  Raises:
    ValueError: on bad shapes, chunk sizes, temperature or reductions.
  """
  if hidden.ndim != 2 or lm_head.ndim != 2:
    raise ValueError(f"hidden must be [N, D] and lm_head [D, V]; got shapes "
                     f"{tuple(hidden.shape)} and {tuple(lm_head.shape)}")
  n, d = hidden.shape
  if lm_head.shape[0] != d:
    raise ValueError(f"lm_head has shape {tuple(lm_head.shape)}, expected "
                     f"[{d}, V] for hidden of shape {tuple(hidden.shape)}")
  if tuple(targets.shape) != (n,) or not jnp.issubdtype(targets.dtype,
                                                        jnp.integer):
    raise ValueError(f"targets must be int [{n}], got {targets.dtype} "
                     f"{tuple(targets.shape)}")
  if token_chunk < 1 or vocab_chunk < 1:
    raise ValueError(f"token_chunk and vocab_chunk must be >= 1, got "
                     f"{token_chunk} and {vocab_chunk}")
  _check_temperature(temperature)
  monoids, rows = _split_reductions(reductions)
  cdt = compute_dtype or jnp.result_type(hidden.dtype, lm_head.dtype)
  targets = targets.astype(jnp.int32)
  plan = _shard_plan(sharding, n, d, lm_head.shape[1], bool(rows))
  if plan is None:
    return _local_stats(hidden, lm_head, targets, temperature, monoids, rows,
                        token_chunk, vocab_chunk, cdt)
  row_axes, vocab_axis, param_axes = plan
  row_spec = jax.P(row_axes or None)
  temp = jnp.asarray(temperature, jnp.float32)

  def local(h, w, y, temp):
    if param_axes:  # FSDP: gather W's D dimension here (grad: scatter)
      w = lax.all_gather(w, param_axes, axis=0, tiled=True)
    if vocab_axis is None:
      return _local_stats(h, w, y, temp, monoids, rows, token_chunk,
                          vocab_chunk, cdt)
    size = lax.axis_size(vocab_axis)
    offset = lax.axis_index(vocab_axis) * w.shape[1]
    return _local_stats(h, w, y, temp, monoids, rows, token_chunk,
                        vocab_chunk, cdt, vocab_offset=offset,
                        combine=lambda c: _combine_across(c, vocab_axis, size,
                                                          monoids))

  return jax.shard_map(
      local, in_specs=(jax.P(row_axes or None, None),
                       jax.P(param_axes or None, vocab_axis), row_spec,
                       jax.P()),
      out_specs=row_spec)(hidden, lm_head, targets, temp)


def _local_stats(hidden: Array, lm_head: Array, targets: Array,
                 temperature: Any, monoids: Mapping[str, MonoidReduction],
                 rows: Mapping[str, RowReduction], token_chunk: int,
                 vocab_chunk: int, cdt: Any, vocab_offset: Array | int = 0,
                 combine=None) -> dict[str, Array]:
  """The pass on one device's rows and vocabulary columns; ``combine``
  folds a token chunk's monoid states across vocabulary shards."""
  n = hidden.shape[0]
  vc = min(vocab_chunk, lm_head.shape[1])

  if rows:
    policy = jax.checkpoint_policies.save_only_these_names(RESIDUAL_NAME)

    @functools.partial(jax.checkpoint, policy=policy, prevent_cse=False)
    def chunk_fn(xs):
      h, y = xs
      z = _logits(h, lm_head, temperature, cdt)  # [tc, V] f32
      return _row_stats(z, y, monoids, rows)
  else:

    def chunk_fn(xs):
      h, y = xs
      # float32 h: its cotangent sums over vocabulary chunks in float32.
      carry = _vocab_scan(h.astype(jnp.float32), lm_head, y, monoids,
                          temperature, vc, cdt, vocab_offset)
      if combine is not None:
        carry = combine(carry)
      return _finalize_all(carry, monoids)

  return _map_tokens(chunk_fn, (hidden, targets), n, token_chunk)


def token_stats_from_logits(logits: Array, targets: Array, *,
                            temperature: float | Array = 1.0,
                            reductions: Mapping[str, VocabReduction] = {}
                            ) -> dict[str, Array]:
  """The same statistics from materialised logits (the naive path).

  For models that already return logits [..., V]: z = logits / τ in float32
  (−inf logits, e.g. a masked vocabulary, are clamped to NEG), every
  reduction sees full rows. Memory is that of the logits plus a float32
  copy; prefer :func:`token_stats` from hidden states for long batches.

  Args:
    logits: [N, V] or [B, T, V] logits (any float dtype).
    targets: int token ids, logits.shape[:-1].
    temperature: τ > 0.
    reductions: name -> reduction (monoids run on the whole row).

  Returns:
    Dict of float32 arrays of shape logits.shape[:-1] (plus any trailing
    dims of a reduction): ``logp``, ``entropy``, ``lse``, ``max_logit``, ...
  """
  if logits.ndim < 2 or tuple(targets.shape) != tuple(logits.shape[:-1]):
    raise ValueError(f"logits must be [..., V] with targets [...]; got "
                     f"shapes {tuple(logits.shape)} and "
                     f"{tuple(targets.shape)}")
  _check_temperature(temperature)
  monoids, rows = _split_reductions(reductions)
  lead, v = logits.shape[:-1], logits.shape[-1]
  z = jnp.maximum(logits.reshape(-1, v).astype(jnp.float32) / temperature, NEG)
  out = _row_stats(z, targets.reshape(-1).astype(jnp.int32), monoids, rows)
  return {k: x.reshape(lead + x.shape[1:]) for k, x in out.items()}


def token_stats_naive(hidden: Array, lm_head: Array, targets: Array,
                      temperature: float | Array = 1.0) -> dict[str, Array]:
  """Reference: materialises z = h·W / τ [N, V] and uses log_softmax.

  Returns:
    Dict of float32 [N]: ``logp``, ``entropy``, ``lse``, ``max_logit``.
  """
  z = jnp.dot(hidden, lm_head, preferred_element_type=jnp.float32)
  z = z / temperature  # [N, V]
  logp_all = jax.nn.log_softmax(z, -1)  # [N, V]
  return dict(
      logp=jnp.take_along_axis(logp_all, targets[:, None], -1)[:, 0],
      entropy=-jnp.sum(jnp.exp(logp_all) * logp_all, -1),
      lse=jax.nn.logsumexp(z, -1),
      max_logit=sg(jnp.max(z, -1)))


def batched_token_stats(hidden: Array, lm_head: Array, targets: Array,
                        **kwargs: Any) -> dict[str, Array]:
  """:func:`token_stats` for hidden [B, T, D] and targets [B, T].

  Returns:
    Dict of [B, T] arrays (same keys as :func:`token_stats`).
  """
  if hidden.ndim != 3 or tuple(targets.shape) != tuple(hidden.shape[:2]):
    raise ValueError(f"hidden must be [B, T, D] and targets [B, T]; got "
                     f"shapes {tuple(hidden.shape)} and "
                     f"{tuple(targets.shape)}")
  b, t, d = hidden.shape
  out = token_stats(hidden.reshape(b * t, d), lm_head,
                    targets.reshape(b * t), **kwargs)
  return {k: v.reshape((b, t) + v.shape[1:]) for k, v in out.items()}


def stats_for_needs(hidden: Array, lm_head: Array, targets: Array,
                    needs: Needs, *, old: bool = False,
                    temperature: float | Array = 1.0, token_chunk: int = 1024,
                    vocab_chunk: int = 4096, compute_dtype: Any = None,
                    sharding: StatsSharding | None = StatsSharding()
                    ) -> dict[str, Array]:
  """The one statistics pass a transform's :class:`Needs` asks for.

  Computes ``logp``, ``entropy``, ``lse``, ``max_logit`` and the reductions of
  ``needs.vocab`` (current policy, with gradient) or, with ``old=True``, of
  ``needs.old_vocab`` (old policy: the inputs are stop-gradient, so nothing
  is kept for a backward pass). Callers put ``logp``/``entropy`` into
  ``PolicyBatch.logp``/``entropy`` (or ``old_logp``/``old_entropy``) and the
  reduction keys into ``vocab_stats`` (``old_vocab_stats``).

  Args:
    hidden: [N, D] or [B, T, D].
    lm_head: [D, V].
    targets: [N] or [B, T] int.
    needs: the transform's static declaration.
    old: the old-policy pass (``needs.old_vocab``, no gradient).
    temperature, token_chunk, vocab_chunk, compute_dtype, sharding: as in
      :func:`token_stats`.

  Returns:
    Dict of arrays shaped like ``targets``.
  """
  reductions = needs.old_vocab if old else needs.vocab
  if old:
    hidden, lm_head = sg(hidden), sg(lm_head)
  kwargs = dict(reductions=reductions, temperature=temperature,
                token_chunk=token_chunk, vocab_chunk=vocab_chunk,
                compute_dtype=compute_dtype, sharding=sharding)
  if hidden.ndim == 3:
    return batched_token_stats(hidden, lm_head, targets, **kwargs)
  return token_stats(hidden, lm_head, targets, **kwargs)
