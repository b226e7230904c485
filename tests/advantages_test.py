"""Advantage estimators: spec §1.1, §1.2, §1.7, §10 and properties."""

from absl.testing import absltest
from absl.testing import parameterized
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np

from entropy_rl.core import advantages as adv_lib
import entropy_rl as er
from tests import test_utils


class GroupAdvantageTest(parameterized.TestCase):

  def test_grpo_two_groups(self):
    # Unbiased std of [1, 0] is 0.7071 -> ±0.5/0.7071 = ±0.707106.
    a = adv_lib.grpo(jnp.array([1.0, 0.0, 1.0, 1.0]), jnp.array([0, 0, 1, 1]))
    np.testing.assert_allclose(a, [0.707106, -0.707106, 0, 0], atol=1e-5)

  def test_grpo_and_dr_grpo(self):
    r, g = jnp.array([1.0, 0.0, 0.0, 0.0]), jnp.zeros(4, jnp.int32)
    # mean 0.25, unbiased std 0.5.
    np.testing.assert_allclose(adv_lib.grpo(r, g), [1.5, -0.5, -0.5, -0.5],
                               atol=2e-5)
    np.testing.assert_allclose(adv_lib.grpo(r, g, normalize_std=False),
                               [0.75, -0.25, -0.25, -0.25], atol=1e-6)

  def test_singleton_group_keeps_reward(self):
    a = adv_lib.grpo(jnp.array([0.3, 1.0, 0.0]), jnp.array([0, 1, 1]))
    np.testing.assert_allclose(a[0], 0.3, atol=1e-6)

  def test_rloo(self):
    r = jnp.array([-0.5, -1.0, -0.2, -0.3])
    np.testing.assert_allclose(adv_lib.rloo(r, jnp.zeros(4, jnp.int32)),
                               [0.0, -0.666667, 0.4, 0.266667], atol=1e-5)

  @parameterized.named_parameters(
      ("hard", [1, 0, 0, 0], [2.0, 0, 0, 0]),
      ("easy", [1, 1, 1, 0], [0, 0, 0, -2.0]),
      ("half", [1, 1, 0, 0], [1.732048, 1.732048, 0, 0]),
  )
  def test_qae_quantile_baseline(self, rewards, expected):
    a = adv_lib.grpo(jnp.array(rewards, jnp.float32), jnp.zeros(4, jnp.int32),
                     baseline=adv_lib.quantile_baseline(0.4))
    np.testing.assert_allclose(a, expected, atol=1e-4)

  @settings(deadline=None, max_examples=25)
  @given(st.lists(st.integers(0, 3), min_size=2, max_size=12),
         st.integers(0, 10_000))
  def test_constant_group_gives_zero(self, ids, seed):
    ids = np.array(ids)
    rng = np.random.default_rng(seed)
    per_group = rng.normal(size=4)
    r = per_group[ids]
    for fn in (adv_lib.grpo, adv_lib.rloo):
      a = np.asarray(fn(jnp.asarray(r, jnp.float32), jnp.asarray(ids)))
      counts = np.bincount(ids, minlength=4)[ids]
      np.testing.assert_allclose(a[counts > 1], 0.0, atol=1e-5)

  def test_jit_equals_eager(self):
    b = test_utils.random_batch(3, rows=12, groups=3)
    for fn in (adv_lib.grpo, adv_lib.rloo):
      np.testing.assert_allclose(jax.jit(fn)(b.rewards, b.group_ids),
                                 fn(b.rewards, b.group_ids), rtol=1e-6)

  def test_bad_shapes(self):
    with self.assertRaisesRegex(ValueError, r"group_ids has shape \(3,\)"):
      adv_lib.grpo(jnp.zeros(4), jnp.zeros(3, jnp.int32))
    with self.assertRaisesRegex(ValueError, r"rewards must have shape \[B\]"):
      adv_lib.grpo(jnp.zeros((4, 2)), jnp.zeros(4, jnp.int32))
    with self.assertRaisesRegex(ValueError, "quantile level"):
      adv_lib.quantile_baseline(0.0)


class TokenAdvantageTest(absltest.TestCase):

  def test_reinforce_pp_whitened(self):
    mask = jnp.array([[1, 1, 0], [1, 0, 0], [1, 1, 1]], jnp.float32)
    a = adv_lib.reinforce_pp_baseline(jnp.array([1.0, 0.0, 0.5]),
                                      jnp.array([0, 0, 1]), mask)
    valid = np.asarray(a)[np.asarray(mask) > 0]
    np.testing.assert_allclose(valid.mean(), 0.0, atol=1e-6)
    np.testing.assert_allclose(valid.std(), 1.0, atol=1e-5)
    self.assertTrue(np.all(np.asarray(a)[np.asarray(mask) == 0] == 0))

  def test_gae_matches_python_loop(self):
    rng = np.random.default_rng(0)
    t, n = 7, 3
    r, v = rng.normal(size=(t, n)), rng.normal(size=(t + 1, n))
    d = 0.9 * (rng.random((t, n)) > 0.2)
    a, ret = adv_lib.gae(jnp.asarray(r), jnp.asarray(v), jnp.asarray(d), 0.8)
    expected = np.zeros((t, n))
    acc = np.zeros(n)
    for i in reversed(range(t)):
      acc = r[i] + d[i] * v[i + 1] - v[i] + d[i] * 0.8 * acc
      expected[i] = acc
    np.testing.assert_allclose(a, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ret, expected + v[:-1], rtol=1e-5, atol=1e-6)

  def test_token_gae_skips_padding(self):
    # One row [r, pad, r'] behaves like the unpadded [r, r'].
    r = jnp.array([[0.0, 9.0, 1.0]])
    v = jnp.array([[0.5, 9.0, 0.2]])
    m = jnp.array([[1.0, 0.0, 1.0]])
    a, _ = adv_lib.token_gae(r, v, m, gamma=0.9, lambda_=0.95)
    a2, _ = adv_lib.token_gae(jnp.array([[0.0, 1.0]]), jnp.array([[0.5, 0.2]]),
                              jnp.ones((1, 2)), gamma=0.9, lambda_=0.95)
    np.testing.assert_allclose(a[0, [0, 2]], a2[0], rtol=1e-6)
    self.assertEqual(float(a[0, 1]), 0.0)

  def test_prepare_transforms_write_advantages(self):
    b = test_utils.random_batch(1, rows=6, groups=3)
    t = er.chain(adv_lib.grpo_advantages())
    b2, _, metrics = er.prepare_batch(b._replace(advantages=jnp.zeros_like(
        b.logp)), t, t.init(None))
    expected = adv_lib.grpo(b.rewards, b.group_ids)[:, None] * b.mask
    np.testing.assert_allclose(b2.advantages, expected, rtol=1e-6)
    self.assertIn("adv_mean", metrics)


if __name__ == "__main__":
  absltest.main()
