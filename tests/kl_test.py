"""KL estimators (spec §1.6) and the KL transforms."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

import entropy_rl as er
from entropy_rl import regularizers
from entropy_rl.core import kl
from tests import test_utils


class EstimatorTest(parameterized.TestCase):

  # ℓ = −1, ℓʳ = −1.5.
  @parameterized.named_parameters(
      ("k1", "k1", 0.5), ("kl", "kl", 0.5), ("abs", "abs", 0.5),
      ("k2", "k2", 0.125), ("mse", "mse", 0.125),
      ("k3", "k3", 0.106531),  # e^-0.5 + 0.5 - 1
      ("low_var_kl", "low_var_kl", 0.106531))
  def test_spec_values(self, estimator, expected):
    got = kl.kl_estimate(jnp.array([-1.0]), jnp.array([-1.5]), estimator)
    np.testing.assert_allclose(got, [expected], atol=1e-6)

  def test_unknown_estimator_lists_valid(self):
    with self.assertRaisesRegex(ValueError, "k1.*k3.*low_var_kl"):
      kl.kl_estimate(jnp.zeros(1), jnp.zeros(1), "k4")
    with self.assertRaisesRegex(ValueError, "unknown KL estimator"):
      regularizers.kl_penalty(0.1, "js")

  def test_k3_clamped(self):
    got = kl.kl_estimate(jnp.array([-50.0]), jnp.array([0.0]), "k3")
    np.testing.assert_allclose(got, [10.0])

  def test_k2_gradient_is_kl_gradient_in_expectation(self):
    # E_{y~π}[∇ k2] = ∇ KL(π‖π_ref) for a categorical π = softmax(z).
    z = jnp.array([0.3, -0.2, 0.5])
    ref = jax.nn.log_softmax(jnp.array([0.0, 0.1, -0.4]))

    def expected_k2(z):
      logp = jax.nn.log_softmax(z)
      p = jax.lax.stop_gradient(jnp.exp(logp))
      return jnp.sum(p * kl.kl_estimate(logp, ref, "k2"))

    def true_kl(z):
      logp = jax.nn.log_softmax(z)
      return jnp.sum(jnp.exp(logp) * (logp - ref))

    np.testing.assert_allclose(jax.grad(expected_k2)(z), jax.grad(true_kl)(z),
                               atol=1e-6)


class TransformTest(absltest.TestCase):

  def test_kl_penalty_term_and_zero_identity(self):
    b = test_utils.random_batch(0)
    obj = er.ppo_clip()
    l0, g0, _ = test_utils.loss_and_grads(b, er.chain(), obj)
    l1, g1, _ = test_utils.loss_and_grads(b, regularizers.kl_penalty(0.0), obj)
    self.assertEqual(float(l0), float(l1))
    np.testing.assert_array_equal(g0[0], g1[0])
    l2, _, (_, m) = test_utils.loss_and_grads(b, regularizers.kl_penalty(0.5),
                                              obj)
    expected = 0.5 * er.aggregate(kl.kl_estimate(b.logp, b.ref_logp), b.mask)
    np.testing.assert_allclose(m["terms/kl"], expected, rtol=1e-6)
    np.testing.assert_allclose(l2 - l0, expected, rtol=1e-5)

  def test_kl_in_reward(self):
    b = test_utils.random_batch(1)
    t = regularizers.kl_in_reward(0.1, "k1")
    b2, _, _ = er.prepare_batch(b, t, t.init(None))
    pen = 0.1 * jnp.sum((b.old_logp - b.ref_logp) * b.mask, -1)
    np.testing.assert_allclose(b2.rewards, b.rewards - pen, rtol=1e-5,
                               atol=1e-6)

  def test_kl_reward_per_token(self):
    r = kl.kl_reward(jnp.ones((1, 2)), jnp.array([[-1.0, -2.0]]),
                     jnp.array([[-1.5, -2.0]]), jnp.array([[1.0, 0.0]]), 0.1)
    np.testing.assert_allclose(r, [[1.0 - 0.05, 0.0]], rtol=1e-6)


if __name__ == "__main__":
  absltest.main()
