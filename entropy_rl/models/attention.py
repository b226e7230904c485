"""Causal grouped-query self-attention for training and prefill.

One function, `attention`, several implementations chosen by name:

  out_i = Σ_{j ≤ i, mask_j} softmax_j(q_i · k_j) v_j

over left-padded rows (padding first, then real tokens), with K kv heads and
G = H / K query heads per kv head. Queries come already scaled by Dh^-1/2.

* ``"xla"``: the reference; materialises the float32 [B, K, G, S, S] scores
  (the math of the decoder's ``_attend`` without a prefix). CPU default for
  short sequences.
* ``"chunked"``: pure-XLA flash attention (online softmax over key chunks,
  a custom VJP that recomputes the probabilities per block), memory linear
  in S in both passes; blocks above the causal diagonal are skipped.
* ``"splash"``: Pallas TPU splash attention (MQA kernel per kv head,
  padding through segment ids); ``interpret=True`` runs it on CPU.
* ``"cudnn"``: cuDNN flash attention through `jax.nn.dot_product_attention`
  (rows rolled to right padding, which is what its sequence lengths mean).

`resolve` maps ``"auto"`` and a platform to one of them.

Decode steps (one new token per row, attending over a KV cache) have their
own choice, `resolve_decode`: ``"xla"`` (the decoder's einsums over every
slot of the cache) or ``"paged"``, JAX's Pallas TPU paged-attention kernel
through `paged_decode_attention`, which reads only each row's live slots.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas.ops.tpu import splash_attention as splash_lib
from jax.experimental.pallas.ops.tpu.paged_attention import (
    paged_attention_kernel as paged_lib)
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

Array = jax.Array
IMPLEMENTATIONS = ("xla", "chunked", "splash", "cudnn")
_NEG = -1e30  # finite fill of the "xla" scores: empty rows give no NaN
_LANES = 128  # splash blocks are multiples of the TPU lane width
# Mesh axes that shard kv heads when splash runs under an ambient mesh (the
# "tensor" axis of entropy_rl.parallel's mesh); every other axis shards the
# batch.
_HEAD_AXES = ("tensor",)
# Segment ids of the splash path: left padding, real tokens, and the
# positions appended to reach a multiple of the block size.
_PAD_ID, _REAL_ID, _FILL_ID = 0, 1, 2
_CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)
_CPU_DENSE_MAX = 512  # "auto" off TPU/GPU: dense "xla" up to this length
DECODE_IMPLEMENTATIONS = ("xla", "paged")
# Pages of the "paged" decode path: the largest of these dividing the
# cache's slots (the sampler sizes its caches in multiples of the first),
# and about this many keys per block of the kernel's online softmax.
PAGE_SIZES = (64, 32, 16)
_KEYS_PER_BLOCK = 128


def _wide(dtype) -> jnp.dtype:
  """float32, or the compute dtype where it is wider (float64 checks)."""
  return jnp.promote_types(dtype, jnp.float32)


def _round_up(x: int, m: int) -> int:
  return -(-x // m) * m


def _explicit(implementation: str, choices: tuple[str, ...],
              what: str) -> bool:
  """True for one of ``choices``, False for "auto"; raises otherwise."""
  valid = ("auto",) + choices
  if implementation not in valid:
    raise ValueError(f"{what} must be one of {valid}, got "
                     f"{implementation!r}")
  return implementation != "auto"


def resolve(implementation: str, platform: str, seq_len: int, *,
            dtype: Any = None) -> str:
  """The concrete implementation for ``implementation`` on ``platform``.

  ``"auto"`` picks: tpu -> ``"splash"``; gpu / cuda -> ``"cudnn"`` (when
  ``dtype`` is None, bfloat16 or float16: cuDNN has no float32 kernel;
  otherwise the CPU rule); cpu, rocm (jax's cuDNN attention lowers for CUDA
  only) and anything else -> ``"xla"`` for ``seq_len <= 512``, else
  ``"chunked"`` (on a 2-core CPU chunked's forward + backward was already
  1.7x faster at S = 512, 3.2x at 1,024). A concrete name is returned
  unchanged.

  Args:
    implementation: ``"auto"`` or one of `IMPLEMENTATIONS`.
    platform: ``jax.default_backend()`` or a device's ``platform``.
    seq_len: S of the calls.
    dtype: optional compute dtype of q, k and v.

  Returns:
    One of `IMPLEMENTATIONS`.
  """
  if _explicit(implementation, IMPLEMENTATIONS, "implementation"):
    return implementation
  platform = platform.lower()
  if platform == "tpu":
    return "splash"
  if platform in ("gpu", "cuda") and (
      dtype is None or jnp.dtype(dtype) in _CUDNN_DTYPES):
    return "cudnn"
  return "xla" if seq_len <= _CPU_DENSE_MAX else "chunked"


def attention(q: Array, k: Array, v: Array, mask: Array, *,
              implementation: str, chunk_size: int = 512,
              interpret: bool = False, splash_block: int = 512) -> Array:
  """Causal grouped-query self-attention over left-padded rows.

  out[b, i, h] = Σ_j p_ij v[b, j, h // G],  p_i = softmax_j(s_ij),
  s_ij = q[b, i, h] · k[b, j, h // G] where j <= i and mask[b, j], else
  masked out. The softmax runs in float32 (scores accumulated with
  ``preferred_element_type`` float32). A query with no visible key (a
  padding query before the row's first real token) gives a finite,
  meaningless output and a finite gradient (zero for "chunked" and
  "cudnn").

  Implementations (all differentiable once: "chunked", "splash" and
  "cudnn" have custom VJPs, so no grad-of-grad):

  * "xla": any platform and mask; memory O(S²).
  * "chunked": any platform and mask; memory O(S·C), about half the dense
    FLOPs (causal blocks skipped).
  * "splash": TPU, or CPU with ``interpret=True``; any mask. Under an
    ambient mesh (``jax.set_mesh``) it runs per shard in ``jax.shard_map``
    (batch over the mesh's axes, kv heads over "tensor"); without one,
    batch-sharded inputs do not compile (see `_splash_sharded`).
  * "cudnn": CUDA GPUs, bfloat16 / float16, Dh <= 128 (256 on Hopper) and
    a multiple of 8; rows must be left-padded (see `cudnn_attention`).

  Args:
    q: [B, S, K, G, Dh] queries, already scaled by Dh^-1/2.
    k: [B, S, K, Dh] keys (cast to q's dtype).
    v: [B, S, K, Dh] values (cast to q's dtype).
    mask: [B, S] bool, real tokens.
    implementation: one of `IMPLEMENTATIONS` (see `resolve` for "auto").
    chunk_size: "chunked": query and key chunk length C (S is padded up to
      a multiple of min(chunk_size, S)).
    interpret: "splash": run the Pallas kernel in interpret mode (CPU).
    splash_block: "splash": block size, a positive multiple of 128; blocks
      are min(splash_block, S rounded up to 128) and S is padded up to a
      multiple of the block.

  Returns:
    [B, S, K, G, Dh] in q's dtype.

  Examples:
    >>> q = jnp.ones((1, 3, 1, 2, 4)); kv = jnp.ones((1, 3, 1, 4))
    >>> mask = jnp.array([[False, True, True]])
    >>> attention(q, kv, kv, mask, implementation="chunked",
    ...           chunk_size=2).shape
    (1, 3, 1, 2, 4)
  """
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(
        f"implementation must be one of {IMPLEMENTATIONS} (resolve 'auto' "
        f"with attention.resolve first), got {implementation!r}")
  if q.ndim != 5 or k.ndim != 4 or k.shape != v.shape or (
      q.shape[:3] != k.shape[:3]) or q.shape[-1] != k.shape[-1] or (
          mask.shape != q.shape[:2]):
    raise ValueError(
        f"q must be [B, S, K, G, Dh], k and v [B, S, K, Dh] and mask [B, S], "
        f"got q {q.shape}, k {k.shape}, v {v.shape}, mask {mask.shape}")
  if chunk_size <= 0:
    raise ValueError(f"chunk_size must be positive, got {chunk_size}")
  if splash_block <= 0 or splash_block % _LANES:
    raise ValueError(f"splash_block must be a positive multiple of {_LANES}, "
                     f"got {splash_block}")
  mask = mask.astype(bool)
  k, v = k.astype(q.dtype), v.astype(q.dtype)
  if implementation == "xla":
    return xla_attention(q, k, v, mask)
  if implementation == "chunked":
    return _flash(q, k, v, mask, min(chunk_size, q.shape[1]))
  if implementation == "splash":
    return _splash_sharded(q, k, v, mask, block=splash_block,
                           interpret=interpret)
  return cudnn_attention(q, k, v, mask)


# --------------------------------------------------------------------- xla


def xla_attention(q: Array, k: Array, v: Array, mask: Array) -> Array:
  """The reference: dense float32 scores [B, K, G, S, S], finite fill.

  Same numbers as the decoder's ``_attend(q, k, v, allowed, "bskd")`` with
  ``allowed = tril(ones(S, S))[None] & mask[:, None, :]``. Shapes as in
  `attention`; k and v must have q's dtype. A query with no visible key
  averages all values (every score is the fill).
  """
  f32 = _wide(q.dtype)
  s_len = q.shape[1]
  allowed = jnp.tril(jnp.ones((s_len, s_len), bool))[None] & mask[:, None, :]
  s = jnp.einsum("bqkgd,bskd->bkgqs", q, k,
                 preferred_element_type=f32)  # [B, K, G, S, S]
  s = jnp.where(allowed[:, None, None], s, _NEG)
  m = jnp.max(s, axis=-1, keepdims=True)
  # p @ v in the compute dtype, as `_attend` does.
  p = jnp.exp(s - m)
  denom = jnp.sum(p, axis=-1)  # [B, K, G, S]
  out = jnp.einsum("bkgqs,bskd->bqkgd", p.astype(q.dtype), v).astype(f32)
  out = out / jnp.transpose(denom, (0, 3, 1, 2))[..., None]
  return out.astype(q.dtype)


# ----------------------------------------------------------------- chunked
#
# Compiled temporary memory (XLA:CPU, `memory_analysis().temp_size_in_bytes`)
# of jax.value_and_grad of sum(out * w) w.r.t. q, k, v; B=1, K=1, G=2,
# Dh=16, float32, jax 0.10.2:
#
#   S                    1024        4096         16384
#   chunked, C=128    1,026,400   2,659,744    10,634,208   (x2.6, x4.0)
#   chunked, C=256    2,788,320   3,921,888    10,633,952   (x1.4, x2.7)
#   xla               27,271,168  570,425,344  -            (x20.9)
#
# Chunked: about 650 bytes per token (q, k, v, out and dO in chunk-major
# copies, the float32 dQ accumulator) plus the [B, K, G, C, C] blocks; the
# dense path holds [S, S] float32 scores and probabilities.


def _pad_seq(x: Array, length: int) -> Array:
  """Pads axis 1 of x with zeros (False) up to ``length``."""
  pad = [(0, 0)] * x.ndim
  pad[1] = (0, length - x.shape[1])
  return jnp.pad(x, pad)


def _to_chunks(x: Array, n: int, c: int) -> Array:
  """[B, n·C, ...] -> [n, B, C, ...] (chunk-major, contiguous chunks)."""
  x = x.reshape((x.shape[0], n, c) + x.shape[2:])
  return jnp.moveaxis(x, 1, 0)


def _from_chunks(x: Array) -> Array:
  """[n, B, C, ...] -> [B, n·C, ...]."""
  n, b, c = x.shape[:3]
  return jnp.moveaxis(x, 0, 1).reshape((b, n * c) + x.shape[3:])


def _block_scores(qi: Array, kj: Array, mj: Array, i, j, f32) -> Array:
  """Scores of query chunk i against key chunk j, -inf where hidden.

  qi [B, C, K, G, Dh], kj [B, C, K, Dh], mj [B, C] -> [B, K, G, C, C].
  """
  c = qi.shape[1]
  s = jnp.einsum("bqkgd,bskd->bkgqs", qi, kj, preferred_element_type=f32)
  pos = jnp.arange(c)
  causal = (j * c + pos)[None, :] <= (i * c + pos)[:, None]  # [C, C]
  allowed = causal & mj[:, None, None, None, :]  # [B, 1, 1, C, C]
  return jnp.where(allowed, s, -jnp.inf)


def _flash_forward(q, k, v, mask, c):
  """(out [B, S, K, G, Dh], lse [n, B, K, G, C] f32) by online softmax."""
  b, s_len, kh, g, dh = q.shape
  n = -(-s_len // c)
  f32 = _wide(q.dtype)
  qc = _to_chunks(_pad_seq(q, n * c), n, c)  # [n, B, C, K, G, Dh]
  kc = _to_chunks(_pad_seq(k, n * c), n, c)  # [n, B, C, K, Dh]
  vc = _to_chunks(_pad_seq(v, n * c), n, c)  # [n, B, C, K, Dh]
  mc = _to_chunks(_pad_seq(mask, n * c), n, c)  # [n, B, C]

  def q_step(_, xs):
    i, qi = xs

    def kv_step(j, carry):
      m, l, acc = carry  # [B, K, G, C], [B, K, G, C], [B, K, G, C, Dh]
      s = _block_scores(qi, kc[j], mc[j], i, j, f32)
      # m starts finite (_NEG), so s - m_new and m - m_new are never
      # -inf - (-inf); hidden scores give p = exp(-inf) = 0.
      m_new = jnp.maximum(m, jnp.max(s, axis=-1))
      p = jnp.exp(s - m_new[..., None])
      alpha = jnp.exp(m - m_new)
      l = alpha * l + jnp.sum(p, axis=-1)
      pv = jnp.einsum("bkgqs,bskd->bkgqd", p.astype(q.dtype), vc[j],
                      preferred_element_type=f32)
      return m_new, l, alpha[..., None] * acc + pv

    init = (jnp.full((b, kh, g, c), _NEG, f32), jnp.zeros((b, kh, g, c), f32),
            jnp.zeros((b, kh, g, c, dh), f32))
    # Key chunks 0..i: the ones above the causal diagonal are never visited.
    m, l, acc = jax.lax.fori_loop(0, i + 1, kv_step, init)
    l = jnp.where(l > 0, l, 1.0)  # empty rows: out = 0, lse = _NEG
    out = jnp.transpose(acc / l[..., None], (0, 3, 1, 2, 4))
    return None, (out.astype(q.dtype), m + jnp.log(l))

  _, (out, lse) = jax.lax.scan(q_step, None, (jnp.arange(n), qc))
  return _from_chunks(out)[:, :s_len], lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _flash(q, k, v, mask, chunk):
  """Flash attention over chunks of ``chunk`` tokens (see `attention`).

  Forward: for each query chunk, an online softmax over the key chunks up
  to its own (FlashAttention-2, Alg. 1); memory O(S·C), compute about half
  of the dense causal product. Backward: FlashAttention-2, Alg. 2, from the
  saved (q, k, v, mask, out, lse): per block P = exp(S - lse),
  dV += Pᵀ dO, dP = dO Vᵀ, dS = P ∘ (dP - D) with D = rowsum(dO ∘ O),
  dK += dSᵀ Q, dQ += dS K. The loop runs over key chunks outside and query
  chunks from the diagonal on inside; dQ is a float32 [n, B, C, K, G, Dh]
  accumulator carried through both loops.

  References:
    Dao, "FlashAttention-2: Faster Attention with Better Parallelism and
    Work Partitioning", 2023. https://arxiv.org/abs/2307.08691
  """
  return _flash_forward(q, k, v, mask, chunk)[0]


def _flash_fwd(q, k, v, mask, chunk):
  out, lse = _flash_forward(q, k, v, mask, chunk)
  return out, (q, k, v, mask, out, lse)


def _flash_bwd(chunk, res, dout):
  q, k, v, mask, out, lse = res
  c = chunk
  b, s_len, kh, g, dh = q.shape
  n = -(-s_len // c)
  f32 = _wide(q.dtype)
  dt = q.dtype
  dout = dout.astype(dt)
  qc = _to_chunks(_pad_seq(q, n * c), n, c)  # [n, B, C, K, G, Dh]
  kc = _to_chunks(_pad_seq(k, n * c), n, c)  # [n, B, C, K, Dh]
  vc = _to_chunks(_pad_seq(v, n * c), n, c)  # [n, B, C, K, Dh]
  mc = _to_chunks(_pad_seq(mask, n * c), n, c)  # [n, B, C]
  doc = _to_chunks(_pad_seq(dout, n * c), n, c)  # [n, B, C, K, G, Dh]
  # D_i = rowsum(dO_i ∘ O_i); zero at the padded queries (dO = 0 there).
  d = jnp.sum(dout.astype(f32) * out.astype(f32), axis=-1)  # [B, S, K, G]
  dc = jnp.moveaxis(_to_chunks(_pad_seq(d, n * c), n, c), 2, -1)  # [n,B,K,G,C]

  def kv_step(dq_acc, xs):
    j, kj, vj, mj = xs

    def q_step(i, carry):
      dk, dv, dq_acc = carry  # [B, C, K, Dh], [B, C, K, Dh], [n, B, C, ...]
      qi, doi = qc[i], doc[i]
      s = _block_scores(qi, kj, mj, i, j, f32)
      p = jnp.exp(s - lse[i][..., None])  # [B, K, G, C, C]; hidden: 0
      dv = dv + jnp.einsum("bkgqs,bqkgd->bskd", p.astype(dt), doi,
                           preferred_element_type=f32)
      dp = jnp.einsum("bqkgd,bskd->bkgqs", doi, vj, preferred_element_type=f32)
      ds = (p * (dp - dc[i][..., None])).astype(dt)
      dk = dk + jnp.einsum("bkgqs,bqkgd->bskd", ds, qi,
                           preferred_element_type=f32)
      dq_i = jnp.einsum("bkgqs,bskd->bqkgd", ds, kj, preferred_element_type=f32)
      dq_acc = jax.lax.dynamic_update_index_in_dim(dq_acc, dq_acc[i] + dq_i,
                                                   i, 0)
      return dk, dv, dq_acc

    zero = jnp.zeros((b, c, kh, dh), f32)
    # Query chunks j..n-1: those before the diagonal see nothing of chunk j.
    dk, dv, dq_acc = jax.lax.fori_loop(j, n, q_step, (zero, zero, dq_acc))
    return dq_acc, (dk, dv)

  dq_acc = jnp.zeros((n, b, c, kh, g, dh), f32)
  dq_acc, (dkc, dvc) = jax.lax.scan(kv_step, dq_acc,
                                    (jnp.arange(n), kc, vc, mc))
  dq = _from_chunks(dq_acc)[:, :s_len].astype(q.dtype)
  dk = _from_chunks(dkc)[:, :s_len].astype(k.dtype)
  dv = _from_chunks(dvc)[:, :s_len].astype(v.dtype)
  return dq, dk, dv, None


_flash.defvjp(_flash_fwd, _flash_bwd)


# ------------------------------------------------------------------ splash


def _splash_local(q, k, v, mask, *, block, interpret):
  """Splash attention on one device's shard (shapes as in `attention`).

  The MQA kernel runs per (row, kv head) over that head's G queries, under
  `CausalMask` and segment ids: left padding, real tokens and the fill up
  to a multiple of the block get three ids, so real queries see only real
  keys and every other query sees at least itself (no empty row).
  """
  s_len, g = q.shape[1], q.shape[3]
  blk = min(block, _round_up(s_len, _LANES))
  sp = _round_up(s_len, blk)
  pos = jnp.arange(sp)
  seg = jnp.where(mask, _REAL_ID, _PAD_ID).astype(jnp.int32)
  seg = jnp.where(pos[None] < s_len, _pad_seq(seg, sp), _FILL_ID)  # [B, Sp]
  qt = jnp.transpose(_pad_seq(q, sp), (0, 2, 3, 1, 4))  # [B, K, G, Sp, Dh]
  kt = jnp.transpose(_pad_seq(k, sp), (0, 2, 1, 3))  # [B, K, Sp, Dh]
  vt = jnp.transpose(_pad_seq(v, sp), (0, 2, 1, 3))  # [B, K, Sp, Dh]
  sizes = splash_lib.BlockSizes(
      block_q=blk, block_kv=blk, block_kv_compute=blk, block_q_dkv=blk,
      block_kv_dkv=blk, block_kv_dkv_compute=blk, block_q_dq=blk,
      block_kv_dq=blk)
  heads = splash_lib.MultiHeadMask([splash_lib.CausalMask((sp, sp))] * g)
  kernel = splash_lib.make_splash_mqa_single_device(
      mask=heads, block_sizes=sizes, interpret=interpret)

  def one_row(qr, kr, vr, sr):  # [K, G, Sp, Dh], [K, Sp, Dh] x2, [Sp]
    ids = splash_lib.SegmentIds(q=sr, kv=sr)
    return jax.vmap(kernel, in_axes=(0, 0, 0, None))(qr, kr, vr, ids)

  out = jax.vmap(one_row)(qt, kt, vt, seg)  # [B, K, G, Sp, Dh]
  return jnp.transpose(out, (0, 3, 1, 2, 4))[:, :s_len]


def _splash_sharded(q, k, v, mask, *, block, interpret):
  """`_splash_local`, per shard under an ambient mesh.

  XLA cannot partition a Mosaic kernel: on inputs sharded over devices it
  refuses to compile ("Mosaic kernels cannot be automatically partitioned.
  Please wrap the call in a shard_map"). So under an ambient mesh
  (``jax.set_mesh``, as `entropy_rl.parallel.shard_train_step` runs steps)
  the kernel runs in ``jax.shard_map``: kv heads over the ``"tensor"`` axis
  when it divides K, the batch over the other non-manual axes (in mesh
  order, those whose product divides B), the rest replicated. Inputs on
  Explicit axes are first resharded to those specs; on Auto axes XLA does
  it. Without an ambient mesh, or inside a shard_map over every axis, the
  kernel runs as is: the caller then provides per-device inputs.
  """
  fn = functools.partial(_splash_local, block=block, interpret=interpret)
  free, batch_axes, head_axes = _mesh_split(q.shape[0], q.shape[2])
  if not free:
    return fn(q, k, v, mask)
  mesh = jax.sharding.get_abstract_mesh()
  bspec = batch_axes or None
  specs = (P(bspec, None, head_axes or None),) * 3 + (P(bspec),)
  args = (q, k, v, mask)
  if any(a in mesh.explicit_axes for a in free):
    args = tuple(jax.sharding.reshard(x, s) for x, s in zip(args, specs))
  # check_vma=False: splash's pallas_call declares no varying mesh axes on
  # its outputs, which check_vma=True requires.
  return jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=specs[0],
                       axis_names=frozenset(free), check_vma=False)(*args)


# ------------------------------------------------------------------- cudnn


def cudnn_attention(q: Array, k: Array, v: Array, mask: Array, *,
                    backend: str = "cudnn") -> Array:
  """Left-padded causal GQA through `jax.nn.dot_product_attention`.

  Its ``query_seq_lengths`` / ``key_value_seq_lengths`` mean right padding
  (real tokens first), so each row is rolled left by its number of padding
  tokens, attended with ``is_causal=True`` and lengths L_b, and rolled
  back; padding queries are set to zero. Correct only for left-padded rows
  (padding, then real tokens). A row with no real token is given length 1
  (its output is zeroed). cuDNN needs bfloat16 / float16, Dh <= 128
  (<= 256 on Hopper) and a multiple of 8; it raises otherwise.

  Args:
    q: [B, S, K, G, Dh] queries, already scaled.
    k: [B, S, K, Dh] keys, q's dtype.
    v: [B, S, K, Dh] values, q's dtype.
    mask: [B, S] bool, real tokens, left-padded rows.
    backend: ``implementation`` of `jax.nn.dot_product_attention`;
      ``"xla"`` checks the rolling on any platform.

  Returns:
    [B, S, K, G, Dh] in q's dtype.
  """
  if backend == "cudnn" and jnp.dtype(q.dtype) not in _CUDNN_DTYPES:
    raise ValueError(f"cudnn attention needs bfloat16 or float16 q, k, v, "
                     f"got {jnp.dtype(q.dtype)}")
  b, s_len, kh, g, dh = q.shape
  length = jnp.maximum(jnp.sum(mask, axis=-1, dtype=jnp.int32), 1)  # [B]
  shift = s_len - length  # padding tokens per row
  pos = jnp.arange(s_len)
  take = jax.vmap(lambda x, idx: jnp.take(x, idx, axis=0))
  to_right = (pos[None] + shift[:, None]) % s_len  # [B, S]
  to_left = (pos[None] - shift[:, None]) % s_len  # [B, S]
  qr = take(q, to_right).reshape(b, s_len, kh * g, dh)
  out = jax.nn.dot_product_attention(
      qr, take(k, to_right), take(v, to_right), scale=1.0, is_causal=True,
      query_seq_lengths=length, key_value_seq_lengths=length,
      implementation=backend)  # [B, S, K·G, Dh], heads (K, G) row-major
  out = take(out.reshape(b, s_len, kh, g, dh), to_left)
  return jnp.where(mask[:, :, None, None, None], out, 0).astype(q.dtype)


# ------------------------------------------------------------------- paged


def resolve_decode(implementation: str, platform: str) -> str:
  """The decode-step attention for ``implementation`` on ``platform``.

  ``"auto"`` picks ``"paged"`` (`paged_decode_attention`) on TPU and
  ``"xla"`` (the decoder's einsums) elsewhere; a concrete name is returned
  unchanged. ``"paged"`` off TPU runs the kernel in Pallas's TPU interpret
  mode (slow: for tests).

  Args:
    implementation: ``"auto"`` or one of `DECODE_IMPLEMENTATIONS`.
    platform: the platform the program is built for.

  Returns:
    One of `DECODE_IMPLEMENTATIONS`.
  """
  if _explicit(implementation, DECODE_IMPLEMENTATIONS,
               "decode implementation"):
    return implementation
  return "paged" if platform.lower() == "tpu" else "xla"


def page_size(slots: int) -> int | None:
  """The page size of a cache of ``slots`` slots: the largest of
  `PAGE_SIZES` dividing it, or None (then it cannot be paged)."""
  for ps in PAGE_SIZES:
    if slots % ps == 0:
      return ps
  return None


def _paged_kernel(q: Array, k_pages: Array, v_pages: Array, lengths: Array,
                  *, interpret: bool) -> tuple[Array, Array, Array]:
  """JAX's paged-attention kernel over contiguous sequences, with its
  softmax statistics.

  Sequence i (one row and kv head) is pages [i·n_p, (i+1)·n_p) of the
  single-head page pool; its first ``lengths[i]`` slots are attended.
  ``jax.experimental.pallas.ops.tpu.paged_attention`` drops the kernel's
  running max and sum (and, in jax 0.10.2, cannot lower them for query
  groups that are not a multiple of 8): this calls the same kernel,
  ``paged_flash_attention_kernel_inline_seq_dim``, with blocks that keep
  them.

  Args:
    q: [N, Gq, Dh] queries of N sequences, scaled (any Gq: the block is
      the whole [Gq, Dh]).
    k_pages, v_pages: [1, N·n_p, ps, Dh].
    lengths: [N] int32.
    interpret: run in the Pallas TPU interpreter (CPU).

  Returns:
    (o [N, Gq, Dh] f32 normalised, m [N, Gq, Dh] f32 max score (−inf for
    an empty sequence), l [N, Gq, Dh] f32 = Σ exp(s − m)); m and l repeat
    along Dh (o's layout: no relayout to combine them with o).
  """
  n, gq, dh = q.shape
  _, pages, ps, _ = k_pages.shape
  per_seq = pages // n
  ppb = max(d for d in range(1, max(1, _KEYS_PER_BLOCK // ps) + 1)
            if per_seq % d == 0)
  kernel = functools.partial(
      paged_lib.paged_flash_attention_kernel_inline_seq_dim,
      pages_per_sequence=per_seq, batch_size=n, pages_per_compute_block=ppb,
      mask_value=paged_lib.DEFAULT_MASK_VALUE, attn_logits_soft_cap=None,
      megacore_mode=None)
  q_spec = pl.BlockSpec((None, gq, dh), lambda c, b, h, *_: (b, h, 0))
  hbm = pl.BlockSpec(memory_space=pl.ANY)
  buf = (2, ppb, ps, dh)  # double-buffered DMA of ppb pages
  o, m, l = pl.pallas_call(
      kernel,
      grid_spec=pltpu.PrefetchScalarGridSpec(
          num_scalar_prefetch=4,  # lengths, page table, buffer, init flag
          in_specs=[q_spec, hbm, None, hbm, None],
          out_specs=[q_spec, q_spec, q_spec],
          grid=(1, n, 1),
          scratch_shapes=(pltpu.VMEM(buf, k_pages.dtype), None,
                          pltpu.VMEM(buf, v_pages.dtype), None,
                          pltpu.SemaphoreType.DMA((2,)),
                          pltpu.SemaphoreType.DMA((2,)))),
      compiler_params=pltpu.CompilerParams(
          dimension_semantics=("parallel", "arbitrary", "arbitrary")),
      out_shape=[jax.ShapeDtypeStruct((n, gq, dh), jnp.float32)] * 3,
      interpret=pltpu.InterpretParams() if interpret else False,
  )(lengths.astype(jnp.int32), jnp.arange(pages, dtype=jnp.int32),
    jnp.zeros((1,), jnp.int32), jnp.ones((1,), jnp.int32),
    q, k_pages, None, v_pages, None)
  return o, m, l


def _mesh_split(b: int, kh: int):
  """(free mesh axes, batch axes, kv-head axes) of a Mosaic kernel's
  shard_map under the ambient mesh (see `_splash_sharded`); ([], ...) when
  there is no mesh to split over."""
  mesh = jax.sharding.get_abstract_mesh()
  free = [] if mesh.empty else [a for a in mesh.axis_names
                                if a not in mesh.manual_axes]
  sizes = dict(zip(mesh.axis_names, mesh.axis_sizes)) if free else {}
  head_axes = tuple(a for a in free if a in _HEAD_AXES and kh % sizes[a] == 0)
  batch_axes, prod = [], 1
  for a in free:
    if a not in head_axes and b % (prod * sizes[a]) == 0:
      batch_axes.append(a)
      prod *= sizes[a]
  return free, tuple(batch_axes), head_axes


def _paged_part(q: Array, k: Array, v: Array, lengths: Array, *,
                interpret: bool) -> tuple[Array, Array, Array]:
  """Attention of q [Bk, K, Gq, Dh] over k, v [Bk, K, T, Dh], row b seeing
  its slots [0, lengths[b]): (o, m, l), each [Bk, K, Gq, Dh] f32 (see
  `_paged_kernel`).

  Under an ambient mesh the kernel runs per shard in ``jax.shard_map``
  (XLA cannot partition a Mosaic kernel): rows over the mesh axes that
  divide Bk, kv heads over ``"tensor"``, as `_splash_sharded` does.
  """
  fn = functools.partial(_paged_part_local, interpret=interpret)
  free, batch_axes, head_axes = _mesh_split(q.shape[0], q.shape[1])
  if not free:
    return fn(q, k, v, lengths)
  mesh = jax.sharding.get_abstract_mesh()
  spec = P(batch_axes or None, head_axes or None)
  args = (q, k, v, lengths)
  specs = (spec, spec, spec, P(batch_axes or None))
  if any(a in mesh.explicit_axes for a in free):
    args = tuple(jax.sharding.reshard(x, s) for x, s in zip(args, specs))
  # check_vma=False: the pallas_call declares no varying mesh axes.
  return jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=(spec,) * 3,
                       axis_names=frozenset(free), check_vma=False)(*args)


def _paged_part_local(q: Array, k: Array, v: Array, lengths: Array, *,
                      interpret: bool) -> tuple[Array, Array, Array]:
  """`_paged_part` on one device's rows."""
  bk, kh, gq, dh = q.shape
  t = k.shape[2]
  ps = page_size(t)
  pages = (1, bk * kh * t // ps, ps, dh)  # a free view of [Bk, K, T, Dh]
  o, m, l = _paged_kernel(q.reshape(bk * kh, gq, dh), k.reshape(pages),
                          v.reshape(pages), jnp.repeat(lengths, kh),
                          interpret=interpret)
  return tuple(x.reshape(bk, kh, gq, dh) for x in (o, m, l))


def _dense_prefix(q: Array, k_p: Array, v_p: Array, valid: Array
                  ) -> tuple[Array, Array, Array]:
  """A decode step's attention over a shared prefix by einsums over all of
  its slots (the decoder's ``_attend`` math: f32 scores, the finite fill
  ``_NEG`` at invalid slots, p @ v in the compute dtype).

  Args:
    q: [B, 1, K, G, Dh]; row r uses prefix row r // n, n = B / B_p.
    k_p, v_p: [B_p, K, P, Dh].
    valid: [B_p, P] bool.

  Returns:
    (Σ p v [B, K, G, Dh] f32, unnormalised; m, l [B, K, G, 1]) with
    p = exp(s − m), l = Σ p. A row without a valid slot has m = ``_NEG``,
    so its weight exp(m − max) in a combination with a real part is 0.
  """
  f32 = _wide(q.dtype)
  b, _, kh, g, dh = q.shape
  bp = k_p.shape[0]
  qp = q.reshape(bp, b // bp, 1, kh, g, dh)
  s = jnp.einsum("bnqkgd,bksd->bnkgqs", qp, k_p.astype(q.dtype),
                 preferred_element_type=f32)  # [B_p, n, K, G, 1, P]
  s = jnp.where(valid[:, None, None, None, None], s, _NEG)
  m = jnp.max(s, -1, keepdims=True)
  p = jnp.exp(s - m)
  l = jnp.sum(p, -1, keepdims=True)
  u = jnp.einsum("bnkgqs,bksd->bnkgqd", p.astype(q.dtype),
                 v_p.astype(q.dtype)).astype(f32)
  shape = (b, kh, g)
  return (u.reshape(shape + (dh,)), m.reshape(shape + (1,)),
          l.reshape(shape + (1,)))


def paged_decode_attention(q: Array, k: Array, v: Array, lengths: Array,
                           prefix: tuple[Array, Array, Array] | None = None,
                           *, interpret: bool = False) -> Array:
  """One decode step's attention, the cache part through the Pallas
  paged-attention kernel.

  Row b attends over its cache slots [0, lengths[b]) and, with a shared
  prefix of B_p = B / n rows, over the valid slots of prefix row b // n,
  in one softmax (as the decoder's ``_attend``): each part gives its
  normalised output o, max score m and l = Σ exp(s − m), and

    out = (o_c w_c + o_p w_p) / (w_c + w_p),  w = l · exp(m − max(m_c, m_p)).

  The cache part runs JAX's paged-attention kernel (`_paged_kernel`) over
  B·K sequences of one kv head each, the cache viewed as ``T / page``
  pages per sequence without a copy: a sequence reads its live pages only,
  so slots past ``lengths`` cost nothing. The prefix part runs either the
  decoder's einsums over every prefix slot (``valid`` given: a left-padded
  prompt cache, read once per prompt for its n samples), or the kernel too
  (``lengths`` given: a prefix whose real tokens fill slots [0, lp), one
  sequence per prompt and kv head holding the n·G queries of its samples).

  Args:
    q: [B, 1, K, G, Dh] queries, already scaled by Dh^-1/2.
    k, v: [B, K, T, Dh] a layer's cache, T a multiple of a `PAGE_SIZES`
      entry.
    lengths: [B] int32 ≥ 1, the cache's valid slots [0, lengths).
    prefix: None, or (k_p, v_p, valid_p) with k_p, v_p [B_p, K, P, Dh] and
      valid_p either [B_p, P] bool or [B_p] int32 lengths (≥ 0; then P a
      multiple of a `PAGE_SIZES` entry).
    interpret: run the kernel in the Pallas TPU interpreter (CPU tests).

  Returns:
    [B, 1, K, G, Dh] in q's dtype.
  """
  b, s_len, kh, g, dh = q.shape
  if s_len != 1:
    raise ValueError(f"paged decode attention takes one query per row, got "
                     f"q of shape {q.shape}")
  if page_size(k.shape[2]) is None or (
      prefix is not None and prefix[2].dtype != jnp.bool_
      and page_size(prefix[0].shape[2]) is None):
    raise ValueError(
        f"paged decode attention needs caches of a multiple of "
        f"{min(PAGE_SIZES)} slots, got {k.shape[2]}"
        + ("" if prefix is None else f" and a prefix of {prefix[0].shape[2]}"))
  qc = q[:, 0]  # [B, K, G, Dh]
  o, m, l = _paged_part(qc, k, v, lengths, interpret=interpret)
  if prefix is not None:
    k_p, v_p, lp = prefix
    if lp.dtype == jnp.bool_:  # valid slots: einsums over all of them
      up, mp, lpp = _dense_prefix(q, k_p, v_p, lp)  # Σ p v, unnormalised
    else:  # lengths: the kernel over the live slots, one sequence per prompt
      bp = k_p.shape[0]
      n = b // bp
      qp = jnp.swapaxes(qc.reshape(bp, n, kh, g, dh), 1, 2)  # [B_p,K,n,G,Dh]
      parts = _paged_part(qp.reshape(bp, kh, n * g, dh), k_p, v_p, lp,
                          interpret=interpret)
      op, mp, lpp = (jnp.swapaxes(x.reshape(bp, kh, n, g, dh), 1, 2).reshape(
          b, kh, g, dh) for x in parts)  # [B_p, K, n·G, Dh] -> [B, K, G, Dh]
      up = op * lpp
    mx = jnp.maximum(m, mp)
    w, wp = l * jnp.exp(m - mx), jnp.exp(mp - mx)
    o = (o * w + up * wp) / (w + lpp * wp)
  return o[:, None].astype(q.dtype)
