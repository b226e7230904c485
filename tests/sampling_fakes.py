"""Fake models with the sampler's model interface (``LMFns``), for tests.

Each constructor returns ``(fns, params)`` like
``entropy_rl.models.as_functions``:
``fns.hidden(params, tokens [B,S], positions [B,S], mask [B,S], cache)``,
``fns.head(params) -> W [D, V]``, ``fns.logits(params, hidden)`` (f32),
``fns.init_cache(batch, max_len, dtype=None)`` and ``fns.config``.

* :func:`next_token_model`: deterministic; the next token is a function of the
  last token, its position and how many valid slots it can see, so wrong
  positions or a wrong cache mask change the output.
* :func:`fixed_logits_model`: the same logits at every step (sampling
  statistics).
* :func:`tiny_attention_model`: a small real transformer (multi-head
  attention over a KV cache with layout [L, B, H, T, Dh]) whose cached decode
  must equal its full recompute.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class KVCache(NamedTuple):
  k: jax.Array  # [L, B, H, T, Dh]
  v: jax.Array  # [L, B, H, T, Dh]
  valid: jax.Array  # [B, T] bool
  index: jax.Array  # [] int32


class FakeFns(NamedTuple):
  hidden: Callable[..., Any]
  head: Callable[..., Any]
  logits: Callable[..., Any]
  init_cache: Callable[..., Any]
  config: Any


@dataclasses.dataclass(frozen=True)
class FakeConfig:
  vocab_size: int
  hidden_size: int
  num_layers: int = 1
  num_heads: int = 1
  head_dim: int = 1


def _make_init_cache(cfg: FakeConfig):
  def init_cache(batch, max_len, dtype=None):
    shape = (cfg.num_layers, batch, cfg.num_heads, max_len, cfg.head_dim)
    dt = dtype or jnp.float32
    return KVCache(jnp.zeros(shape, dt), jnp.zeros(shape, dt),
                   jnp.zeros((batch, max_len), bool),
                   jnp.zeros((), jnp.int32))
  return init_cache


def _write(cache: KVCache, k_new, v_new, mask) -> KVCache:
  """k_new, v_new [L, B, H, S, Dh] at slots [index, index + S)."""
  i = cache.index
  z = jnp.zeros((), jnp.int32)
  return KVCache(
      jax.lax.dynamic_update_slice(cache.k, k_new.astype(cache.k.dtype),
                                   (z, z, z, i, z)),
      jax.lax.dynamic_update_slice(cache.v, v_new.astype(cache.v.dtype),
                                   (z, z, z, i, z)),
      jax.lax.dynamic_update_slice(cache.valid, mask.astype(bool), (z, i)),
      i + mask.shape[1])


def _logits(params, hidden):
  return jnp.einsum("...d,dv->...v", hidden, params["w"],
                    preferred_element_type=jnp.float32)


# ----------------------------------------------------------------------------


def next_token_rule(tok, pos, ctx, vocab: int):
  """The deterministic model's next token: (3·tok + pos + ctx) mod V."""
  return (3 * tok + pos + ctx) % vocab


def next_token_model(vocab: int = 17, scale: float = 40.0):
  """Deterministic fake: the logits are ``scale`` · onehot(next token).

  next = :func:`next_token_rule` (token, position, ctx) where ctx counts the
  valid slots the token sees (cached valid slots before ``index`` plus the
  real new tokens at or before it; ``pos + 1`` when all is right).
  """
  cfg = FakeConfig(vocab_size=vocab, hidden_size=vocab)

  def hidden(params, tokens, positions, mask, cache=None):
    mask = mask.astype(bool)
    ctx = jnp.cumsum(mask.astype(jnp.int32), -1)  # [B, S]
    if cache is not None:
      t = cache.valid.shape[1]
      old = cache.valid & (jnp.arange(t) < cache.index)[None]
      ctx = ctx + jnp.sum(old, -1, dtype=jnp.int32)[:, None]
    nxt = next_token_rule(tokens, positions, ctx, vocab)
    h = scale * jax.nn.one_hot(nxt, vocab, dtype=jnp.float32)
    if cache is None:
      return h, None
    kv = tokens.astype(jnp.float32)[None, :, None, :, None]  # [1,B,1,S,1]
    return h, _write(cache, kv, kv, mask)

  params = {"w": jnp.eye(vocab, dtype=jnp.float32)}
  fns = FakeFns(hidden, lambda p: p["w"], _logits, _make_init_cache(cfg), cfg)
  return fns, params


def fixed_logits_model(logits):
  """Every step's logits are ``logits`` [V] (hidden = 1, W = logits[None])."""
  logits = jnp.asarray(logits, jnp.float32)
  cfg = FakeConfig(vocab_size=int(logits.shape[0]), hidden_size=1)

  def hidden(params, tokens, positions, mask, cache=None):
    del params, positions
    h = jnp.ones(tokens.shape + (1,), jnp.float32)
    if cache is None:
      return h, None
    kv = jnp.zeros((1,) + tokens.shape[:1] + (1, tokens.shape[1], 1))
    return h, _write(cache, kv, kv, mask)

  fns = FakeFns(hidden, lambda p: p["w"], _logits, _make_init_cache(cfg), cfg)
  return fns, {"w": logits[None, :]}


# ----------------------------------------------------------------------------


def _rms(x):
  return x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6)


def _rope(x, positions):
  """Half-split RoPE on x [B, S, H, Dh] with positions [B, S]."""
  half = x.shape[-1] // 2
  inv = 1.0 / (10_000.0 ** (np.arange(half, dtype=np.float32) / half))
  ang = positions.astype(jnp.float32)[..., None] * inv  # [B, S, half]
  c, s = jnp.cos(ang)[:, :, None], jnp.sin(ang)[:, :, None]
  x1, x2 = x[..., :half], x[..., half:]
  return jnp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], -1)


def tiny_attention_model(vocab: int = 48, dim: int = 32, layers: int = 2,
                         heads: int = 2, seed: int = 0,
                         logit_scale: float = 1.0):
  """A small pre-norm transformer (RoPE, MHA, tanh MLP, untied head).

  Full recompute (cache None): causal attention over the real tokens. With
  a cache: new tokens attend to the valid slots before ``index`` and to the
  real new tokens at or before them; k/v are written after the layer loop.
  """
  dh = dim // heads
  cfg = FakeConfig(vocab_size=vocab, hidden_size=dim, num_layers=layers,
                   num_heads=heads, head_dim=dh)
  ks = iter(jax.random.split(jax.random.key(seed), 4 * layers + 2))
  nrm = lambda shape, s: s * jax.random.normal(next(ks), shape)  # noqa: E731
  params = {
      "emb": nrm((vocab, dim), 1.0),
      "layers": [dict(qkv=nrm((dim, 3 * dim), dim ** -0.5),
                      o=nrm((dim, dim), dim ** -0.5),
                      up=nrm((dim, 2 * dim), dim ** -0.5),
                      down=nrm((2 * dim, dim), (2 * dim) ** -0.5))
                 for _ in range(layers)],
      "w": nrm((dim, vocab), 2.0),
      "scale": jnp.asarray(logit_scale, jnp.float32),
  }

  def hidden(params, tokens, positions, mask, cache=None):
    b, s = tokens.shape
    mask = mask.astype(bool)
    x = params["emb"][tokens]
    causal = jnp.tril(jnp.ones((s, s), bool))[None] & mask[:, None, :]
    if cache is not None:
      t = cache.valid.shape[1]
      old = cache.valid & (jnp.arange(t) < cache.index)[None]  # [B, T]
      allowed = jnp.concatenate(
          [jnp.broadcast_to(old[:, None], (b, s, t)), causal], -1)
    else:
      allowed = causal
    new_k, new_v = [], []
    for li, lp in enumerate(params["layers"]):
      q, k, v = jnp.split(_rms(x) @ lp["qkv"], 3, -1)
      q, k, v = (y.reshape(b, s, heads, dh) for y in (q, k, v))
      q, k = _rope(q, positions), _rope(k, positions)
      kt, vt = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B,H,S,Dh]
      new_k.append(kt)
      new_v.append(vt)
      if cache is not None:
        kt = jnp.concatenate([cache.k[li].astype(kt.dtype), kt], 2)
        vt = jnp.concatenate([cache.v[li].astype(vt.dtype), vt], 2)
      sc = jnp.einsum("bshd,bhtd->bhst", q, kt) * dh ** -0.5
      sc = jnp.where(allowed[:, None], sc, -1e30)
      att = jax.nn.softmax(sc, -1)
      o = jnp.einsum("bhst,bhtd->bshd", att, vt).reshape(b, s, dim)
      x = x + o @ lp["o"]
      x = x + jnp.tanh(_rms(x) @ lp["up"]) @ lp["down"]
    h = _rms(x)
    if cache is None:
      return h, None
    return h, _write(cache, jnp.stack(new_k), jnp.stack(new_v), mask)

  def head(params):
    return params["w"] * params["scale"]

  def logits(params, h):
    return jnp.einsum("...d,dv->...v", h, head(params),
                      preferred_element_type=jnp.float32)

  fns = FakeFns(hidden, head, logits, _make_init_cache(cfg), cfg)
  return fns, params


def full_recompute_logits(fns, params, prompt_tokens, prompt_mask, tokens):
  """Logits [R, N, V] that predicted ``tokens`` [R, N], by one full forward.

  The sequence is prompt (left-padded) + generated tokens; row r's position
  of generated token j is (real prompt length) + j.
  """
  seq = jnp.concatenate([prompt_tokens, tokens], 1)
  mask = jnp.concatenate([prompt_mask.astype(bool),
                          jnp.ones(tokens.shape, bool)], 1)
  pos = jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), -1) - 1, 0)
  h, _ = fns.hidden(params, seq, pos, mask, None)
  p, n = prompt_tokens.shape[1], tokens.shape[1]
  return fns.logits(params, h[:, p - 1:p + n - 1]), h[:, p - 1:p + n - 1]
