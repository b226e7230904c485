"""Vocabulary reductions: hand values, chunked vs full rows, value semantics."""

import math

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from entropy_rl.core import reductions as rd
from entropy_rl.core import token_stats as ts
from entropy_rl.core import types
from tests import token_stats_test

CORE = token_stats_test.CORE
# pylint: disable=protected-access
_problem = token_stats_test._problem
_rel = token_stats_test._rel
_stats_and_grads = token_stats_test._stats_and_grads
# pylint: enable=protected-access


def _sort_nucleus(z, p_top):
  """SIREN's definition with a sort (differentiable; the mask is constant)."""
  zs = -jnp.sort(-z, -1)  # descending
  p = jax.nn.softmax(jax.lax.stop_gradient(zs), -1)
  kept = jnp.cumsum(p, -1) < p_top
  return rd.masked_entropy(zs, kept)


class HandValuesTest(absltest.TestCase):

  def test_siren_nucleus_entropy(self):
    # p = (.5, .25, .15, .1), p_top = .8: C = (.5, .75, .9, 1), J = 2, the
    # token crossing .8 is excluded, q = (2/3, 1/3), H = 0.636514.
    # p = (.85, .1, .05): p_max ≥ p_top, J = 0, H = 0.
    logits = jnp.log(jnp.array([[0.5, 0.25, 0.15, 0.1],
                                [0.85, 0.1, 0.05, 1e-30]]))
    y = jnp.array([0, 0])
    red = {"nuc": rd.nucleus_entropy(0.8),
           "nuc_k": rd.nucleus_entropy_topk(0.8, 3)}
    out = ts.token_stats_from_logits(logits, y, reductions=red)
    np.testing.assert_allclose(out["nuc"], [0.636514, 0.0], atol=1e-6)
    np.testing.assert_allclose(out["nuc_k"], [0.636514, 0.0], atol=1e-6)
    np.testing.assert_array_equal(out["nuc_k/exact"], [True, True])
    # Top-2 mass .75 < .8: the approximation is flagged inexact.
    out2 = ts.token_stats_from_logits(
        logits, y, reductions={"nuc_k": rd.nucleus_entropy_topk(0.8, 2)})
    np.testing.assert_array_equal(out2["nuc_k/exact"], [False, True])

  def test_lpreg_minp_proxy(self):
    # p = (.6, .3, .09, .007, .003), κ = .02: threshold .012 keeps 3 tokens;
    # proxy(y=2) = .09/.99, so ℓᵖ − ℓ = −log .99 = 0.010050.
    logits = jnp.log(jnp.array([[0.6, 0.3, 0.09, 0.007, 0.003]] * 3))
    y = jnp.array([2, 1, 3])
    red = {"rel": rd.minp_logp(0.02),
           "rel_half": rd.minp_logp(0.5),  # keeps p ≥ .3: (.6, .3)
           "abs_half": rd.minp_logp(0.5, relative=False)}  # keeps p ≥ .5
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
        z, y, reductions={"k4": rd.topk_logp(4, kappa=2.0),
                          "k2": rd.topk_logp(2), "k1": rd.topk_logp(1)})
    np.testing.assert_allclose(out["k4"], jax.nn.log_softmax(2 * z)[:, 1],
                               atol=1e-6)
    np.testing.assert_allclose(out["k2"], [1.0 - math.log(math.e**2 + math.e)],
                               atol=1e-6)  # renormalised over {2, 1}
    np.testing.assert_allclose(out["k1"], [-1e4 - 2.0], atol=1e-6)


class ReductionsTest(parameterized.TestCase):

  def test_monoids_chunked_match_full_rows(self):
    h, w, y = _problem(100, 16, 1000, seed=1, scale=4.0)
    red = {"era": rd.scaled_logp(2.0),
           "top": rd.topk_logits(8, with_indices=True),
           "era_top": rd.topk_logp(20, kappa=0.5),
           "nuc_k": rd.nucleus_entropy_topk(0.8, 32)}
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
        reductions={"top": rd.topk_logits(12),  # chunks of 5 < k
                    "all": rd.topk_logits(40)}))(h, w, y)  # k > V
    np.testing.assert_allclose(got["top"], jax.lax.top_k(h @ w, 12)[0],
                               rtol=1e-6)
    np.testing.assert_array_equal(got["all"][:, 37:], np.float32(rd.NEG))

  @parameterized.parameters(0.5, 0.8, 0.95)
  def test_nucleus_bisection_equals_sort(self, p_top):
    z = jax.random.normal(jax.random.key(5), (64, 512)) * 2.5
    got = ts.token_stats_from_logits(
        z, jnp.zeros(64, jnp.int32),
        reductions={"nuc": rd.nucleus_entropy(p_top)})["nuc"]
    np.testing.assert_allclose(got, _sort_nucleus(z, p_top), atol=1e-5)
    self.assertGreater(float(jnp.mean(got)), 0.1)

  def test_topk_approximation_exact_where_flagged(self):
    # Mixed rows: peaked ones (top-16 holds .8) and flat ones (it does not).
    scale = jnp.where(jnp.arange(64) < 32, 6.0, 0.5)[:, None]
    z = jax.random.normal(jax.random.key(6), (64, 400)) * scale
    red = {"exact": rd.nucleus_entropy(0.8),
           "k16": rd.nucleus_entropy_topk(0.8, 16),
           "all": rd.nucleus_entropy_topk(0.8, 400)}
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
    red = {"nuc": rd.nucleus_entropy(0.8), "minp": rd.minp_logp(0.02),
           "era": rd.scaled_logp(2.0)}
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

class ValueSemanticsTest(absltest.TestCase):

  def test_equal_settings_are_equal_values(self):
    makers = (lambda a: rd.scaled_logp(a), lambda a: rd.topk_logits(int(a)),
              lambda a: rd.topk_logp(int(a), a),
              lambda a: rd.nucleus_entropy(a / 4),
              lambda a: rd.nucleus_entropy_topk(a / 4, 8),
              lambda a: rd.minp_logp(a / 4))
    for make in makers:
      a, b, c = make(2.0), make(2.0), make(3.0)
      self.assertIsNot(a, b)
      self.assertEqual(a, b)
      self.assertEqual(hash(a), hash(b))
      self.assertNotEqual(a, c)
    self.assertEqual(rd.scaled_logp(2.0), rd.ScaledLogp(kappa=2.0))
    self.assertNotEqual(rd.topk_logits(4), rd.topk_logits(4,
                                                          with_indices=True))
    self.assertNotEqual(rd.nucleus_entropy(0.8),
                        rd.nucleus_entropy(0.8, iters=20))
    self.assertIsInstance(rd.nucleus_entropy(0.8), types.RowReduction)
    self.assertIsInstance(rd.scaled_logp(2.0), types.MonoidReduction)

  def test_equal_reductions_compile_once(self):
    h, w, y = _problem(16, 4, 40, seed=4)

    traces = []

    def stats(h, w, y, red):
      traces.append(red)  # once per trace (per compilation)
      return ts.token_stats(h, w, y, reductions=dict(red), vocab_chunk=16)

    f = jax.jit(stats, static_argnums=3)
    # One reduction of each kind, built twice: a static argument hashed by
    # value, so the second call reuses the first's compilation.
    a = f(h, w, y, (("e", rd.scaled_logp(2.0)), ("n", rd.nucleus_entropy(0.8))))
    b = f(h, w, y, (("e", rd.scaled_logp(2.0)), ("n", rd.nucleus_entropy(0.8))))
    self.assertLen(traces, 1)
    np.testing.assert_array_equal(a["e"], b["e"])
    np.testing.assert_array_equal(a["n"], b["n"])
    f(h, w, y, (("e", rd.scaled_logp(3.0)), ("n", rd.nucleus_entropy(0.8))))
    self.assertLen(traces, 2)

  def test_function_form(self):
    # MonoidReduction(...) / RowReduction(...) of functions still build a
    # reduction, equal only to one made of the same functions.
    core = rd.CORE
    fns = (core.init, core.chunk, core.combine, core.finalize)
    mono = types.MonoidReduction(*fns)
    self.assertIsInstance(mono, types.FunctionMonoidReduction)
    self.assertEqual(mono, types.MonoidReduction(*fns))
    row = types.RowReduction(lambda z, y, c: c["entropy"])
    self.assertIsInstance(row, types.RowReduction)
    self.assertNotEqual(row, types.RowReduction(lambda z, y, c: c["entropy"]))
    z = jnp.array([[2.0, 1.0, 0.0]])
    out = ts.token_stats_from_logits(z, jnp.array([0]),
                                     reductions={"m": mono, "r": row})
    np.testing.assert_allclose(out["m/logp"], out["logp"], rtol=1e-6)
    np.testing.assert_allclose(out["r"], out["entropy"], rtol=1e-6)


if __name__ == "__main__":
  absltest.main()
