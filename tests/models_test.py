"""entropy_rl.models: parity with transformers, KV cache, padding, checkpoints.

Random Llama / Qwen2 / Qwen3 models built with transformers (float32) are
saved, loaded with `load_pretrained` and must give the same logits; the KV
cache must reproduce full recomputation; left padding must change nothing;
`save_pretrained` must write what transformers loads.
"""

import functools
import json
import os
import pathlib
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from entropy_rl import models
from entropy_rl.models import checkpoint

try:
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
except ImportError:  # pragma: no cover
  if os.environ.get("CI") == "true":
    raise
  pytest.skip("torch/transformers not installed (the test extra)",
              allow_module_level=True)

VOCAB = 128
COMMON = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2,
              intermediate_size=96, max_position_embeddings=256)
# family -> (config class, model class, extra config, scan_layers,
#            max_shard_size for transformers' save)
FAMILIES = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM,
              dict(tie_word_embeddings=False, rope_theta=5_000.0), False,
              "40KB"),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM,
              dict(tie_word_embeddings=True, rope_theta=20_000.0), True,
              None),
    "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM,
              dict(tie_word_embeddings=False, head_dim=32,
                   rope_theta=1_000_000.0), False, None),
}
_TMP = tempfile.TemporaryDirectory()
_HF = {}


def hf_model(family):
  """A random transformers model of ``family`` and its saved directory."""
  if family not in _HF:
    config_cls, model_cls, extra, _, shard = FAMILIES[family]
    torch.manual_seed(len(_HF))
    model = model_cls(config_cls(**COMMON, **extra)).eval()
    with torch.no_grad():  # Random norms and biases: nothing hides a bug.
      for name, p in model.named_parameters():
        if "norm" in name or "bias" in name:
          p.add_(0.2 * torch.randn_like(p))
    path = pathlib.Path(_TMP.name) / family
    kw = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(path, **kw)
    _HF[family] = model, path
  return _HF[family]


def hf_logits(model, tokens, mask=None):
  with torch.no_grad():
    kw = {} if mask is None else {"attention_mask": torch.tensor(mask)}
    return model(torch.tensor(tokens), **kw).logits.numpy()


@functools.partial(jax.jit, static_argnums=0)
def _forward(fns, params, x, mask):
  pos = models.positions_from_mask(mask)
  return fns.logits(params, fns.hidden(params, x, pos, mask)[0])


def forward(model, x, mask=None):
  """Jitted full-sequence logits (eager dispatch is slow on 2 cores)."""
  fns, params = models.as_functions(model)
  mask = np.ones(x.shape, bool) if mask is None else mask
  return np.asarray(_forward(fns, params, x, mask))


def tokens(b, s, seed=0):
  return np.random.RandomState(seed).randint(0, VOCAB, (b, s)).astype(
      np.int32)


def left_padded(lengths, total, seed=0):
  """Rows of ``lengths`` real tokens, left-padded to ``total``."""
  toks = tokens(len(lengths), total, seed)
  mask = np.arange(total)[None] >= total - np.asarray(lengths)[:, None]
  return np.where(mask, toks, 0).astype(np.int32), mask


class ParityTest(parameterized.TestCase):

  @parameterized.parameters("llama", "qwen2", "qwen3")
  def test_logits_equal_transformers(self, family):
    hf, path = hf_model(family)
    scan = FAMILIES[family][3]
    if FAMILIES[family][4]:
      self.assertTrue((path / "model.safetensors.index.json").exists())
    model = models.load_pretrained(path, scan_layers=scan)
    self.assertEqual(model.config.hf_model_type, family)
    self.assertEqual(model.config.scan_layers, scan)
    x = tokens(2, 11)
    np.testing.assert_allclose(forward(model, x), hf_logits(hf, x),
                               atol=1e-4, rtol=0)

  def test_left_padded_logits_equal_transformers(self):
    hf, path = hf_model("qwen2")
    model = models.load_pretrained(path)
    x, mask = left_padded([7, 4, 1], 7)
    ours = forward(model, x, mask)
    for row, n in enumerate([7, 4, 1]):
      ref = hf_logits(hf, x[row:row + 1, 7 - n:])[0]
      np.testing.assert_allclose(ours[row, 7 - n:], ref, atol=1e-4, rtol=0)

  @parameterized.parameters("llama", "qwen3")
  def test_save_pretrained_round_trip(self, family):
    hf, path = hf_model(family)
    model = models.load_pretrained(path, scan_layers=family == "qwen3")
    out = pathlib.Path(_TMP.name) / f"ours_{family}"
    models.save_pretrained(model, out, max_shard_size=30_000)
    self.assertTrue((out / "model.safetensors.index.json").exists())
    again = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    self.assertIsInstance(again, type(hf))
    x = tokens(2, 9, seed=3)
    np.testing.assert_allclose(hf_logits(again, x), hf_logits(hf, x),
                               atol=1e-6, rtol=0)
    reloaded = models.load_pretrained(out)
    jax.tree.map(np.testing.assert_array_equal,
                 nnx.to_pure_dict(nnx.state(reloaded)),
                 nnx.to_pure_dict(nnx.state(models.load_pretrained(path))))


def small_config(**kw):
  return models.DecoderConfig(**{**dict(
      vocab_size=VOCAB, hidden_size=64, num_layers=2, num_heads=4,
      num_kv_heads=2, intermediate_size=96, qkv_bias=True, qk_norm=True,
      tie_word_embeddings=False), **kw})


def random_model(**kw):
  """A random `Decoder` with norm scales away from 1 and non-zero biases."""
  model = models.Decoder(small_config(**kw), rngs=nnx.Rngs(0))
  keys = iter(jax.random.split(jax.random.key(1), 64))

  def bump(path, x):
    name = jax.tree_util.keystr(path)
    if "scale" in name or "bias" in name:
      return x + 0.2 * jax.random.normal(next(keys), x.shape, x.dtype)
    return x
  state = nnx.state(model)
  nnx.replace_by_pure_dict(state, jax.tree_util.tree_map_with_path(
      bump, nnx.to_pure_dict(state)))
  nnx.update(model, state)
  return model


class CacheTest(parameterized.TestCase):

  @parameterized.parameters(False, True)
  def test_incremental_decode_equals_full_recompute(self, scan):
    """Chunked prefill (3 + 2 tokens) then 4 single steps, left-padded."""
    fns, params = models.as_functions(random_model(scan_layers=scan))
    lengths, p, n = [5, 3, 1], 5, 4
    _, prompt_mask = left_padded(lengths, p)
    mask = np.concatenate([prompt_mask, np.ones((3, n), bool)], axis=1)
    x = np.where(mask, tokens(3, p + n, seed=8), 0).astype(np.int32)
    pos = np.asarray(models.positions_from_mask(jnp.asarray(mask)))
    full = _forward(fns, params, x, mask)

    @jax.jit
    def step(params, x, pos, mask, cache):
      h, cache = fns.hidden(params, x, pos, mask, cache)
      return fns.logits(params, h), cache
    cache = fns.init_cache(3, p + n + 2)
    got = []
    for a, b in [(0, 3), (3, 5)] + [(t, t + 1) for t in range(p, p + n)]:
      logits, cache = step(params, x[:, a:b], pos[:, a:b], mask[:, a:b], cache)
      got.append(logits)
    got = np.concatenate(got, axis=1)
    np.testing.assert_allclose(np.where(mask[..., None], got, 0),
                               np.where(mask[..., None], full, 0),
                               atol=1e-5, rtol=0)
    self.assertEqual(int(cache.index), p + n)
    np.testing.assert_array_equal(
        cache.valid, np.concatenate([mask, np.zeros((3, 2), bool)], 1))
    # The most padded row equals the same row decoded alone, unpadded.
    alone = x[2:, p - lengths[2]:]
    ref = _forward(fns, params, alone, np.ones_like(alone, bool))
    np.testing.assert_allclose(got[2, p - lengths[2]:], ref[0], atol=1e-5,
                               rtol=0)

  def test_jit_equals_no_jit_and_padding_values_ignored(self):
    fns, params = models.as_functions(random_model())
    x, mask = left_padded([6, 2], 6, seed=2)
    pos = models.positions_from_mask(jnp.asarray(mask))
    hidden = jax.jit(fns.hidden)
    h1, _ = fns.hidden(params, x, pos, mask)
    h2, _ = hidden(params, x, pos, mask)
    np.testing.assert_allclose(h1, h2, atol=1e-6, rtol=0)
    junk = np.where(mask, x, 77)  # Different pad ids: same real outputs.
    h3, _ = hidden(params, junk, pos, mask)
    np.testing.assert_allclose(np.where(mask[..., None], h3, 0),
                               np.where(mask[..., None], h1, 0), atol=1e-6)
    self.assertTrue(np.isfinite(np.asarray(h1)).all())

  def test_cache_shapes_and_dtype(self):
    cfg = small_config()
    cache = models.init_cache(cfg, 3, 10, dtype=jnp.bfloat16)
    # Unrolled layers: one [B, K, T, Dh] buffer per layer.
    for buf in (cache.k, cache.v):
      self.assertIsInstance(buf, tuple)
      self.assertLen(buf, 2)
      for x in buf:
        self.assertEqual(x.shape, (3, 2, 10, 16))
        self.assertEqual(x.dtype, jnp.bfloat16)
    self.assertEqual(cache.valid.shape, (3, 10))
    self.assertEqual(cache.index.dtype, jnp.int32)
    # Scanned layers: one stacked [L, B, K, T, Dh] buffer.
    stacked = models.init_cache(cfg.replace(scan_layers=True), 3, 10,
                                dtype=jnp.bfloat16)
    for buf in (stacked.k, stacked.v):
      self.assertEqual(buf.shape, (2, 3, 2, 10, 16))
      self.assertEqual(buf.dtype, jnp.bfloat16)
    self.assertEqual(stacked.valid.shape, (3, 10))
    with self.assertRaisesRegex(ValueError, "max_len"):
      models.init_cache(cfg, 3, 0)

  @parameterized.parameters(False, True)
  def test_cache_layouts_decode_equals_full_recompute(self, scan):
    """Per-layer tuple caches (unrolled) and stacked caches (scanned, and
    stacked given to unrolled layers) reproduce full recomputation through
    a prefill and a lax.scan of single-token steps, as the sampler runs."""
    fns, params = models.as_functions(random_model(scan_layers=scan,
                                                   num_layers=3))
    lengths, p, n = [6, 2, 4], 6, 5
    _, prompt_mask = left_padded(lengths, p)
    mask = np.concatenate([prompt_mask, np.ones((3, n), bool)], axis=1)
    x = np.where(mask, tokens(3, p + n, seed=11), 0).astype(np.int32)
    pos = np.asarray(models.positions_from_mask(jnp.asarray(mask)))
    full = np.asarray(_forward(fns, params, x, mask))

    @jax.jit
    def decode(params, cache):
      h, cache = fns.hidden(params, x[:, :p], pos[:, :p], mask[:, :p], cache)
      first = fns.logits(params, h)

      def step(cache, t):
        sl = lambda a: jax.lax.dynamic_slice_in_dim(a, t, 1, 1)  # noqa: E731
        h, cache = fns.hidden(params, sl(x), sl(pos), sl(mask), cache)
        return cache, fns.logits(params, h)[:, 0]
      cache, rest = jax.lax.scan(step, cache, jnp.arange(p, p + n))
      return jnp.concatenate([first, jnp.swapaxes(rest, 0, 1)], 1), cache

    # as_functions hands out per-layer buffers for either layer layout;
    # the stacked [L, B, K, T, Dh] cache (models.init_cache's default for
    # scanned layers) decodes to the same logits and the same cache.
    cache = fns.init_cache(3, p + n)
    self.assertIsInstance(cache.k, tuple)
    self.assertLen(cache.k, 3)
    stacked = models.init_cache(fns.config, 3, p + n)
    if scan:
      self.assertEqual(stacked.k.shape, (3, 3, 2, p + n, 16))
    else:
      self.assertIsInstance(stacked.k, tuple)
      stacked = stacked._replace(k=jnp.stack(stacked.k),
                                 v=jnp.stack(stacked.v))
    layouts = [cache, stacked]
    results = []
    for c in layouts:
      got, out = decode(params, c)
      np.testing.assert_allclose(np.where(mask[..., None], got, 0),
                                 np.where(mask[..., None], full, 0),
                                 atol=1e-5, rtol=0)
      self.assertEqual(jax.tree.structure(out.k), jax.tree.structure(c.k))
      self.assertEqual(int(out.index), p + n)
      np.testing.assert_array_equal(out.valid, mask)
      results.append((got, out))
    # Both layouts: the same logits and the same cache.
    (g1, o1), (g2, o2) = results
    np.testing.assert_allclose(g1, g2, atol=1e-6, rtol=0)
    np.testing.assert_allclose(jnp.stack(o1.k), o2.k, atol=1e-6, rtol=0)
    np.testing.assert_allclose(jnp.stack(o1.v), o2.v, atol=1e-6, rtol=0)
    # Every real token's k/v is in the cache: a fresh prefill of the
    # whole sequence writes the same values at the valid slots.
    _, ref = jax.jit(fns.hidden)(params, x, pos, mask,
                                 fns.init_cache(3, p + n))
    vm = mask[:, None, :, None]
    for a, b in zip(jax.tree.leaves((results[0][1].k, results[0][1].v)),
                    jax.tree.leaves((ref.k, ref.v))):
      np.testing.assert_allclose(np.where(vm, a, 0), np.where(vm, b, 0),
                                 atol=1e-5, rtol=0)

  @parameterized.parameters("unrolled", "stacked", "scan")
  def test_shared_prefix_equals_repeated_cache(self, layout):
    """Decoding R = n·B rows against a B-row prompt cache (``prefix``)
    gives the logits of the same rows decoding with the prompt repeated
    into their own cache: a 2-token chunk, then single tokens."""
    fns, params = models.as_functions(random_model(
        scan_layers=layout == "scan", num_layers=3))
    n, p, steps = 3, 5, 4
    x_p, m_p = left_padded([5, 2], p, seed=4)  # [B=2, P]
    pos_p = models.positions_from_mask(jnp.asarray(m_p))
    r = 2 * n
    new = tokens(r, steps + 1, seed=5)  # [R, 2 + (steps - 1)]
    base = np.repeat(m_p.sum(1), n)[:, None]  # [R, 1] positions start

    def stackify(c):
      if layout != "stacked":
        return c
      return c._replace(k=jnp.stack(c.k), v=jnp.stack(c.v))

    @jax.jit
    def decode(params, prefix, cache):
      out = []
      for a, b in [(0, 2)] + [(t, t + 1) for t in range(2, steps + 1)]:
        pos = base + np.arange(a, b)[None]
        h, cache = fns.hidden(params, new[:, a:b], pos,
                              np.ones((r, b - a), bool), cache, prefix)
        out.append(fns.logits(params, h))
      return jnp.concatenate(out, 1), cache

    _, prefix = jax.jit(fns.hidden)(params, x_p, pos_p, m_p,
                                    stackify(fns.init_cache(2, p)))
    shared, gen = decode(params, prefix, stackify(fns.init_cache(r, steps + 1)))
    # Reference: the prompts repeated n times into each row's own cache.
    rep = lambda a: np.repeat(np.asarray(a), n, axis=0)  # noqa: E731
    _, full = jax.jit(fns.hidden)(params, rep(x_p), rep(pos_p), rep(m_p),
                                  stackify(fns.init_cache(r, p + steps + 1)))
    ref, _ = decode(params, None, full)
    np.testing.assert_allclose(shared, ref, atol=1e-5, rtol=0)
    self.assertEqual(int(gen.index), steps + 1)
    self.assertTrue(np.asarray(gen.valid).all())
    # A different prompt in one group changes that group's rows only.
    x2 = x_p.copy()
    x2[1, -1] = (x2[1, -1] + 1) % VOCAB
    _, prefix2 = jax.jit(fns.hidden)(params, x2, pos_p, m_p,
                                     stackify(fns.init_cache(2, p)))
    other, _ = decode(params, prefix2, stackify(fns.init_cache(r, steps + 1)))
    np.testing.assert_array_equal(other[:n], shared[:n])
    self.assertGreater(float(jnp.abs(other[n:] - shared[n:]).max()), 1e-3)

  def test_shared_prefix_errors(self):
    fns, params = models.as_functions(random_model())
    x = tokens(4, 1)
    ones = np.ones((4, 1), bool)
    prefix = fns.init_cache(3, 2)
    with self.assertRaisesRegex(ValueError, "needs a cache"):
      fns.hidden(params, x, x, ones, None, prefix)
    with self.assertRaisesRegex(ValueError, "must divide the batch 4"):
      fns.hidden(params, x, x, ones, fns.init_cache(4, 2), prefix)
    stacked = fns.init_cache(2, 2)
    stacked = stacked._replace(k=jnp.stack(stacked.k), v=jnp.stack(stacked.v))
    with self.assertRaisesRegex(ValueError, "share the cache's layout"):
      fns.hidden(params, x, x, ones, fns.init_cache(4, 2), stacked)

  def test_per_layer_cache_errors(self):
    fns, params = models.as_functions(random_model())
    x = tokens(2, 3)
    cache = fns.init_cache(2, 4)
    with self.assertRaisesRegex(ValueError, "2 k and v buffers"):
      fns.hidden(params, x, x, x > -1, cache._replace(k=cache.k[:1]))
    sfns, sparams = models.as_functions(random_model(scan_layers=True))
    with self.assertRaisesRegex(ValueError, "2 k and v buffers"):
      sfns.hidden(sparams, x, x, x > -1, cache._replace(v=cache.v[:1]))

  def test_bf16_compute_close_to_f32(self):
    model = random_model()
    fns, params = models.as_functions(model)
    bf = models.Decoder(model.config.replace(dtype=jnp.bfloat16),
                        rngs=nnx.Rngs(0))
    nnx.update(bf, nnx.state(model))
    bfns, _ = models.as_functions(bf)
    x, mask = left_padded([8, 5], 8)
    pos = models.positions_from_mask(jnp.asarray(mask))
    h, _ = jax.jit(bfns.hidden)(params, x, pos, mask)
    self.assertEqual(h.dtype, jnp.bfloat16)
    self.assertEqual(bfns.head(params).dtype, jnp.bfloat16)
    lb = _forward(bfns, params, x, mask)
    self.assertEqual(lb.dtype, jnp.float32)
    lf = _forward(fns, params, x, mask)
    m = mask[..., None]
    self.assertLess(float(jnp.max(jnp.abs(jnp.where(m, lb - lf, 0)))), 0.05)
    cache = bfns.init_cache(2, 9)
    def kv_dtypes(c):
      return {a.dtype for a in jax.tree.leaves((c.k, c.v))}
    self.assertEqual(kv_dtypes(cache), {jnp.dtype(jnp.bfloat16)})
    hc, cache = jax.jit(bfns.hidden)(params, x, pos, mask, cache)
    self.assertEqual(kv_dtypes(cache), {jnp.dtype(jnp.bfloat16)})
    self.assertTrue(np.isfinite(np.asarray(hc, np.float32)).all())

  @parameterized.parameters(("unrolled", "dense"), ("stacked", "paged"),
                            ("scan", "dense"))
  def test_paged_decode_equals_einsums(self, layout, prefix):
    """Decode steps through the paged kernel (Pallas TPU interpret mode)
    give the logits of the einsum path: a bfloat16 model, n = 2 samples
    per left-padded prompt, a prefix attended densely or paged (its slots
    reversed so the real tokens come first, ``lengths`` declared)."""
    cfg = small_config(dtype=jnp.bfloat16, scan_layers=layout == "scan")
    model = models.Decoder(cfg, rngs=nnx.Rngs(0))
    state = nnx.state(model)
    outs = []
    for impl in ("xla", "paged"):
      m = models.Decoder(cfg.replace(decode_attention=impl),
                         rngs=nnx.Rngs(0))
      nnx.update(m, state)
      fns, params = models.as_functions(m)
      n, p, steps, slots = 2, 16, 3, 32
      x_p, m_p = left_padded([5, 16], p, seed=4)
      pos_p = models.positions_from_mask(jnp.asarray(m_p))

      def stackify(c):
        if layout != "stacked":
          return c
        return c._replace(k=jnp.stack(c.k), v=jnp.stack(c.v))
      _, pre = jax.jit(fns.hidden)(params, x_p, pos_p, m_p,
                                   stackify(fns.init_cache(2, p)))
      if prefix == "paged":
        flip = lambda a: jnp.flip(a, -2)  # noqa: E731
        pre = pre._replace(k=jax.tree.map(flip, pre.k),
                           v=jax.tree.map(flip, pre.v),
                           valid=jnp.flip(pre.valid, 1),
                           lengths=jnp.asarray(m_p.sum(1), jnp.int32))
      cache = stackify(fns.init_cache(2 * n, slots))
      cache = cache._replace(lengths=jnp.zeros((2 * n,), jnp.int32))
      new = tokens(2 * n, steps, seed=5)
      base = np.repeat(m_p.sum(1), n)[:, None]
      logits = []
      for t in range(steps):
        h, cache = jax.jit(fns.hidden)(params, new[:, t:t + 1], base + t,
                                       np.ones((2 * n, 1), bool), cache, pre)
        logits.append(fns.logits(params, h))
      np.testing.assert_array_equal(cache.lengths, steps)
      outs.append(np.asarray(jnp.concatenate(logits, 1)))
    np.testing.assert_allclose(outs[1], outs[0], atol=0.05, rtol=0)
    self.assertGreater(np.abs(outs[0]).max(), 0.1)

  def test_logits_t_and_compute_dtype_parameters(self):
    """``fns.logits_t`` is the transposed logits; float32 parameters cast
    once to a bfloat16 model's compute dtype give the same numbers (the
    model casts every weight before use), as the sampler relies on."""
    cfg = small_config(dtype=jnp.bfloat16, tie_word_embeddings=True)
    fns, params = models.as_functions(models.Decoder(cfg, rngs=nnx.Rngs(0)))
    self.assertEqual({x.dtype for x in jax.tree.leaves(params)},
                     {jnp.dtype(jnp.float32)})
    cast = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
    x, mask = left_padded([8, 5], 8)
    pos = models.positions_from_mask(jnp.asarray(mask))
    for cache in (None, fns.init_cache(2, 8)):
      h32, c32 = jax.jit(fns.hidden)(params, x, pos, mask, cache)
      h16, c16 = jax.jit(fns.hidden)(cast, x, pos, mask, cache)
      np.testing.assert_array_equal(h32, h16)
      if cache is not None:
        np.testing.assert_array_equal(jnp.stack(c32.k), jnp.stack(c16.k))
    np.testing.assert_array_equal(jax.jit(fns.logits)(params, h32[:, -1]),
                                  jax.jit(fns.logits)(cast, h32[:, -1]))
    zt = jax.jit(fns.logits_t)(params, h32[:, -1])
    self.assertEqual(zt.shape, (VOCAB, 2))
    np.testing.assert_allclose(zt, fns.logits(params, h32[:, -1]).T,
                               rtol=1e-6, atol=1e-6)

  def test_head_and_grad(self):
    fns, params = models.as_functions(random_model(tie_word_embeddings=True))
    w = fns.head(params)
    np.testing.assert_array_equal(w, params["embedding"][...].T)
    x, mask = left_padded([4, 3], 4)
    pos = models.positions_from_mask(jnp.asarray(mask))

    def loss(params):
      h, _ = fns.hidden(params, x, pos, mask)
      lp = jax.nn.log_softmax(h @ fns.head(params))
      return -jnp.sum(jnp.where(mask, lp[..., 0], 0))
    g = jax.jit(jax.grad(loss))(params)
    norms = [float(jnp.abs(v).sum()) for v in jax.tree.leaves(g)]
    self.assertTrue(all(np.isfinite(norms)) and all(n > 0 for n in norms))


class AxesTest(absltest.TestCase):

  def test_logical_axes(self):
    is_leaf = lambda x: isinstance(x, tuple)  # noqa: E731
    for scan in (False, True):
      model = random_model(scan_layers=scan, tie_word_embeddings=False)
      axes = models.logical_axes(model)
      pure = nnx.to_pure_dict(axes)
      self.assertEqual(pure["embedding"], ("vocab", "embed"))
      self.assertEqual(pure["lm_head"], ("embed", "vocab"))
      layer = pure["layers"] if scan else pure["layers"][0]
      prefix = ("layers",) if scan else ()
      self.assertEqual(layer["attn"]["q_proj"], prefix + ("embed", "heads"))
      self.assertEqual(layer["attn"]["k_proj"],
                       prefix + ("embed", "kv_heads"))
      self.assertEqual(layer["mlp"]["down_proj"], prefix + ("mlp", "embed"))
      self.assertEqual(layer["attn"]["q_norm"]["scale"],
                       prefix + ("head_dim",))
      _, params = models.as_functions(model)
      # One name per array dimension, structures aligned with the params.
      jax.tree.map(lambda a, p: self.assertLen(a, p.ndim),
                   models.logical_axes(params), params, is_leaf=is_leaf)

  def test_presets(self):
    tiny = models.DecoderConfig.tiny()
    self.assertEqual((tiny.vocab_size, tiny.hidden_size, tiny.num_layers,
                      tiny.num_heads, tiny.num_kv_heads, tiny.head_dim,
                      tiny.intermediate_size, tiny.tie_word_embeddings),
                     (512, 256, 4, 4, 4, 64, 1024, True))
    q = models.DecoderConfig.qwen2_5_0_5b()
    self.assertEqual((q.head_dim, q.hf_model_type, q.rope_theta),
                     (64, "qwen2", 1e6))
    params = nnx.eval_shape(lambda: models.Decoder(q, rngs=nnx.Rngs(0)))
    n = sum(x.size for x in jax.tree.leaves(nnx.state(params)))
    self.assertEqual(n, 494_032_768)  # Qwen2.5-0.5B's published count.


class RopeTest(absltest.TestCase):

  def test_tables_equal_the_angles_computed_in_float64(self):
    """cos/sin looked up for [B, S] positions = cos/sin(f32 angle) to 1 ulp."""
    from entropy_rl.models import decoder  # pylint: disable=g-import-not-at-top
    pos = np.array([[0, 1, 5, 95], [3, 3, 0, 40]], np.int32)
    cos, sin = decoder._rope_angles(jnp.asarray(pos), 64, 1e4, 96)
    self.assertEqual(cos.shape, (2, 4, 32))
    inv = 1.0 / (1e4 ** (np.arange(0, 64, 2, dtype=np.float32) / 64))
    ang = (pos.astype(np.float32)[..., None] * inv).astype(np.float64)
    np.testing.assert_allclose(cos, np.cos(ang), rtol=0, atol=1.2e-7)
    np.testing.assert_allclose(sin, np.sin(ang), rtol=0, atol=1.2e-7)
    # Position 95 at angle 95 rad: a table indexed off by one would differ.
    self.assertAlmostEqual(float(cos[0, 3, 0]), np.cos(95.0), places=6)

  def test_position_outside_the_slots_gives_nan_not_a_wrong_angle(self):
    model = random_model()
    fns, params = models.as_functions(model)
    x = tokens(1, 4)
    mask = jnp.ones((1, 4), bool)
    ok, _ = fns.hidden(params, x, jnp.arange(4)[None], mask)
    self.assertTrue(bool(jnp.isfinite(ok).all()))
    # Position 4 of a 4-slot call: NaN there (and, through the next layer's
    # values, in the row), never finite numbers at a clamped angle.
    bad, _ = fns.hidden(params, x, jnp.array([[0, 1, 2, 4]]), mask)
    self.assertTrue(bool(jnp.isnan(bad[0, 3]).all()))


class BadInputTest(absltest.TestCase):

  def _saved(self, name):
    model = random_model(qk_norm=False, qkv_bias=False)
    path = pathlib.Path(_TMP.name) / name
    models.save_pretrained(model, path)
    return path

  def test_unknown_architecture(self):
    path = self._saved("gpt2")
    cfg = json.loads((path / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (path / "config.json").write_text(json.dumps(cfg))
    with self.assertRaisesRegex(ValueError, "model_type 'gpt2'"):
      models.load_pretrained(path)

  def test_missing_and_unexpected_tensors(self):
    path = self._saved("missing")
    f = path / "model.safetensors"
    tensors = safetensors.numpy.load_file(f)
    name = "model.layers.1.mlp.up_proj.weight"
    del tensors[name]
    safetensors.numpy.save_file(tensors, f)
    with self.assertRaisesRegex(ValueError, f"missing.*{name}"):
      models.load_pretrained(path)
    tensors[name] = np.zeros((96, 64), np.float32)
    tensors["model.layers.0.self_attn.o_proj.bias"] = np.zeros(64)
    safetensors.numpy.save_file(tensors, f)
    with self.assertRaisesRegex(ValueError, "unexpected.*o_proj.bias"):
      models.load_pretrained(path)
    del tensors["model.layers.0.self_attn.o_proj.bias"]
    tensors[name] = np.zeros((64, 96), np.float32)
    safetensors.numpy.save_file(tensors, f)
    with self.assertRaisesRegex(ValueError, f"'{name}' has shape"):
      models.load_pretrained(path)

  def test_bad_configs(self):
    with self.assertRaisesRegex(ValueError, "num_kv_heads"):
      small_config(num_kv_heads=3)
    with self.assertRaisesRegex(ValueError, "rope scaling"):
      checkpoint.config_from_hf(
          {"model_type": "llama", "rope_scaling": {"rope_type": "llama3"}})
    with self.assertRaisesRegex(ValueError, "no config.json"):
      models.load_pretrained(_TMP.name)
    with self.assertRaisesRegex(ValueError, "qkv_bias"):
      models.save_pretrained(random_model(qk_norm=False, family="llama"),
                             pathlib.Path(_TMP.name) / "bad")
    fns, params = models.as_functions(random_model())
    x = tokens(2, 5)
    with self.assertRaisesRegex(ValueError, "does not fit"):
      fns.hidden(params, x, x, x > -1, fns.init_cache(2, 4))


if __name__ == "__main__":
  absltest.main()
