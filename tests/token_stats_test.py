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


def _sort_nucleus(z, p_top):
  """SIREN's definition with a sort (differentiable; the mask is constant)."""
  zs = -jnp.sort(-z, -1)  # descending
  p = jax.nn.softmax(jax.lax.stop_gradient(zs), -1)
  kept = jnp.cumsum(p, -1) < p_top
  return ts.masked_entropy(zs, kept)


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
                                    reductions={"era": ts.scaled_logp(2.0)})
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

  def test_siren_nucleus_entropy(self):
    # p = (.5, .25, .15, .1), p_top = .8: C = (.5, .75, .9, 1), J = 2, the
    # token crossing .8 is excluded, q = (2/3, 1/3), H = 0.636514.
    # p = (.85, .1, .05): p_max ≥ p_top, J = 0, H = 0.
    logits = jnp.log(jnp.array([[0.5, 0.25, 0.15, 0.1],
                                [0.85, 0.1, 0.05, 1e-30]]))
    y = jnp.array([0, 0])
    red = {"nuc": ts.nucleus_entropy(0.8),
           "nuc_k": ts.nucleus_entropy_topk(0.8, 3)}
    out = ts.token_stats_from_logits(logits, y, reductions=red)
    np.testing.assert_allclose(out["nuc"], [0.636514, 0.0], atol=1e-6)
    np.testing.assert_allclose(out["nuc_k"], [0.636514, 0.0], atol=1e-6)
    np.testing.assert_array_equal(out["nuc_k/exact"], [True, True])
    # Top-2 mass .75 < .8: the approximation is flagged inexact.
    out2 = ts.token_stats_from_logits(
        logits, y, reductions={"nuc_k": ts.nucleus_entropy_topk(0.8, 2)})
    np.testing.assert_array_equal(out2["nuc_k/exact"], [False, True])

  def test_lpreg_minp_proxy(self):
    # p = (.6, .3, .09, .007, .003), κ = .02: threshold .012 keeps 3 tokens;
    # proxy(y=2) = .09/.99, so ℓᵖ − ℓ = −log .99 = 0.010050.
    logits = jnp.log(jnp.array([[0.6, 0.3, 0.09, 0.007, 0.003]] * 3))
    y = jnp.array([2, 1, 3])
    red = {"rel": ts.minp_logp(0.02),
           "rel_half": ts.minp_logp(0.5),  # keeps p ≥ .3: (.6, .3)
           "abs_half": ts.minp_logp(0.5, relative=False)}  # keeps p ≥ .5
    out = ts.token_stats_from_logits(logits, y, reductions=red)
    np.testing.assert_allclose(out["rel"][0] - out["logp"][0], 0.010050,
                               atol=1e-6)
    np.testing.assert_allclose(out["rel"][2], -1e4 - math.log(0.99),
                               rtol=1e-6)  # y = 3 is filtered
    np.testing.assert_allclose(out["rel_half"][1], math.log(0.3 / 0.9),
                               atol=1e-6)
    np.testing.assert_allclose(out["abs_half"][1], -1e4 - math.log(0.6),
                               rtol=1e-6)

  def test_topk_logp_with_full_k_is_log_softmax(self):
    z = jnp.array([[2.0, 1.0, 0.0, -1.0]])
    y = jnp.array([1])
    out = ts.token_stats_from_logits(
        z, y, reductions={"k4": ts.topk_logp(4, kappa=2.0),
                          "k2": ts.topk_logp(2), "k1": ts.topk_logp(1)})
    np.testing.assert_allclose(out["k4"], jax.nn.log_softmax(2 * z)[:, 1],
                               atol=1e-6)
    np.testing.assert_allclose(out["k2"], [1.0 - math.log(math.e**2 + math.e)],
                               atol=1e-6)  # renormalised over {2, 1}
    np.testing.assert_allclose(out["k1"], [-1e4 - 2.0], atol=1e-6)


class ReductionsTest(parameterized.TestCase):

  def test_monoids_chunked_match_full_rows(self):
    h, w, y = _problem(100, 16, 1000, seed=1, scale=4.0)
    red = {"era": ts.scaled_logp(2.0),
           "top": ts.topk_logits(8, with_indices=True),
           "era_top": ts.topk_logp(20, kappa=0.5),
           "nuc_k": ts.nucleus_entropy_topk(0.8, 32)}
    keys = ("era", "top", "era_top", "nuc_k")
    chunked = lambda a, b: ts.token_stats(a, b, y, reductions=red,
                                          token_chunk=32, vocab_chunk=48)
    rows = lambda a, b: ts.token_stats_from_logits(a @ b, y, reductions=red)
    got, g_got = _stats_and_grads(chunked, keys)(h, w)
    want, g_want = _stats_and_grads(rows, keys)(h, w)
    self.assertEqual(set(got), set(CORE) | {"era", "top", "top/indices",
                                            "era_top", "nuc_k", "nuc_k/exact"})
    z = h @ w
    np.testing.assert_allclose(
        got["era"], jnp.take_along_axis(jax.nn.log_softmax(2 * z), y[:, None],
                                        -1)[:, 0], rtol=1e-5)
    vals, idx = jax.lax.top_k(z, 8)
    np.testing.assert_allclose(got["top"], vals, rtol=1e-5)
    np.testing.assert_array_equal(got["top/indices"], idx)
    np.testing.assert_array_equal(got["nuc_k/exact"], want["nuc_k/exact"])
    for k in keys:
      self.assertLessEqual(_rel(got[k], want[k]), 1e-5, k)
    self.assertLessEqual(_rel(g_got[0], g_want[0]), 1e-5)
    self.assertLessEqual(_rel(g_got[1], g_want[1]), 1e-5)

  def test_topk_with_chunks_smaller_than_k(self):
    h, w, y = _problem(10, 4, 37, seed=2)
    got = jax.jit(lambda h, w, y: ts.token_stats(
        h, w, y, vocab_chunk=5,
        reductions={"top": ts.topk_logits(12),  # chunks of 5 < k
                    "all": ts.topk_logits(40)}))(h, w, y)  # k > V
    np.testing.assert_allclose(got["top"], jax.lax.top_k(h @ w, 12)[0],
                               rtol=1e-6)
    np.testing.assert_array_equal(got["all"][:, 37:], np.float32(ts.NEG))

  @parameterized.parameters(0.5, 0.8, 0.95)
  def test_nucleus_bisection_equals_sort(self, p_top):
    z = jax.random.normal(jax.random.key(5), (64, 512)) * 2.5
    got = ts.token_stats_from_logits(
        z, jnp.zeros(64, jnp.int32),
        reductions={"nuc": ts.nucleus_entropy(p_top)})["nuc"]
    np.testing.assert_allclose(got, _sort_nucleus(z, p_top), atol=1e-5)
    self.assertGreater(float(jnp.mean(got)), 0.1)

  def test_topk_approximation_exact_where_flagged(self):
    # Mixed rows: peaked ones (top-16 holds .8) and flat ones (it does not).
    scale = jnp.where(jnp.arange(64) < 32, 6.0, 0.5)[:, None]
    z = jax.random.normal(jax.random.key(6), (64, 400)) * scale
    red = {"exact": ts.nucleus_entropy(0.8),
           "k16": ts.nucleus_entropy_topk(0.8, 16),
           "all": ts.nucleus_entropy_topk(0.8, 400)}
    out = ts.token_stats_from_logits(z, jnp.zeros(64, jnp.int32),
                                     reductions=red)
    flag = np.asarray(out["k16/exact"])
    self.assertTrue(flag.any() and not flag.all())
    np.testing.assert_allclose(np.asarray(out["k16"])[flag],
                               np.asarray(out["exact"])[flag], atol=1e-5)
    self.assertGreater(  # truncated where not flagged
        float(np.max(np.abs(out["k16"] - out["exact"])[~flag])), 0.1)
    self.assertTrue(np.all(out["all/exact"]))
    np.testing.assert_allclose(out["all"], out["exact"], atol=1e-5)

  def test_row_mode_values_and_grads(self):
    h, w, y = _problem(100, 16, 1000, seed=8, scale=5.0)
    red = {"nuc": ts.nucleus_entropy(0.8), "minp": ts.minp_logp(0.02),
           "era": ts.scaled_logp(2.0)}
    keys = ("entropy", "nuc", "minp", "era")
    chunked = lambda a, b: ts.token_stats(a, b, y, reductions=red,
                                          token_chunk=32)

    def reference(a, b):  # full rows; the nucleus by sorting
      z = a @ b
      out = ts.token_stats_from_logits(
          z, y, reductions={"minp": red["minp"], "era": red["era"]})
      return {**out, "nuc": _sort_nucleus(z, 0.8)}

    got, g_got = _stats_and_grads(chunked, keys)(h, w)
    want, g_want = _stats_and_grads(reference, keys)(h, w)
    for k in keys:
      self.assertLessEqual(_rel(got[k], want[k]), 1e-5, k)
    self.assertLessEqual(_rel(g_got[0], g_want[0]), 1e-5)
    self.assertLessEqual(_rel(g_got[1], g_want[1]), 1e-5)


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
        h, w, y, token_chunk=256, reductions={"n": ts.nucleus_entropy(0.8)}))
    self.assertGreaterEqual(naive, nv_bytes)
    self.assertLess(chunked, nv_bytes / 4)
    self.assertLess(small, chunked)
    self.assertLess(rows, nv_bytes / 2)


class NeedsAndErrorsTest(absltest.TestCase):

  def test_stats_for_needs(self):
    needs = types.Needs(vocab={"era": ts.scaled_logp(2.0)},
                        old_vocab={"nuc": ts.nucleus_entropy(0.8)})
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
      ts.token_stats(h, w, y, reductions={"logp": ts.scaled_logp(2.0)})
    with self.assertRaisesRegex(ValueError, "p_top"):
      ts.nucleus_entropy(1.5)
    with self.assertRaisesRegex(ValueError, "kappa"):
      ts.minp_logp(0.0)
    with self.assertRaisesRegex(ValueError, "targets"):
      ts.token_stats_from_logits(h @ w, y[:3])


if __name__ == "__main__":
  absltest.main()
