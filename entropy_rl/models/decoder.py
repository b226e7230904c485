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
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from entropy_rl.models.config import DecoderConfig

Array = jax.Array
_NEG = -1e30  # finite: fully masked rows (padding queries) give no NaN


def _wide(dtype) -> jnp.dtype:
  """float32, or the compute dtype where it is wider (float64 checks)."""
  return jnp.promote_types(dtype, jnp.float32)


class KVCache(NamedTuple):
  """Key/value cache shared by every layer.

  Prompts are left-padded so all rows end aligned; one write index serves
  the whole batch. A slot holds a real token iff ``valid`` says so. Writes
  past ``T_max`` cannot be detected under jit (``dynamic_update_slice``
  clamps the start): size the cache for prompt plus new tokens.
  """
  k: Array      # [L, B, K, T_max, Dh]
  v: Array      # [L, B, K, T_max, Dh]
  valid: Array  # [B, T_max] bool
  index: Array  # [] int32, next slot to write


def init_cache(config: DecoderConfig, batch: int, max_len: int,
               dtype: Any = None) -> KVCache:
  """An empty cache for ``batch`` rows of up to ``max_len`` tokens.

  Args:
    config: the model's configuration.
    batch: B.
    max_len: T_max, prompt plus generated tokens.
    dtype: dtype of k and v (bf16 halves the memory); default
      ``config.dtype``.

  Returns:
    A `KVCache` with zero k/v, no valid slot and index 0.
  """
  if batch <= 0 or max_len <= 0:
    raise ValueError(f"batch and max_len must be positive, got batch={batch}, "
                     f"max_len={max_len}")
  dtype = jnp.dtype(dtype or config.dtype)
  shape = (config.num_layers, batch, config.num_kv_heads, max_len,
           config.head_dim)
  return KVCache(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype),
                 valid=jnp.zeros((batch, max_len), bool),
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


def _rope_angles(positions: Array, head_dim: int, theta: float):
  """cos, sin of RoPE for integer positions [B, S] -> [B, S, Dh/2] f32."""
  inv_freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float32)
                              / head_dim))
  ang = positions.astype(jnp.float32)[..., None] * jnp.asarray(
      inv_freq, jnp.float32)
  return jnp.cos(ang), jnp.sin(ang)


def _apply_rope(x: Array, cos: Array, sin: Array) -> Array:
  """Half-split RoPE on x [B, S, heads, Dh] with cos/sin [B, S, Dh/2]."""
  half = x.shape[-1] // 2
  x32 = x.astype(_wide(x.dtype))
  x1, x2 = x32[..., :half], x32[..., half:]
  c = cos[:, :, None, :].astype(x32.dtype)
  s = sin[:, :, None, :].astype(x32.dtype)
  return jnp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s],
                         axis=-1).astype(x.dtype)


def _attend(q, k, v, new_mask, k_old, v_old, old_mask):
  """Softmax attention over cached slots and the new tokens, f32 softmax.

  The old and new parts share one softmax (common max and denominator), so
  the cache never has to be written before it is read.

  Args:
    q: [B, S, K, G, Dh] queries (already scaled by Dh^-1/2).
    k, v: [B, S, K, Dh] the new tokens' keys and values.
    new_mask: [B, S, S] bool, query i may see new key j.
    k_old, v_old: [B, K, T, Dh] cached keys/values, or None.
    old_mask: [B, T] bool, cached slots every query may see.

  Returns:
    [B, S, K, G, Dh] in q's dtype.
  """
  f32 = _wide(q.dtype)
  s = jnp.einsum("bqkgd,bskd->bkgqs", q, k, preferred_element_type=f32)
  s = jnp.where(new_mask[:, None, None], s, _NEG)
  m = jnp.max(s, axis=-1, keepdims=True)
  if k_old is not None:
    so = jnp.einsum("bqkgd,bktd->bkgqt", q, k_old.astype(q.dtype),
                    preferred_element_type=f32)
    so = jnp.where(old_mask[:, None, None, None, :], so, _NEG)
    m = jnp.maximum(m, jnp.max(so, axis=-1, keepdims=True))
  # p @ v in v's dtype (as transformers does after its softmax): XLA:CPU
  # lacks some bf16 x bf16 -> f32 dot layouts.
  p = jnp.exp(s - m)
  denom = jnp.sum(p, axis=-1)
  out = jnp.einsum("bkgqs,bskd->bqkgd", p.astype(v.dtype), v).astype(f32)
  if k_old is not None:
    po = jnp.exp(so - m)
    denom = denom + jnp.sum(po, axis=-1)
    out = out + jnp.einsum("bkgqt,bktd->bqkgd", po.astype(v.dtype),
                           v_old.astype(v.dtype)).astype(f32)
  out = out / jnp.transpose(denom, (0, 3, 1, 2))[..., None]
  return out.astype(q.dtype)


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
    y = x @ getattr(self, f"{name}_proj")[...].astype(x.dtype)
    if self.cfg.qkv_bias:
      y = y + getattr(self, f"{name}_bias")[...].astype(x.dtype)
    return y

  def __call__(self, x, cos, sin, new_mask, k_old, v_old, old_mask):
    """x [B, S, D] -> (out [B, S, D], (k, v) [B, S, K, Dh] after RoPE)."""
    cfg = self.cfg
    b, s, _ = x.shape
    kv, dh = cfg.num_kv_heads, cfg.head_dim
    q = self._proj(x, "q").reshape(b, s, cfg.num_heads, dh)
    k = self._proj(x, "k").reshape(b, s, kv, dh)
    v = self._proj(x, "v").reshape(b, s, kv, dh)
    if cfg.qk_norm:
      q, k = self.q_norm(q), self.k_norm(k)
    q = _apply_rope(q, cos, sin)
    k = _apply_rope(k, cos, sin)
    qg = (q * jnp.asarray(dh ** -0.5, q.dtype)).reshape(
        b, s, kv, cfg.num_heads // kv, dh)
    o = _attend(qg, k, v, new_mask, k_old, v_old, old_mask)
    o = o.reshape(b, s, cfg.num_heads * dh)
    return o @ self.o_proj[...].astype(x.dtype), (k, v)


class MLP(nnx.Module):
  """SwiGLU: W_down (silu(W_gate x) * W_up x)."""

  def __init__(self, cfg: DecoderConfig, *, rngs: nnx.Rngs):
    d, f, pd = cfg.hidden_size, cfg.intermediate_size, cfg.param_dtype
    self.gate_proj = _param(rngs, (d, f), pd, ("embed", "mlp"))
    self.up_proj = _param(rngs, (d, f), pd, ("embed", "mlp"))
    self.down_proj = _param(rngs, (f, d), pd, ("mlp", "embed"))

  def __call__(self, x):
    dt = x.dtype
    g = x @ self.gate_proj[...].astype(dt)
    u = x @ self.up_proj[...].astype(dt)
    return (jax.nn.silu(g) * u) @ self.down_proj[...].astype(dt)


class Block(nnx.Module):
  """Pre-norm transformer block."""

  def __init__(self, cfg: DecoderConfig, *, rngs: nnx.Rngs):
    pd, eps = cfg.param_dtype, cfg.rms_norm_eps
    self.attn_norm = RMSNorm(cfg.hidden_size, eps, param_dtype=pd,
                             axis="embed")
    self.attn = Attention(cfg, rngs=rngs)
    self.mlp_norm = RMSNorm(cfg.hidden_size, eps, param_dtype=pd, axis="embed")
    self.mlp = MLP(cfg, rngs=rngs)

  def __call__(self, x, cos, sin, new_mask, k_old, v_old, old_mask):
    a, kv = self.attn(self.attn_norm(x), cos, sin, new_mask, k_old, v_old,
                      old_mask)
    x = x + a
    return x + self.mlp(self.mlp_norm(x)), kv


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
             cache: KVCache | None = None):
    """Final-norm hidden states of ``tokens``, optionally through a cache.

    Without a cache: causal attention restricted to keys with ``mask``.
    With a cache: the S tokens occupy slots [index, index+S); each query
    sees the valid cached slots before ``index`` and the masked new tokens
    at or before its own slot; the new k/v, ``valid`` and ``index`` are
    written once for all layers.

    Args:
      tokens: [B, S] int32.
      positions: [B, S] int32 RoPE positions (left-padded rows:
        `positions_from_mask`).
      mask: [B, S] bool, real (non-padding) tokens.
      cache: a `KVCache` or None.

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
    x = jnp.take(self.embedding[...], tokens, axis=0).astype(cfg.dtype)
    cos, sin = _rope_angles(positions, cfg.head_dim, cfg.rope_theta)
    new_mask = jnp.tril(jnp.ones((s, s), bool))[None] & mask[:, None, :]
    if cache is None:
      k_old = v_old = old_mask = None
    else:
      t_max = cache.valid.shape[1]
      if cache.valid.shape[0] != b or s > t_max:
        raise ValueError(
            f"cache (batch {cache.valid.shape[0]}, max_len {t_max}) does not "
            f"fit tokens of shape {tokens.shape}")
      k_old, v_old = cache.k, cache.v
      old_mask = cache.valid & (jnp.arange(t_max) < cache.index)[None]

    if cfg.scan_layers:
      graphdef, state = nnx.split(self.layers)

      def body(x, xs):
        st, ko, vo = xs
        x, kv = nnx.merge(graphdef, st)(x, cos, sin, new_mask, ko, vo,
                                        old_mask)
        return x, (None if cache is None else kv)
      x, kvs = jax.lax.scan(body, x, (state, k_old, v_old))
      if cache is not None:
        ks, vs = kvs
    else:
      ks, vs = [], []
      for i, layer in enumerate(self.layers):
        ko = None if k_old is None else k_old[i]
        vo = None if v_old is None else v_old[i]
        x, (k, v) = layer(x, cos, sin, new_mask, ko, vo, old_mask)
        ks.append(k)
        vs.append(v)
      if cache is not None:
        ks, vs = jnp.stack(ks), jnp.stack(vs)
    x = self.final_norm(x)
    if cache is None:
      return x, None
    i = jnp.asarray(cache.index, jnp.int32)
    zero = jnp.zeros((), jnp.int32)
    start = (zero, zero, zero, i, zero)
    write = lambda c, n: jax.lax.dynamic_update_slice(  # noqa: E731
        c, jnp.swapaxes(n, 2, 3).astype(c.dtype), start)
    new = KVCache(k=write(cache.k, ks), v=write(cache.v, vs),
                  valid=jax.lax.dynamic_update_slice(cache.valid, mask,
                                                     (zero, i)),
                  index=i + s)
    return x, new

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


def as_functions(model: Decoder) -> tuple[LMFns, nnx.State]:
  """Splits ``model`` once into pure functions and its parameters.

  ``fns.hidden(params, tokens, positions, mask, cache=None)``,
  ``fns.head(params)``, ``fns.logits(params, hidden)`` merge the graph
  inside, so they work under plain `jax.jit` / `jax.grad`;
  ``fns.init_cache(batch, max_len, dtype=None)``; ``fns.config``.

  Returns:
    (fns, params) where params is the model's `nnx.State`.
  """
  graphdef, params = nnx.split(model)

  def hidden(params, tokens, positions, mask, cache=None):
    return nnx.merge(graphdef, params).hidden(tokens, positions, mask, cache)

  def head(params):
    return nnx.merge(graphdef, params).head()

  def logits(params, hidden):
    return nnx.merge(graphdef, params).logits(hidden)

  cfg = model.config
  return LMFns(hidden=hidden, head=head, logits=logits,
               init_cache=functools.partial(init_cache, cfg),
               config=cfg), params


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
