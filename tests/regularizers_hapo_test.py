"""HAPO (spec §7): entropy score, clip, redistribution, advantages."""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

import entropy_rl as er
from tests import test_utils

from entropy_rl.regularizers import _hapo as hapo

H = jnp.array([[0.05, 0.2, 1.0, 2.0, 0.5]])
M = jnp.ones((1, 5))
INTENDED = [-1.0, -0.537244, 0.0, 1.0, -0.231378]


class EntropyScoreTest(absltest.TestCase):

  def test_spec_stats_and_scores(self):
    stats = hapo.entropy_score_stats(H, M, 0.8)
    np.testing.assert_allclose(stats.q, 0.0, atol=1e-7)  # log(1.0)
    np.testing.assert_allclose(stats.s, 1.582758, atol=1e-5)
    h = (jnp.log(H) - stats.q) / stats.s
    np.testing.assert_allclose(
        h[0], [-1.892730, -1.016857, 0, 0.437936, -0.437936], atol=1e-5)
    np.testing.assert_allclose(hapo.entropy_score(H, stats)[0], INTENDED,
                               atol=1e-5)
    released = hapo.entropy_score(H, stats, sign_mode="released")
    np.testing.assert_allclose(released[0], np.abs(INTENDED), atol=1e-5)

  def test_padding_ignored(self):
    hp = jnp.pad(H, ((0, 0), (0, 3)), constant_values=50.0)
    mp = jnp.pad(M, ((0, 0), (0, 3)))
    a = hapo.entropy_score_stats(H, M)
    b = hapo.entropy_score_stats(hp, mp)
    for x, y in zip(a, b):
      np.testing.assert_allclose(x, y, rtol=1e-6)

  def test_clip_and_redistribution(self):
    hh = jnp.array(INTENDED)
    lo, hi = hapo.adaptive_clip(jnp.full(5, 0.2), jnp.full(5, 0.2), hh, 1.0)
    np.testing.assert_allclose(lo, [0.4, 0.307449, 0.2, 0.2, 0.246276],
                               atol=1e-5)
    np.testing.assert_allclose(hi, [0.2, 0.2, 0.2, 0.4, 0.2], atol=1e-6)
    a = hapo.redistribute(jnp.ones(5), jnp.array([1, 1, 1, 1, 1.5]), hh, lo,
                          hi, 1.0)
    np.testing.assert_allclose(a, [0, 0.462756, 1, 1, 1], atol=1e-5)

  def test_token_level_group_average(self):
    a = hapo.token_level_group_advantage(jnp.array([1.0, 0.0]),
                                         jnp.array([1, 3]), jnp.array([0, 0]),
                                         fallback_checks_padding=False)
    np.testing.assert_allclose(a, [1.732047, -0.577349], atol=1e-5)
    # Fallback to GRPO when a normalised value reaches 5.
    r = jnp.array([1.0] + [0.0] * 30)
    a = hapo.token_level_group_advantage(r, jnp.full(31, 4),
                                         jnp.zeros(31, jnp.int32))
    np.testing.assert_allclose(a, er.core.advantages.grpo(
        r, jnp.zeros(31, jnp.int32)), rtol=1e-6)


class TransformTest(absltest.TestCase):

  def test_neutral_is_ppo(self):
    b = test_utils.random_batch(0)
    t = hapo.hapo(clip_alpha=0.0, adv_beta=0.0)
    l0, g0, _ = test_utils.loss_and_grads(b, er.chain(), er.dapo())
    l1, g1, _ = test_utils.loss_and_grads(b, t, er.dapo())
    self.assertEqual(float(l0), float(l1))
    np.testing.assert_array_equal(g0[0], g1[0])

  def test_intended_and_released_differ(self):
    b = test_utils.random_batch(1)
    outs = []
    for mode in ("intended", "released"):
      t = hapo.hapo(sign_mode=mode)
      b2, s, _ = er.prepare_batch(b, t, t.init(None))
      self.assertTrue(bool(s.ready))
      loss, (_, m) = er.policy_loss(b2, t, s, objective=er.ppo_clip())
      outs.append((float(loss), float(m["hapo_pos_frac"])))
    self.assertNotAlmostEqual(outs[0][0], outs[1][0], places=5)
    self.assertGreater(outs[1][1], outs[0][1])  # released: ĥ ≥ 0 mostly

  def test_stat_scope(self):
    b = test_utils.random_batch(2, rows=8)
    t = hapo.hapo()
    b2, s, _ = er.prepare_batch(b, t, t.init(None))
    loss, _ = er.policy_loss(b2, t, s, objective=er.ppo_clip(), stat_scope=4)
    manual = [er.policy_loss(jax_slice(b2, i), t, s,
                             objective=er.ppo_clip())[0] for i in (0, 4)]
    np.testing.assert_allclose(loss, np.mean(manual), rtol=1e-6)


def jax_slice(b, i):
  return jax.tree.map(lambda x: x[i:i + 4], b)


class SamplerSideTest(absltest.TestCase):

  DEFAULTS = {"q": 0.0, "s": 1.0, "inv_p": 0.0, "inv_n": 0.0, "t0": 1.0,
              "tau": 0.05}

  def test_sampler_params_wait_for_the_first_prepare(self):
    st = hapo.hapo().init(None)  # not ready: the defaults, T = T0
    p = hapo.hapo_sampler_params(st, self.DEFAULTS)
    for k, v in self.DEFAULTS.items():
      np.testing.assert_allclose(p[k], v, err_msg=k)
    stats = hapo.entropy_score_stats(H, M, 0.8)
    p = hapo.hapo_sampler_params(hapo.HapoState(stats, jnp.ones((), bool)),
                                 self.DEFAULTS)
    # q = 0, s = 1.582758, 1/P = 1/0.437936, 1/N = 1/-1.892730.
    np.testing.assert_allclose([p["q"], p["s"], p["inv_p"], p["inv_n"]],
                               [0.0, 1.582758, 2.283437, -0.528337],
                               atol=1e-5)
    self.assertEqual((p["t0"], p["tau"]), (1.0, 0.05))

  def test_sampler_kwargs_follow_the_constructor(self):
    self.assertEqual(hapo.hapo_sampler_kwargs(), {"sign_mode": "intended"})
    self.assertEqual(
        hapo.hapo_sampler_kwargs(pivot=0.5, sign_mode="released"),
        {"sign_mode": "released"})
    with self.assertRaises(TypeError):
      hapo.hapo_sampler_kwargs(sign="released")


if __name__ == "__main__":
  absltest.main()
