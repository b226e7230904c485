"""entropy_bonus and adaptive_entropy."""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np
import optax

import entropy_rl as er
from entropy_rl import regularizers
from tests import test_utils


class EntropyBonusTest(absltest.TestCase):

  def test_zero_coefficient_is_identity(self):
    b = test_utils.random_batch(0)
    obj = er.dapo()
    l0, (g0, h0), _ = test_utils.loss_and_grads(b, er.chain(), obj)
    l1, (g1, h1), _ = test_utils.loss_and_grads(
        b, regularizers.entropy_bonus(0.0), obj)
    self.assertEqual(float(l0), float(l1))
    np.testing.assert_array_equal(g0, g1)
    np.testing.assert_array_equal(h1, 0.0)

  def test_value_and_gradient(self):
    b = test_utils.random_batch(1)
    obj = er.ppo_clip()
    l0, _, _ = test_utils.loss_and_grads(b, er.chain(), obj)
    l1, (_, h1), _ = test_utils.loss_and_grads(
        b, regularizers.entropy_bonus(0.1), obj)
    hbar = er.aggregate(b.entropy, b.mask)
    np.testing.assert_allclose(l1 - l0, -0.1 * hbar, rtol=1e-5)
    np.testing.assert_allclose(h1, -0.1 * b.mask / b.mask.sum(), rtol=1e-5,
                               atol=1e-8)

  def test_schedule(self):
    b = test_utils.random_batch(2)
    t = regularizers.entropy_bonus(optax.linear_schedule(0.0, 1.0, 10))
    _, (_, m) = er.policy_loss(b, t, t.init(None), objective=er.ppo_clip(),
                               step=5)
    np.testing.assert_allclose(m["entropy_coef"], 0.5, rtol=1e-6)

  def test_entropy_gradient_raises_low_probability_logits(self):
    # d(-H)/dz = p ⊙ (log p + H): descent on -H raises low-probability logits.
    z = jnp.array([2.0, 0.0, -1.0])

    def neg_h(z):
      lp = jax.nn.log_softmax(z)
      return jnp.sum(jnp.exp(lp) * lp)

    g = jax.grad(neg_h)(z)
    p = jax.nn.softmax(z)
    h = -jnp.sum(p * jnp.log(p))
    np.testing.assert_allclose(g, p * (jnp.log(p) + h), rtol=1e-5, atol=1e-7)
    self.assertGreater(float(g[0]), 0.0)
    self.assertLess(float(g[2]), 0.0)


class AdaptiveEntropyTest(absltest.TestCase):

  def test_controller_moves_toward_target_and_clamps(self):
    t = regularizers.adaptive_entropy(3.0, init_coef=0.0, lr=0.01,
                                      max_coef=0.015)
    b = test_utils.random_batch(0)  # old entropy ~ 1.55 < 3: coefficient up
    s = t.init(None)
    coefs = []
    for _ in range(3):
      _, s, _ = er.prepare_batch(b, t, s)
      coefs.append(float(s.coef))
    h = float(er.core.ops.masked_mean(b.old_entropy, b.mask))
    np.testing.assert_allclose(coefs[0], 0.01 * (3.0 - h), rtol=1e-5)
    np.testing.assert_allclose(coefs[-1], 0.015, rtol=1e-7)
    self.assertEqual(int(s.count), 3)
    _, (_, m) = er.policy_loss(b, t, s, objective=er.ppo_clip())
    np.testing.assert_allclose(m["terms/adaptive_entropy"],
                               -0.015 * er.aggregate(b.entropy, b.mask),
                               rtol=1e-5)

  def test_log_mode_and_validation(self):
    t = regularizers.adaptive_entropy(0.0, init_coef=0.1, lr=1.0, mode="log",
                                      max_coef=1.0)
    b = test_utils.random_batch(0)
    _, s, _ = er.prepare_batch(b, t, t.init(None))
    h = float(er.core.ops.masked_mean(b.old_entropy, b.mask))
    np.testing.assert_allclose(s.coef, 0.1 * np.exp(-h), rtol=1e-5)
    with self.assertRaisesRegex(ValueError, "additive, log"):
      regularizers.adaptive_entropy(1.0, mode="pid")
    with self.assertRaisesRegex(ValueError, "init_coef > 0"):
      regularizers.adaptive_entropy(1.0, mode="log")

  def test_neutral_setting_is_identity(self):
    b = test_utils.random_batch(3)
    t = regularizers.adaptive_entropy(1.0, init_coef=0.0, lr=0.0)
    l0, (g0, _), _ = test_utils.loss_and_grads(b, er.chain(), er.ppo_clip())
    l1, (g1, _), _ = test_utils.loss_and_grads(b, t, er.ppo_clip())
    self.assertEqual(float(l0), float(l1))
    np.testing.assert_array_equal(g0, g1)


if __name__ == "__main__":
  absltest.main()
