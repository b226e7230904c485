"""Chunked token statistics: values and gradients against the naive pass."""

import math

from absl.testing import absltest
from absl.testing import parameterized
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np

from entropy_rl.core import reductions as rd
from entropy_rl.core import token_stats as ts
from entropy_rl.core import types

CORE = ("logp", "entropy", "lse", "max_logit")


def _problem(n, d, v, seed=0, scale=3.0, dtype=jnp.float32):
  k = jax.random.split(jax.random.key(seed), 3)
  h = jax.random.normal(k[0], (n, d), jnp.float32)
  w = jax.random.normal(k[1], (d, v), jnp.float32) * scale / math.sqrt(d)
  y = jax.random.randint(k[2], (n,), 0, v)
  return h.astype(dtype), w.astype(dtype), y


def _rel(x, y):
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  return float(np.max(np.abs(x - y)) / (np.max(np.abs(y)) + 1e-30))


def _weighted_loss(stats_fn, keys=("logp", "entropy"), seed=7):
  """h, W -> Σ_k a_k · stats[k] with fixed random a_k (a generic cotangent)."""

  def loss(h, w):
    out = stats_fn(h, w)
    total = 0.0
    for i, k in enumerate(keys):
      a = jax.random.normal(jax.random.key(seed + i), out[k].shape)
      total += jnp.sum(a * out[k])
    return total

  return loss


def _stats_and_grads(stats_fn, keys=("logp", "entropy")):
  """One compiled call: (stats, (∂L/∂h, ∂L/∂W)) for L = _weighted_loss."""

  def loss(h, w):
    out = stats_fn(h, w)
    return _weighted_loss(lambda *_: out, keys)(h, w), out

  vg = jax.jit(jax.value_and_grad(loss, (0, 1), has_aux=True))
  return lambda h, w: (lambda r: (r[0][1], r[1]))(vg(h, w))


class CoreMatchesNaiveTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("non_dividing", 100, 1000, 32, 256, 1.0),
      ("non_dividing_temperature", 100, 1000, 48, 300, 0.7),
      ("dividing", 128, 1024, 32, 256, 1.0),
      ("single_chunk_temperature", 100, 1000, 1024, 4096, 1.5),
  )
  def test_values_and_grads(self, n, v, tc, vc, temperature):
    h, w, y = _problem(n, 16, v)
    naive = lambda a, b: ts.token_stats_naive(a, b, y, temperature)
    chunked = lambda a, b: ts.token_stats(
        a, b, y, temperature=temperature, token_chunk=tc, vocab_chunk=vc)
    want, g_want = _stats_and_grads(naive)(h, w)
    got, g_got = _stats_and_grads(chunked)(h, w)
    self.assertEqual(set(got), set(CORE))
    for k in CORE:
      self.assertEqual(got[k].shape, (n,))
      self.assertLessEqual(_rel(got[k], want[k]), 1e-5, k)
    self.assertLessEqual(_rel(g_got[0], g_want[0]), 1e-5)  # ∂/∂h
    self.assertLessEqual(_rel(g_got[1], g_want[1]), 1e-5)  # ∂/∂W

  def test_jit_equals_no_jit(self):
    h, w, y = _problem(10, 4, 40, seed=3)
    f = lambda a, b: ts.token_stats(a, b, y, token_chunk=5, vocab_chunk=16,
                                    reductions={"era": rd.scaled_logp(2.0)})
    with jax.disable_jit():
      eager = f(h, w)
    jitted = jax.jit(f)(h, w)
    for k in eager:
      np.testing.assert_allclose(eager[k], jitted[k], rtol=1e-6, atol=1e-6)

  def test_batched_and_from_logits_shapes(self):
    h, w, y = _problem(12, 8, 50, seed=4)

    @jax.jit
    def f(h, w, y):
      got = ts.batched_token_stats(h.reshape(3, 4, 8), w, y.reshape(3, 4),
                                   token_chunk=5, vocab_chunk=16)
      from_logits = ts.token_stats_from_logits((h @ w).reshape(3, 4, 50),
                                               y.reshape(3, 4))
      return got, from_logits, ts.token_stats_naive(h, w, y)

    got, from_logits, flat = f(h, w, y)
    for k in CORE:
      self.assertEqual(got[k].shape, (3, 4))
      np.testing.assert_allclose(got[k].ravel(), flat[k], rtol=1e-5)
      np.testing.assert_allclose(from_logits[k].ravel(), flat[k], rtol=1e-5)

  @settings(deadline=None, max_examples=3)
  @given(n=st.integers(1, 40), v=st.integers(2, 90), tc=st.integers(1, 50),
         vc=st.integers(1, 100), seed=st.integers(0, 1000))
  def test_any_chunking_matches_full_rows(self, n, v, tc, vc, seed):
    h, w, y = _problem(n, 4, v, seed=seed)
    got, want = jax.jit(lambda h, w, y: (
        ts.token_stats(h, w, y, token_chunk=tc, vocab_chunk=vc),
        ts.token_stats_from_logits(h @ w, y)))(h, w, y)
    for k in CORE:
      np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6)


class HandValuesTest(absltest.TestCase):

  def test_temperature_entropy(self):
    # ERA spec: z = [2, 1, 0]; H(z) = 0.83240, H(2z) = 0.44106,
    # H(z/2) = 1.02019 (τ = 1, 0.5, 2).
    z = jnp.array([[2.0, 1.0, 0.0]])
    y = jnp.array([0])
    for t, want in ((1.0, 0.83240), (0.5, 0.44106), (2.0, 1.02019)):
      got = ts.token_stats_from_logits(z, y, temperature=t)["entropy"]
      np.testing.assert_allclose(got, [want], atol=1e-5)
    # The same through the chunked pass: h = [1], W = z.
    got = ts.token_stats(jnp.ones((1, 1)), z, y, temperature=0.5,
                         vocab_chunk=2)["entropy"]
    np.testing.assert_allclose(got, [0.44106], atol=1e-5)


class PrecisionAndMemoryTest(absltest.TestCase):

  def test_bf16_inputs_close_to_f32(self):
    h, w, y = _problem(64, 32, 500, seed=9, dtype=jnp.bfloat16)
    h32, w32 = h.astype(jnp.float32), w.astype(jnp.float32)
    f = lambda a, b, **kw: ts.token_stats(a, b, y, token_chunk=16,
                                          vocab_chunk=128, **kw)
    got, g_got = _stats_and_grads(f)(h, w)
    want, g_want = _stats_and_grads(
        lambda a, b: ts.token_stats_naive(a, b, y))(h32, w32)
    for k in CORE:
      self.assertEqual(got[k].dtype, jnp.float32)
      np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-5)
    # f32 master weights with bf16 products give the same statistics.
    mixed = jax.jit(lambda a, b: f(a, b, compute_dtype=jnp.bfloat16))(h32, w32)
    for k in CORE:
      np.testing.assert_allclose(mixed[k], got[k], rtol=1e-6, atol=1e-6)
    self.assertEqual(g_got[0].dtype, jnp.bfloat16)
    self.assertLessEqual(_rel(g_got[0], g_want[0]), 1e-2)
    self.assertLessEqual(_rel(g_got[1], g_want[1]), 1e-2)

  def test_no_n_by_v_buffer(self):
    n, d, v = 2048, 64, 32768
    args = (jax.ShapeDtypeStruct((n, d), jnp.float32),
            jax.ShapeDtypeStruct((d, v), jnp.float32),
            jax.ShapeDtypeStruct((n,), jnp.int32))

    def temp_bytes(stats_fn):
      loss = lambda h, w, y: jnp.sum(_weighted_loss(
          lambda a, b: stats_fn(a, b, y))(h, w))
      compiled = jax.jit(jax.grad(loss, (0, 1))).lower(*args).compile()
      return compiled.memory_analysis().temp_size_in_bytes

    nv_bytes = n * v * 4  # one [N, V] float32 buffer: 256 MiB
    naive = temp_bytes(ts.token_stats_naive)
    chunked = temp_bytes(ts.token_stats)  # tc = 1024, vc = 4096
    small = temp_bytes(lambda h, w, y: ts.token_stats(
        h, w, y, token_chunk=512, vocab_chunk=2048))
    rows = temp_bytes(lambda h, w, y: ts.token_stats(
        h, w, y, token_chunk=256, reductions={"n": rd.nucleus_entropy(0.8)}))
    self.assertGreaterEqual(naive, nv_bytes)
    self.assertLess(chunked, nv_bytes / 4)
    self.assertLess(small, chunked)
    self.assertLess(rows, nv_bytes / 2)


class NeedsAndErrorsTest(absltest.TestCase):

  def test_stats_for_needs(self):
    needs = types.Needs(vocab={"era": rd.scaled_logp(2.0)},
                        old_vocab={"nuc": rd.nucleus_entropy(0.8)})
    h, w, y = _problem(24, 8, 64, seed=10)
    kw = dict(token_chunk=8, vocab_chunk=16)

    def old_loss(a, b):  # the old pass carries no gradient
      cur = ts.stats_for_needs(a, b, y, needs, **kw)
      old = ts.stats_for_needs(a.reshape(4, 6, 8), b, y.reshape(4, 6), needs,
                               old=True, **kw)
      return jnp.sum(old["nuc"] + old["logp"]), (sg(cur), old)

    sg = jax.lax.stop_gradient
    (_, (cur, old)), g = jax.jit(jax.value_and_grad(
        old_loss, (0, 1), has_aux=True))(h, w)
    self.assertEqual(set(cur), set(CORE) | {"era"})
    self.assertEqual(set(old), set(CORE) | {"nuc"})
    self.assertEqual(old["nuc"].shape, (4, 6))
    np.testing.assert_allclose(old["logp"].ravel(), cur["logp"], rtol=1e-6)
    np.testing.assert_allclose(
        cur["era"], ts.token_stats_from_logits(
            h @ w, y, reductions=needs.vocab)["era"], rtol=1e-5)
    np.testing.assert_array_equal(g[0], 0.0)
    np.testing.assert_array_equal(g[1], 0.0)

  def test_bad_inputs_raise(self):
    h, w, y = _problem(4, 3, 10)
    with self.assertRaisesRegex(ValueError, "lm_head"):
      ts.token_stats(h, w.T, y)
    with self.assertRaisesRegex(ValueError, "targets"):
      ts.token_stats(h, w, y.astype(jnp.float32))
    with self.assertRaisesRegex(ValueError, "hidden"):
      ts.token_stats(h[None], w, y)
    with self.assertRaisesRegex(ValueError, "token_chunk"):
      ts.token_stats(h, w, y, token_chunk=0)
    with self.assertRaisesRegex(ValueError, "temperature"):
      ts.token_stats(h, w, y, temperature=0.0)
    with self.assertRaisesRegex(ValueError, "MonoidReduction"):
      ts.token_stats(h, w, y, reductions={"x": lambda z: z})
    with self.assertRaisesRegex(ValueError, "other than"):
      ts.token_stats(h, w, y, reductions={"logp": rd.scaled_logp(2.0)})
    with self.assertRaisesRegex(ValueError, "p_top"):
      rd.nucleus_entropy(1.5)
    with self.assertRaisesRegex(ValueError, "kappa"):
      rd.minp_logp(0.0)
    with self.assertRaisesRegex(ValueError, "targets"):
      ts.token_stats_from_logits(h @ w, y[:3])


if __name__ == "__main__":
  absltest.main()
