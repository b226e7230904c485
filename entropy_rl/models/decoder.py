"""Flax NNX decoder for the Llama / Qwen2 / Qwen3 families, with a KV cache.

One model covers the three families (see `DecoderConfig`): pre-norm blocks of
grouped-query attention with RoPE and a SwiGLU MLP,

  h   = x + Attn(RMSNorm(x)),   out = h + W_down(silu(W_gate n) * W_up n),
  n   = RMSNorm(h),             RoPE: (x1, x2) -> (x1 cos - x2 sin,
                                                   x2 cos + x1 sin)

on the two halves of each head (Hugging Face's half-split convention).
Llama: arXiv:2302.13971; Qwen2: arXiv:2407.10671; Qwen3: arXiv:2505.09388.

Step functions stay pure: `as_functions(model)` splits the model once and
returns `LMFns`, plain functions of ``(params, ...)`` that merge the graph
inside, so they can be used under `jax.jit`, `jax.grad` and `lax.scan`
without `nnx.jit` (about 1 ms of Python per call).

Cached decode is write-first: each layer writes its new keys/values into
the cache at ``index`` and then attends over the whole cache under a
[B, S, T] mask. Unrolled layers keep one cache buffer per layer (a
stacked [L, ...] buffer costs a copy of layer i's slice at every step).

Full-sequence passes (training, and a prefill that fills its cache) run
the attention implementation of ``config.attention``
(`entropy_rl.models.attention`: Pallas splash attention on TPU, cuDNN on
GPU, an XLA path on CPU), chosen for the platform the program is built
for (`entropy_rl.parallel.target_platform`), with ``config.remat``
rematerialisation of each block.

Sharding: activations carry logical-axis constraints
(`entropy_rl.parallel.constrain`: the batch on ``data`` x ``fsdp``, heads
and the MLP width on ``tensor``), no-ops outside ``jax.set_mesh``. With
the parameters split on ``embed`` over ``fsdp``, XLA then gathers each
layer's weights (FSDP) instead of splitting the residual stream and
replicating the batch.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from entropy_rl import parallel
from entropy_rl.models import attention as attention_lib
from entropy_rl.models.config import DecoderConfig

Array = jax.Array
_NEG = -1e30  # finite: fully masked rows (padding queries) give no NaN


def _wide(dtype) -> jnp.dtype:
  """float32, or the compute dtype where it is wider (float64 checks)."""
  return jnp.promote_types(dtype, jnp.float32)


class KVCache(NamedTuple):
  """Key/value cache shared by every layer.

  Layout of ``k`` and ``v`` (what `init_cache` builds for the config):

  * ``scan_layers=False`` (unrolled layers): a tuple of L per-layer buffers
    [B, K, T_max, Dh], updated in place one by one. A stacked
    [L, B, K, T_max, Dh] array is accepted too (and returned stacked).
  * ``scan_layers=True``: one stacked array [L, B, K, T_max, Dh], carried
    through the layer scan.

  Prompts are left-padded so all rows end aligned; one write index serves
  the whole batch. A slot holds a real token iff ``valid`` says so. Writes
  past ``T_max`` cannot be detected under jit (``dynamic_update_slice``
  clamps the start): size the cache for prompt plus new tokens.

  ``lengths`` (optional) declares that row b's valid slots are exactly
  [0, lengths[b]): a cache filled from slot 0 with real tokens only (the
  sampler's cache of generated tokens), or a prompt cache whose slots were
  reversed so its real tokens come first. Its owner guarantees it;
  `Decoder.hidden` adds S at every write (the written tokens must all be
  real). A decode step over a cache that declares it attends through the
  paged kernel when ``config.decode_attention`` says so, reading only
  those slots; a shared prefix then goes through the kernel too if it
  declares its own ``lengths``, else through einsums over its slots.
  """
  k: Any        # tuple of L [B, K, T_max, Dh], or [L, B, K, T_max, Dh]
  v: Any        # same layout as k
  valid: Array  # [B, T_max] bool
  index: Array  # [] int32, next slot to write
  lengths: Array | None = None  # [B] int32: valid slots are [0, lengths)


def init_cache(config: DecoderConfig, batch: int, max_len: int,
               dtype: Any = None, per_layer: bool | None = None) -> KVCache:
  """An empty cache for ``batch`` rows of up to ``max_len`` tokens.

  Args:
    config: the model's configuration.
    batch: B.
    max_len: T_max, prompt plus generated tokens.
    dtype: dtype of k and v (bf16 halves the memory); default
      ``config.dtype``.
    per_layer: one buffer per layer (True) or one stacked buffer (False);
      default: stacked for ``config.scan_layers``. Scanned models decode
      through either; per-layer buffers avoid slicing every layer's cache
      out of the stacked one at every step (`as_functions`' init_cache).

  Returns:
    A `KVCache` with zero k/v, no valid slot and index 0: k and v are
    tuples of ``num_layers`` arrays [B, K, T_max, Dh] (per layer), or one
    array [L, B, K, T_max, Dh] (stacked).
  """
  if batch <= 0 or max_len <= 0:
    raise ValueError(f"batch and max_len must be positive, got batch={batch}, "
                     f"max_len={max_len}")
  dtype = jnp.dtype(dtype or config.dtype)
  shape = (batch, config.num_kv_heads, max_len, config.head_dim)
  if per_layer is None:
    per_layer = not config.scan_layers
  if not per_layer:
    k = jnp.zeros((config.num_layers,) + shape, dtype)
    v = jnp.zeros((config.num_layers,) + shape, dtype)
  else:
    k = tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers))
    v = tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers))
  return KVCache(k=k, v=v, valid=jnp.zeros((batch, max_len), bool),
                 index=jnp.zeros((), jnp.int32))


def positions_from_mask(mask: Array) -> Array:
  """Positions of left-padded rows: cumsum(mask) - 1, clipped at 0."""
  return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=-1) - 1, 0)


def _param(rngs: nnx.Rngs | None, shape, dtype, names, init: str = "normal"):
  """A parameter with logical axis names as metadata only (no mesh needed)."""
  if init == "normal":
    value = 0.02 * jax.random.normal(rngs.params(), shape, jnp.float32)
    value = value.astype(dtype)
  elif init == "ones":
    value = jnp.ones(shape, dtype)
  else:
    value = jnp.zeros(shape, dtype)
  return nnx.Param(value, out_sharding=names, eager_sharding=False)


class RMSNorm(nnx.Module):
  """y = x / sqrt(mean(x²) + eps) * scale, normalised in float32."""

  def __init__(self, dim: int, eps: float, *, param_dtype, axis: str):
    self.scale = _param(None, (dim,), param_dtype, (axis,), "ones")
    self.eps = eps

  def __call__(self, x: Array) -> Array:
    x32 = x.astype(_wide(x.dtype))
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, -1, keepdims=True) + self.eps)
    return y.astype(x.dtype) * self.scale[...].astype(x.dtype)


@functools.lru_cache(maxsize=64)
def _rope_tables(num_positions: int, head_dim: int, theta: float):
  """cos, sin [T, Dh/2] f32 of the f32 angles p · θ^(-2i/Dh), p < T.

  Built on the host (cos/sin in float64 of the float32 angle, then
  rounded), so XLA sees constants it cannot fuse back into its consumers.
  """
  inv_freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float32)
                              / head_dim))
  ang = (np.arange(num_positions, dtype=np.float32)[:, None]
         * inv_freq.astype(np.float32)).astype(np.float64)
  return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


def _rope_angles(positions: Array, head_dim: int, theta: float,
                 num_positions: int):
  """cos, sin of RoPE for integer positions [B, S] -> [B, S, Dh/2] f32.

  Looked up in host-built tables over ``[0, num_positions)`` (the slots of
  the call: S, or the cache length). Computing cos/sin on [B, S, Dh/2] in
  the graph gives the same angles, but XLA then fuses the two
  transcendentals into every consumer (each layer's q and k RoPE and cache
  write) and evaluates them once per head and element: 13% of a CPU decode
  step and 5% of a train step (BENCHMARKS.md). A position outside the
  tables gives NaN, never a silent wrong angle.
  """
  cos, sin = _rope_tables(int(num_positions), int(head_dim), float(theta))

  def look_up(table):
    return jnp.take(jnp.asarray(table), positions, axis=0, mode="fill",
                    fill_value=jnp.nan)
  return look_up(cos), look_up(sin)


def _apply_rope(x: Array, cos: Array, sin: Array) -> Array:
  """Half-split RoPE on x [B, S, heads, Dh] with cos/sin [B, S, Dh/2]."""
  half = x.shape[-1] // 2
  x32 = x.astype(_wide(x.dtype))
  x1, x2 = x32[..., :half], x32[..., half:]
  c = cos[:, :, None, :].astype(x32.dtype)
  s = sin[:, :, None, :].astype(x32.dtype)
  return jnp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s],
                         axis=-1).astype(x.dtype)


class _PagedDecode(NamedTuple):
  """``allowed`` of a decode step through the paged kernel
  (`attention_lib.paged_decode_attention`): the cache's valid slots are
  [0, lengths), the prefix's [0, prefix_lengths)."""
  lengths: Array  # [B] int32, after this step's write
  prefix_lengths: Array | None  # [B_p] int32
  interpret: bool  # Pallas TPU interpret mode (off TPU)


def _attend(q, k, v, allowed, kv_spec: str, prefix=None):
  """Softmax attention of q over keys k / values v, f32 softmax.

  With ``prefix``, the queries also attend over a shared prefix (slots
  before the cache's): row r of q uses row r // n of the prefix, n =
  B / B_p. One softmax spans both parts; each part is a batched product,
  the prefix's with n·G·S queries per (prompt, kv-head) pair, so a prompt
  shared by n samples is read once instead of n times.

  Args:
    q: [B, S, K, G, Dh] queries (already scaled by Dh^-1/2).
    k, v: keys and values, [B, T, K, Dh] (``kv_spec="bskd"``: the new
      tokens, no cache) or [B, K, T, Dh] (``"bksd"``: a layer's cache).
    allowed: [B, S, T] bool, query i may see key j. Fully masked rows
      (padding queries) give a finite, meaningless output. Or a
      `_PagedDecode` (S = 1, ``kv_spec="bksd"``): the paged kernel over the
      slots it declares.
    kv_spec: the einsum subscripts of k and v.
    prefix: None, or (k_p, v_p, valid_p): a layer's shared keys and
      values [B_p, K, P, Dh] and valid_p [B_p, P] bool (every query may see
      every valid prefix slot), B = n·B_p.

  Returns:
    [B, S, K, G, Dh] in q's dtype.
  """
  if isinstance(allowed, _PagedDecode):
    pre = None if prefix is None else (
        prefix[0], prefix[1], prefix[2] if allowed.prefix_lengths is None
        else allowed.prefix_lengths)
    return attention_lib.paged_decode_attention(
        q, k, v, allowed.lengths, pre, interpret=allowed.interpret)
  f32 = _wide(q.dtype)
  b, s_len, kh, g, dh = q.shape
  s = jnp.einsum(f"bqkgd,{kv_spec}->bkgqs", q, k.astype(q.dtype),
                 preferred_element_type=f32)
  s = jnp.where(allowed[:, None, None], s, _NEG)
  if prefix is not None:
    k_p, v_p, valid_p = prefix
    bp, p_len = valid_p.shape
    n = b // bp
    qp = q.reshape(bp, n, s_len, kh, g, dh)
    s_p = jnp.einsum("bnqkgd,bksd->bnkgqs", qp, k_p.astype(q.dtype),
                     preferred_element_type=f32)
    s_p = jnp.where(valid_p[:, None, None, None, None], s_p, _NEG)
    s = jnp.concatenate([s_p.reshape(b, kh, g, s_len, p_len), s], axis=-1)
  m = jnp.max(s, axis=-1, keepdims=True)
  # p @ v in the compute dtype (as transformers does after its softmax):
  # XLA:CPU lacks some bf16 x bf16 -> f32 dot layouts.
  p = jnp.exp(s - m)
  denom = jnp.sum(p, axis=-1)
  if prefix is None:
    out = jnp.einsum(f"bkgqs,{kv_spec}->bqkgd", p.astype(q.dtype),
                     v.astype(q.dtype)).astype(f32)
  else:
    p_p = p[..., :p_len].reshape(bp, n, kh, g, s_len, p_len)
    out_p = jnp.einsum("bnkgqs,bksd->bnqkgd", p_p.astype(q.dtype),
                       v_p.astype(q.dtype)).astype(f32)
    out = jnp.einsum(f"bkgqs,{kv_spec}->bqkgd", p[..., p_len:].astype(q.dtype),
                     v.astype(q.dtype)).astype(f32)
    out = out + out_p.reshape(b, s_len, kh, g, dh)
  out = out / jnp.transpose(denom, (0, 3, 1, 2))[..., None]
  return out.astype(q.dtype)


_REMAT_POLICIES = {
    "block": None,  # save only the block's inputs
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}

# The embedding lookup under a mesh: the ids split over ``data`` only and
# the looked-up [B, S, D] split over ``data`` and, on D, over ``fsdp`` like
# the table, so the lookup is local; `_RESIDUAL` then splits the rows over
# fsdp (one all-to-all).
_LOOKUP_RULES = (("batch", "data"), ("embed", "fsdp"))

# Logical axes of the activations (`parallel.constrain`).
_RESIDUAL = ("batch", "seq", "embed")
_Q_HEADS = ("batch", "seq", "heads", "head_dim")
_KV_HEADS = ("batch", "seq", "kv_heads", "head_dim")
_MLP = ("batch", "seq", "mlp")


def _dense(x: Array, w: Array) -> Array:
  """``x [..., D] @ w [D, F]`` as one 2-D matmul over the flattened tokens.

  Same numbers as the batched product; the backward pass then contracts
  [N, D] with [N, F] directly. With [B, S, D] activations XLA:CPU
  materialises a transposed [F, B·S] copy of the activation gradient (a
  strided loop fusion) for every weight gradient, which made the decoder's
  backward 2-3× slower than its matmuls.
  """
  y = x.reshape(-1, x.shape[-1]) @ w.astype(x.dtype)
  return y.reshape(x.shape[:-1] + (w.shape[-1],))


def _write(buf: Array, new: Array, index: Array, layer=None) -> Array:
  """Writes new [B, S, K, Dh] at slot ``index`` of buf [B, K, T, Dh], or of
  layer ``layer`` of a stacked buf [L, B, K, T, Dh]."""
  new = jnp.swapaxes(new, 1, 2).astype(buf.dtype)
  zero = jnp.zeros((), jnp.int32)
  if layer is None:
    return jax.lax.dynamic_update_slice(buf, new, (zero, zero, index, zero))
  return jax.lax.dynamic_update_slice(
      buf, new[None], (jnp.asarray(layer, jnp.int32), zero, zero, index, zero))


def _decodes_paged(cfg: DecoderConfig, s: int, cache: KVCache,
                   prefix: KVCache | None) -> bool:
  """Whether a cached call attends through the paged kernel (static): a
  decode step (S = 1) under ``cfg.decode_attention`` resolving to "paged"
  for the target platform, over a cache (and prefix) that declare their
  ``lengths`` and whose slots split into pages."""
  impl = attention_lib.resolve_decode(cfg.decode_attention,
                                      parallel.target_platform())
  if s != 1 or impl != "paged" or cache.lengths is None:
    return False
  if prefix is not None and prefix.lengths is not None and (
      attention_lib.page_size(prefix.valid.shape[1]) is None):
    return False
  return attention_lib.page_size(cache.valid.shape[1]) is not None


class Attention(nnx.Module):
  """Grouped-query attention with RoPE, optional q/k/v bias and q/k norm."""

  def __init__(self, cfg: DecoderConfig, *, rngs: nnx.Rngs):
    d, h, dh = cfg.hidden_size, cfg.num_heads, cfg.head_dim
    kv = cfg.num_kv_heads
    pd = cfg.param_dtype
    self.q_proj = _param(rngs, (d, h * dh), pd, ("embed", "heads"))
    self.k_proj = _param(rngs, (d, kv * dh), pd, ("embed", "kv_heads"))
    self.v_proj = _param(rngs, (d, kv * dh), pd, ("embed", "kv_heads"))
    self.o_proj = _param(rngs, (h * dh, d), pd, ("heads", "embed"))
    if cfg.qkv_bias:
      self.q_bias = _param(None, (h * dh,), pd, ("heads",), "zeros")
      self.k_bias = _param(None, (kv * dh,), pd, ("kv_heads",), "zeros")
      self.v_bias = _param(None, (kv * dh,), pd, ("kv_heads",), "zeros")
    if cfg.qk_norm:
      self.q_norm = RMSNorm(dh, cfg.rms_norm_eps, param_dtype=pd,
                            axis="head_dim")
      self.k_norm = RMSNorm(dh, cfg.rms_norm_eps, param_dtype=pd,
                            axis="head_dim")
    self.cfg = cfg

  def _proj(self, x, name):
    y = _dense(x, getattr(self, f"{name}_proj")[...])
    if self.cfg.qkv_bias:
      y = y + getattr(self, f"{name}_bias")[...].astype(x.dtype)
    return y

  def _qkv(self, x):
    """q [B,S,H·Dh], k and v [B,S,K·Dh]: three products, or one for S = 1.

    A decode step (S = 1) runs one [B, D] @ [D, (H+2K)·Dh] product on the
    concatenated weights (XLA hoists the concatenation out of the decode
    loop): at B = 64 on CPU the three small GEMMs each ran on one core, one
    after the other (BENCHMARKS.md). Training keeps three products (no gain
    measured there).
    """
    if x.shape[1] != 1:
      return self._proj(x, "q"), self._proj(x, "k"), self._proj(x, "v")
    names = ("q", "k", "v")
    w = jnp.concatenate([getattr(self, f"{n}_proj")[...] for n in names], 1)
    y = _dense(x, w)
    if self.cfg.qkv_bias:
      y = y + jnp.concatenate(
          [getattr(self, f"{n}_bias")[...] for n in names]).astype(x.dtype)
    hq = self.cfg.num_heads * self.cfg.head_dim
    hk = self.cfg.num_kv_heads * self.cfg.head_dim
    return y[..., :hq], y[..., hq:hq + hk], y[..., hq + hk:]

  def __call__(self, x, cos, sin, allowed, kv_fn=None, prefix=None,
               causal=None):
    """x [B, S, D] -> (out [B, S, D], new cache state or None).

    Without ``kv_fn`` the queries attend causally over the new tokens whose
    ``causal`` [B, S] mask is set (``config.attention``'s implementation).
    With one, ``kv_fn(k, v)`` gets the new keys (after RoPE) and values
    [B, S, K, Dh], writes them into the cache and returns (keys, values)
    [B, K, T, Dh] to attend over (``allowed`` [B, S, T]) and the updated
    cache state, which is returned; with ``causal`` too (a prefill that
    fills the whole cache) the queries attend over the new tokens as
    without a cache. ``prefix``: this layer's shared prefix (see
    `_attend`), attended before the cache.
    """
    cfg = self.cfg
    b, s, _ = x.shape
    kv, dh = cfg.num_kv_heads, cfg.head_dim
    q, k, v = self._qkv(x)
    q = parallel.constrain(q.reshape(b, s, cfg.num_heads, dh), _Q_HEADS)
    k = parallel.constrain(k.reshape(b, s, kv, dh), _KV_HEADS)
    v = parallel.constrain(v.reshape(b, s, kv, dh), _KV_HEADS)
    if cfg.qk_norm:
      q, k = self.q_norm(q), self.k_norm(k)
    q = _apply_rope(q, cos, sin)
    k = _apply_rope(k, cos, sin)
    qg = (q * jnp.asarray(dh ** -0.5, q.dtype)).reshape(
        b, s, kv, cfg.num_heads // kv, dh)
    state = None
    if kv_fn is not None:
      keys, values, state = kv_fn(k, v)
    if causal is not None:
      impl = attention_lib.resolve(cfg.attention, parallel.target_platform(),
                                   s, dtype=qg.dtype)
      o = attention_lib.attention(qg, k, v, causal, implementation=impl,
                                  chunk_size=cfg.attention_chunk)
    else:
      o = _attend(qg, keys, values, allowed, "bksd", prefix)
    o = o.reshape(b, s, cfg.num_heads * dh)
    return _dense(o, self.o_proj[...]), state


class MLP(nnx.Module):
  """SwiGLU: W_down (silu(W_gate x) * W_up x)."""

  def __init__(self, cfg: DecoderConfig, *, rngs: nnx.Rngs):
    d, f, pd = cfg.hidden_size, cfg.intermediate_size, cfg.param_dtype
    self.gate_proj = _param(rngs, (d, f), pd, ("embed", "mlp"))
    self.up_proj = _param(rngs, (d, f), pd, ("embed", "mlp"))
    self.down_proj = _param(rngs, (f, d), pd, ("mlp", "embed"))

  def __call__(self, x):
    g = parallel.constrain(_dense(x, self.gate_proj[...]), _MLP)
    u = parallel.constrain(_dense(x, self.up_proj[...]), _MLP)
    return _dense(jax.nn.silu(g) * u, self.down_proj[...])


class Block(nnx.Module):
  """Pre-norm transformer block."""

  def __init__(self, cfg: DecoderConfig, *, rngs: nnx.Rngs):
    pd, eps = cfg.param_dtype, cfg.rms_norm_eps
    self.attn_norm = RMSNorm(cfg.hidden_size, eps, param_dtype=pd,
                             axis="embed")
    self.attn = Attention(cfg, rngs=rngs)
    self.mlp_norm = RMSNorm(cfg.hidden_size, eps, param_dtype=pd, axis="embed")
    self.mlp = MLP(cfg, rngs=rngs)

  def __call__(self, x, cos, sin, allowed, kv_fn=None, prefix=None,
               causal=None):
    """(x, cache state or None); see `Attention.__call__`."""
    a, state = self.attn(self.attn_norm(x), cos, sin, allowed, kv_fn, prefix,
                         causal)
    x = parallel.constrain(x + a, _RESIDUAL)
    return parallel.constrain(x + self.mlp(self.mlp_norm(x)), _RESIDUAL), state


def _run_block(block: Block, x, cos, sin, mask, remat: str):
  """One block of a full-sequence pass, rematerialised per ``remat``."""
  if remat == "none":
    return block(x, cos, sin, None, causal=mask)[0]
  graphdef, state = nnx.split(block)

  def f(state, x, cos, sin, mask):
    return nnx.merge(graphdef, state)(x, cos, sin, None, causal=mask)[0]
  return jax.checkpoint(f, policy=_REMAT_POLICIES[remat],
                        prevent_cse=False)(state, x, cos, sin, mask)


class Decoder(nnx.Module):
  """Decoder-only LM for the Llama / Qwen2 / Qwen3 families.

  Parameters carry logical axis names (``vocab``, ``embed``, ``heads``,
  ``kv_heads``, ``head_dim``, ``mlp``, and ``layers`` when scanned) as
  metadata only, so creation needs no mesh; see `logical_axes`.
  """

  def __init__(self, config: DecoderConfig, *, rngs: nnx.Rngs):
    cfg = config
    self.config = cfg
    self.embedding = _param(rngs, (cfg.vocab_size, cfg.hidden_size),
                            cfg.param_dtype, ("vocab", "embed"))
    if cfg.scan_layers:
      @nnx.split_rngs(splits=cfg.num_layers)
      @nnx.vmap(in_axes=(0,), out_axes=0,
                transform_metadata={nnx.PARTITION_NAME: "layers"})
      def make(r):
        return Block(cfg, rngs=r)
      self.layers = make(rngs)
    else:
      self.layers = nnx.List([Block(cfg, rngs=rngs)
                              for _ in range(cfg.num_layers)])
    self.final_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps,
                              param_dtype=cfg.param_dtype, axis="embed")
    if not cfg.tie_word_embeddings:
      self.lm_head = _param(rngs, (cfg.hidden_size, cfg.vocab_size),
                            cfg.param_dtype, ("embed", "vocab"))

  def hidden(self, tokens: Array, positions: Array, mask: Array,
             cache: KVCache | None = None, prefix: KVCache | None = None):
    """Final-norm hidden states of ``tokens``, optionally through a cache.

    Without a cache: causal attention restricted to keys with ``mask``.
    With a cache: the S tokens occupy slots [index, index+S). Each layer
    first writes its new k/v there, then attends over the whole cache: a
    query at slot q sees the slots ``<= q`` that are valid (the cached
    ones before ``index`` and the masked new tokens). ``valid`` gets
    ``mask`` at those slots and ``index`` advances by S. See `KVCache` for
    the layout of k and v (per-layer tuples for unrolled layers, stacked
    for ``scan_layers``); the new cache has the layout of ``cache``.

    With a ``prefix`` too (a read-only cache of B_p = B / n rows and P
    slots, e.g. prompts shared by n samples: row r continues prefix row
    r // n), every query also sees the prefix's valid slots, which come
    before the cache's; positions then run up to P + T_max. The prefix's
    keys are read once per prompt, not once per sample.

    Args:
      tokens: [B, S] int32.
      positions: [B, S] int32 RoPE positions (left-padded rows:
        `positions_from_mask`), in [0, S) without a cache and in
        [0, T_max) with one (a position counts the row's real tokens
        before it, so it never exceeds its slot); one outside gives NaN.
      mask: [B, S] bool, real (non-padding) tokens.
      cache: a `KVCache` or None.
      prefix: None, or a `KVCache` (any valid slots, same k/v layout as
        ``cache``) shared by groups of n consecutive rows; needs a cache.

    Returns:
      (hidden [B, S, D] in the compute dtype, new cache or None).
    """
    cfg = self.config
    if tokens.ndim != 2 or positions.shape != tokens.shape or (
        mask.shape != tokens.shape):
      raise ValueError(
          f"tokens, positions and mask must share a [B, S] shape, got "
          f"{tokens.shape}, {positions.shape}, {mask.shape}")
    b, s = tokens.shape
    mask = mask.astype(bool)
    table = self.embedding[...]  # [V, D]
    if parallel.in_mesh() and cache is None:
      # (Cached passes come from a sampler, which gathers the parameters
      # once per rollout: their lookup is local as it stands.)
      # Under FSDP each device looks the (gathered) token ids up in its
      # D-slice of the table, and one all-to-all of the [tokens, D]
      # result (in the compute dtype) hands each device its rows: cheaper
      # than gathering the [V, D] table and reducing its dense gradient
      # (a compiled 0.5B TPU step: -8%).
      table = table.astype(cfg.dtype)
      tokens = parallel.constrain(tokens, ("batch", None), _LOOKUP_RULES)
      x = jnp.take(table, tokens, axis=0)
      x = parallel.constrain(x, ("batch", None, "embed"), _LOOKUP_RULES)
    else:
      x = jnp.take(table, tokens, axis=0)
    x = x.astype(cfg.dtype)
    x = parallel.constrain(x, _RESIDUAL)
    # Positions count a row's real tokens, so they lie below the number of
    # slots: S here, the cache length with a cache.
    if prefix is not None:
      if cache is None:
        raise ValueError("a shared prefix needs a cache")
      bp = prefix.valid.shape[0]
      if b % bp or (isinstance(prefix.k, (tuple, list))
                    != isinstance(cache.k, (tuple, list))):
        raise ValueError(
            f"the prefix (batch {bp}, k of type {type(prefix.k).__name__}) "
            f"must divide the batch {b} and share the cache's layout "
            f"({type(cache.k).__name__})")
    n_slots = s if cache is None else (
        cache.valid.shape[1] + (0 if prefix is None else prefix.valid.shape[1]))
    cos, sin = _rope_angles(positions, cfg.head_dim, cfg.rope_theta, n_slots)

    if cache is None:
      if cfg.scan_layers:
        graphdef, state = nnx.split(self.layers)

        def body(x, st):
          block = nnx.merge(graphdef, st)
          return _run_block(block, x, cos, sin, mask, cfg.remat), None
        x, _ = jax.lax.scan(body, x, state)
      else:
        for layer in self.layers:
          x = _run_block(layer, x, cos, sin, mask, cfg.remat)
      return parallel.constrain(self.final_norm(x), _RESIDUAL), None

    t_max = cache.valid.shape[1]
    if cache.valid.shape[0] != b or s > t_max:
      raise ValueError(
          f"cache (batch {cache.valid.shape[0]}, max_len {t_max}) does not "
          f"fit tokens of shape {tokens.shape}")
    per_layer = isinstance(cache.k, (tuple, list))
    if per_layer and not (len(cache.k) == len(cache.v) == cfg.num_layers):
      raise ValueError(
          f"a per-layer cache needs {cfg.num_layers} k and v buffers, got "
          f"{len(cache.k)} and {len(cache.v)}")
    i = jnp.asarray(cache.index, jnp.int32)
    zero = jnp.zeros((), jnp.int32)
    valid = jax.lax.dynamic_update_slice(cache.valid, mask, (zero, i))
    slot = jnp.arange(t_max, dtype=jnp.int32)
    q_slot = i + jnp.arange(s, dtype=jnp.int32)
    allowed = valid[:, None, :] & (slot[None, None, :] <= q_slot[None, :, None])
    # A call that fills the whole cache (S = T_max: the write cannot start
    # anywhere but slot 0, so every old slot is overwritten) is a prefill:
    # its queries see exactly the new tokens, through the full-sequence
    # attention (a kernel, linear memory) instead of [B, S, T] scores.
    causal = mask if (s == t_max and prefix is None) else None
    lengths = None if cache.lengths is None else cache.lengths + s
    if _decodes_paged(cfg, s, cache, prefix):
      allowed = _PagedDecode(
          lengths, None if prefix is None else prefix.lengths,
          parallel.target_platform() != "tpu")

    def layer_prefix(li):
      """Layer li's (k_p, v_p, valid_p), or None without a prefix."""
      if prefix is None:
        return None
      return prefix.k[li], prefix.v[li], prefix.valid

    if cfg.scan_layers and not per_layer:
      graphdef, state = nnx.split(self.layers)
      pre_kv = None if prefix is None else (prefix.k, prefix.v)

      def body(carry, xs):
        x, ka, va = carry
        st, li, pkv = xs

        def kv_fn(k, v):
          ka2, va2 = _write(ka, k, i, li), _write(va, v, i, li)
          return (jax.lax.dynamic_index_in_dim(ka2, li, keepdims=False),
                  jax.lax.dynamic_index_in_dim(va2, li, keepdims=False),
                  (ka2, va2))
        pre = None if pkv is None else (pkv[0], pkv[1], prefix.valid)
        x, (ka, va) = nnx.merge(graphdef, st)(x, cos, sin, allowed, kv_fn,
                                               pre, causal)
        return (x, ka, va), None
      (x, k_new, v_new), _ = jax.lax.scan(
          body, (x, cache.k, cache.v),
          (state, jnp.arange(cfg.num_layers, dtype=jnp.int32), pre_kv))
    elif per_layer:
      ks, vs = [], []
      for li, layer in enumerate(self._blocks()):
        def kv_fn(k, v, li=li):
          kc, vc = _write(cache.k[li], k, i), _write(cache.v[li], v, i)
          return kc, vc, (kc, vc)
        x, (kc, vc) = layer(x, cos, sin, allowed, kv_fn, layer_prefix(li),
                            causal)
        ks.append(kc)
        vs.append(vc)
      k_new, v_new = type(cache.k)(ks), type(cache.v)(vs)
    else:  # Unrolled layers over a stacked cache.
      k_new, v_new = cache.k, cache.v
      for li, layer in enumerate(self.layers):
        def kv_fn(k, v, li=li, ka=k_new, va=v_new):
          ka2, va2 = _write(ka, k, i, li), _write(va, v, i, li)
          return ka2[li], va2[li], (ka2, va2)
        x, (k_new, v_new) = layer(x, cos, sin, allowed, kv_fn,
                                  layer_prefix(li), causal)
    x = self.final_norm(x)
    return x, KVCache(k=k_new, v=v_new, valid=valid, index=i + s,
                      lengths=lengths)

  def _blocks(self) -> list[Block]:
    """The layers as L blocks: scanned layers' stacked parameters sliced
    statically (layer li's arrays are views of the stacked ones)."""
    if not self.config.scan_layers:
      return list(self.layers)
    graphdef, state = nnx.split(self.layers)
    return [nnx.merge(graphdef, jax.tree.map(lambda x, li=li: x[li], state))
            for li in range(self.config.num_layers)]

  def head(self) -> Array:
    """LM-head matrix W [D, V] in the compute dtype; logits = hidden @ W."""
    if self.config.tie_word_embeddings:
      w = self.embedding[...].T
    else:
      w = self.lm_head[...]
    return w.astype(self.config.dtype)

  def logits(self, hidden: Array) -> Array:
    """hidden [..., D] -> logits [..., V] float32."""
    w = self.head()
    return jnp.einsum("...d,dv->...v", hidden.astype(w.dtype), w,
                      preferred_element_type=_wide(w.dtype))

  def __call__(self, tokens: Array, mask: Array | None = None,
               positions: Array | None = None) -> Array:
    """Full-sequence logits [B, S, V] float32 (no cache)."""
    if mask is None:
      mask = jnp.ones(tokens.shape, bool)
    if positions is None:
      positions = positions_from_mask(mask)
    return self.logits(self.hidden(tokens, positions, mask)[0])


class LMFns(NamedTuple):
  """Pure functions of a split model (see `as_functions`)."""
  hidden: Callable[..., tuple[Array, KVCache | None]]
  head: Callable[[Any], Array]
  logits: Callable[[Any, Array], Array]
  init_cache: Callable[..., KVCache]
  config: DecoderConfig
  # ``hidden`` takes ``prefix=``, a cache shared by groups of rows.
  shared_prefix: bool = False
  # Optional ``logits_t(params, hidden [R, D]) -> [V, R]`` float32, the
  # logits transposed (vocabulary-major: what the TPU sampler draws from).
  logits_t: Callable[[Any, Array], Array] | None = None


def as_functions(model: Decoder) -> tuple[LMFns, nnx.State]:
  """Splits ``model`` once into pure functions and its parameters.

  ``fns.hidden(params, tokens, positions, mask, cache=None, prefix=None)``,
  ``fns.head(params)``, ``fns.logits(params, hidden)`` and
  ``fns.logits_t(params, hidden [R, D]) -> [V, R]`` (the logits
  transposed: one product W^T h, which a TPU writes without a relayout)
  merge the graph inside, so they work under plain `jax.jit` / `jax.grad`;
  ``fns.init_cache(batch, max_len, dtype=None)`` (per-layer buffers, also
  for scanned layers: see `init_cache`); ``fns.config``.

  Returns:
    (fns, params) where params is the model's `nnx.State`.
  """
  graphdef, params = nnx.split(model)

  def hidden(params, tokens, positions, mask, cache=None, prefix=None):
    return nnx.merge(graphdef, params).hidden(tokens, positions, mask, cache,
                                              prefix)

  def head(params):
    return nnx.merge(graphdef, params).head()

  def logits(params, hidden):
    return nnx.merge(graphdef, params).logits(hidden)

  def logits_t(params, hidden):
    w = nnx.merge(graphdef, params).head()  # [D, V]
    return jnp.einsum("dv,rd->vr", w, hidden.astype(w.dtype),
                      preferred_element_type=_wide(w.dtype))

  cfg = model.config
  return LMFns(hidden=hidden, head=head, logits=logits,
               init_cache=functools.partial(init_cache, cfg, per_layer=True),
               config=cfg, shared_prefix=True, logits_t=logits_t), params


def abstract_decoder(config: DecoderConfig) -> Decoder:
  """A `Decoder` whose parameters are ``jax.ShapeDtypeStruct``s (no
  memory, no computation): ``as_functions`` and `logical_axes` work on it,
  e.g. to compile a model's programs for a TPU slice from any machine."""
  return nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0)))


def logical_axes(model_or_state: nnx.Module | nnx.State) -> nnx.State:
  """Logical axis names of every parameter, as a pytree like the state.

  Each Variable's value is replaced by its tuple of axis names, e.g.
  ``("embed", "heads")`` or ``("layers", "embed", "mlp")`` when scanned.
  Map it against the parameters with
  ``jax.tree.map(f, axes, params, is_leaf=lambda x: isinstance(x, tuple))``.
  """
  state = (nnx.state(model_or_state)
           if isinstance(model_or_state, nnx.Module) else model_or_state)
  return jax.tree.map(
      lambda v: v.replace(tuple(v.get_metadata().get("out_sharding") or ())),
      state, is_leaf=lambda x: isinstance(x, nnx.Variable))
