"""Agentic AEPO (A3), SPEAR (A4), DR-PO (A7), ePF (A8) test vectors."""

import math

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

import entropy_rl as er
from entropy_rl import regularizers
from tests import test_utils

from entropy_rl.agents import _aepo_agentic as aepo
from entropy_rl.agents import _spear as spear
from entropy_rl.agents import _dr_po as dr_po
from entropy_rl.agents import _epf as epf

# Compiles whole rollouts / iterations: XLA with most optimisations off
# (tests/conftest.py).
UNOPTIMISED_COMPILES = True


class AgenticAepoTest(parameterized.TestCase):

  def test_entropy_aware_advantage(self):
    a = aepo.entropy_aware_advantage(jnp.ones((1, 3)),
                                     jnp.array([[1.0, 2.0, 3.0]]),
                                     jnp.ones((1, 3)))
    np.testing.assert_allclose(a[0], [0.8, 1.0, 1.2], atol=1e-6)

  def _clip_case(self, scope, ent):
    # r = 1.5, ε_h = 0.28, A = 1 on both tokens.
    b = test_utils.make_batch([[math.log(1.5)] * 2], [[0.0, 0.0]],
                              [[1.0, 1.0]], [[1.0, 1.0]], entropy=[ent])
    obj = er.ppo_clip(0.2, 0.28)
    t = aepo.agentic_aepo(0.0, sg_scope=scope)

    def f(logp):
      bb = er.core.loss.fill_batch(b._replace(logp=logp), obj)
      bb, _ = t.update(bb, (), rng=None, step=0)
      tok, _ = obj.token_loss(bb)
      return tok.sum(), tok

    (_, tok), g = jax.value_and_grad(f, has_aux=True)(b.logp)
    return np.asarray(tok[0]), np.asarray(g[0])

  def test_gradient_preserving_clip(self):
    tok, g = self._clip_case("all_upper", [1.0, 2.0])
    np.testing.assert_allclose(tok, [-1.28, -1.28], atol=1e-5)
    np.testing.assert_allclose(g, [-1.28, -1.28], atol=1e-5)
    tok, g = self._clip_case("none", [1.0, 2.0])
    np.testing.assert_allclose(g, [0.0, 0.0], atol=1e-7)

  def test_scope_variants_differ(self):
    # z = (−0.707, +0.707): low-entropy scope keeps the first token's grad.
    _, g_low = self._clip_case("low_entropy", [1.0, 2.0])
    _, g_high = self._clip_case("high_entropy", [1.0, 2.0])
    np.testing.assert_allclose(g_low, [-1.28, 0.0], atol=1e-5)
    np.testing.assert_allclose(g_high, [0.0, -1.28], atol=1e-5)

  def test_budget_and_branch_rule(self):
    self.assertEqual(int(aepo.global_sample_budget(16, 1.0, 1.0)), 8)
    self.assertEqual(int(aepo.global_sample_budget(16, 3.0, 1.0)), 14)
    u = jax.random.uniform(jax.random.key(0), (20000,))
    freq = aepo.branch_decision(u, jnp.zeros(()), tau=0.5, weight=0.0).mean()
    self.assertAlmostEqual(float(freq), 0.5, delta=0.02)
    self.assertTrue(bool(jnp.all(aepo.branch_decision(
        u, jnp.full((), 2.5), tau=0.5, weight=0.2))))

  def test_neutral(self):
    b = test_utils.random_batch(0)
    l0, g0, _ = test_utils.loss_and_grads(b, er.chain(), er.ppo_clip())
    l1, g1, _ = test_utils.loss_and_grads(
        b, aepo.agentic_aepo(0.0, sg_scope="none"), er.ppo_clip())
    self.assertEqual(float(l0), float(l1))
    np.testing.assert_array_equal(g0[0], g1[0])


class SpearTest(absltest.TestCase):

  def test_toolcall_bonus_and_replay_weight(self):
    np.testing.assert_allclose(spear.toolcall_bonus(3, 100, 200), 0.15,
                               atol=1e-6)
    np.testing.assert_allclose(spear.toolcall_bonus(3, 0, 200), 0.3,
                               atol=1e-6)
    self.assertEqual(float(spear.toolcall_bonus(3, 201, 200)), 0.0)
    np.testing.assert_allclose(
        [float(spear.replay_weight(t, 200)) for t in (100, 50, 0, 500)],
        [0.5, 0.14645, 0.0, 1.0], atol=1e-5)

  def test_recalibration(self):
    a, keep = spear.recalibrate(jnp.array([1.0, 0.4]),
                                jnp.array([0.2, 0.5, 0.9, 0.0]),
                                jnp.array([True, True, True, False]))
    np.testing.assert_allclose(a, [0.5, -0.1], atol=1e-6)
    np.testing.assert_array_equal(keep, [True, False])

  def test_clip_cov_vector(self):
    # A = [1, 1, −1, −1], logp = [−0.1, −2.0, −0.5, −3.0], r = 1.
    lp = jnp.array([[-0.1, -2.0, -0.5, -3.0]])
    b = test_utils.make_batch(lp, lp, [[1.0, 1.0, -1.0, -1.0]], jnp.ones((1, 4)))
    c = regularizers.token_covariance(
        er.core.loss.fill_batch(b, er.ppo_clip()))
    np.testing.assert_allclose(c[0], [1.3, -0.6, -0.9, 1.6], atol=1e-5)
    t = regularizers.clip_cov(0.5, 1.0, 5.0)
    out, _ = t.update(er.core.loss.fill_batch(b, er.ppo_clip()), (),
                      rng=jax.random.key(0), step=0)
    np.testing.assert_array_equal(out.weights[0], [0, 1, 1, 0])

  def test_buffer_admission_expiry_subsample(self):
    buf = spear.init_replay_buffer(8, jnp.zeros((3,), jnp.int32))
    rows = jnp.arange(15).reshape(5, 3)
    buf = spear.add_rows(buf, rows, jnp.arange(5.0),
                         jnp.array([1, 0, 1, 1, 0], bool), step=1)
    self.assertEqual(int(buf.valid.sum()), 3)
    np.testing.assert_array_equal(buf.rows[:3], rows[jnp.array([0, 2, 3])])
    buf = spear.add_rows(buf, rows, jnp.arange(5.0), jnp.ones(5, bool),
                         step=9)
    buf = spear.expire(buf, newest_step=9, tolerate_steps=5)
    self.assertEqual(int(buf.valid.sum()), 5)  # the step-1 rows expired
    idx, ok = spear.subsample(buf, jax.random.key(0), buf.valid, 8)
    self.assertEqual(int(ok.sum()), 4)  # largest power of two <= 5
    self.assertTrue(bool(jnp.all(buf.valid[idx[:4]])))


class DrPoTest(absltest.TestCase):

  def test_rollin_lengths_uniform(self):
    ell = jnp.full((20000,), 5)
    l = np.asarray(dr_po.rollin_lengths(jax.random.key(0), ell, 1.0))
    counts = np.bincount(l, minlength=5)
    self.assertEqual(counts[0], 0)
    chi2 = np.sum((counts[1:] - 5000) ** 2 / 5000)
    self.assertLess(chi2, 16.27)  # χ²(3) at p = 0.001
    self.assertTrue(np.all(np.asarray(dr_po.rollin_lengths(
        jax.random.key(1), jnp.array([1, 0]), 1.0)) == 0))
    self.assertTrue(np.all(np.asarray(dr_po.rollin_lengths(
        jax.random.key(1), ell[:10], 0.0)) == 0))

  def test_processor_forces_reference_prefix(self):
    p = dr_po.rollin_processor()
    params = {"ref_tokens": jnp.array([[3, 1, 4]]), "rollin": jnp.array([2])}
    z = jnp.zeros((1, 6))
    for pos, expected in ((0, 3), (1, 1)):
      out = p.apply(z, params, rng=None, pos=pos)
      self.assertEqual(int(jnp.argmax(out[0])), expected)
      self.assertTrue(bool(jnp.isneginf(out[0]).sum() == 5))
    np.testing.assert_array_equal(p.apply(z, params, rng=None, pos=2), z)

  def test_rollin_tokens_get_no_gradient(self):
    b = test_utils.random_batch(0, rows=2, tokens=4, min_len=4)
    b = b._replace(aux={"rollin": jnp.array([2, 0])})
    _, (g, _), _ = test_utils.loss_and_grads(b, dr_po.dr_po(), er.ppo_clip())
    np.testing.assert_array_equal(g[0, :2], 0.0)
    self.assertTrue(np.all(np.asarray(g[1]) != 0))


class EpfTest(absltest.TestCase):

  def test_spec_vectors(self):
    w = jnp.array([2.0, 0.0, 0.0, 0.0])
    p = jax.nn.softmax(w)
    np.testing.assert_allclose(p, [0.71123, 0.09626, 0.09626, 0.09626],
                               atol=1e-5)
    ess = epf.effective_sample_size(w)
    np.testing.assert_allclose(ess, 1.87389, atol=1e-5)
    t = epf.annealing_temperature(w, 1, 10)
    np.testing.assert_allclose(t, 1.92114, atol=1e-5)
    np.testing.assert_allclose(jax.nn.softmax(w / t),
                               [0.48561, 0.17146, 0.17146, 0.17146], atol=1e-5)
    np.testing.assert_allclose(
        epf.annealing_temperature(w, 1, 10, method="entropy"), 1.43645,
        atol=1e-5)
    self.assertEqual(float(epf.annealing_temperature(w, 6, 10)), 1.0)
    self.assertEqual(float(epf.annealing_temperature(
        jnp.zeros(4), 1, 10)), 1.0)

  def test_filter_finds_high_scoring_particles(self):
    def step_fn(x, rng):
      return x + jax.random.normal(rng, x.shape), jnp.zeros(x.shape[:1], bool)

    score_fn = lambda x: jax.nn.sigmoid(x[:, 0])
    state, temps = jax.jit(lambda r: epf.entropic_particle_filter(
        step_fn, score_fn, jnp.zeros((64, 1)), r, num_steps=8))(
            jax.random.key(0))
    self.assertGreater(float(state.particles.mean()), 1.0)
    self.assertTrue(bool(jnp.all(temps >= 1.0)))


if __name__ == "__main__":
  absltest.main()
