"""PPO (through entropy_rl.policy_loss), TRPO and the environment adapters."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

import entropy_rl
from entropy_rl import regularizers
from entropy_rl.classic import envs
from entropy_rl.classic import ppo
from entropy_rl.classic import trpo
from tests import test_utils

_FAST_COMPILE = test_utils.disable_most_optimizations()


def setUpModule():
  next(_FAST_COMPILE)


def tearDownModule():
  next(_FAST_COMPILE, None)


def _gain(ret, k=3):
  ret = np.asarray(ret)
  return np.nanmean(ret[:, -k:], 1) - np.nanmean(ret[:, 1:1 + k], 1)


class PPOTest(absltest.TestCase):

  def test_ppo_cartpole_improves_and_vmaps_over_hyperparameters(self):
    cfg = ppo.PPOConfig(env_name="CartPole-v1", num_envs=4, num_steps=64,
                        total_steps=4 * 64 * 20, num_minibatches=2,
                        lr=2.5e-3, hidden=32)
    train = ppo.make_train(cfg)
    hp = ppo.default_hyper(cfg)
    # 2 entropy coefficients x 3 seeds in one program
    coefs = jnp.array([0.0, 0.01])
    hps = jax.tree.map(lambda x: jnp.broadcast_to(x, (2,)), hp)._replace(
        ent_coef=coefs)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    f = jax.jit(jax.vmap(jax.vmap(train, (0, None)), (None, 0)))
    _, m = f(keys, hps)
    ret = np.asarray(m["episode_return"]).reshape(6, -1)
    gain = _gain(ret)
    self.assertGreater(gain.mean(), 20.0, gain)
    self.assertGreaterEqual((gain > 0).sum(), 5, gain)
    np.testing.assert_allclose(np.asarray(m["entropy_coef"])[:, 0, 0], coefs)
    self.assertContainsSubset(
        {"entropy", "clipped_high_frac", "terms/entropy_bonus"}, set(m))

  def test_default_transform_is_the_library_entropy_bonus(self):
    self.assertIs(ppo.entropy_bonus, regularizers.entropy_bonus)

  def test_ppo_with_library_transform_chain_on_bandit(self):
    """entropy_rl.chain of transforms works unchanged on 2 actions."""
    cfg = ppo.PPOConfig(env_name="BernoulliBandit-misc", num_envs=4,
                        num_steps=32, total_steps=4 * 32 * 10,
                        num_minibatches=1, lr=1e-2, hidden=16,
                        transform=lambda hp: entropy_rl.chain(
                            regularizers.entropy_bonus(hp.ent_coef)))
    train = ppo.make_train(cfg)
    keys = jax.random.split(jax.random.PRNGKey(1), 2)
    _, mv = jax.jit(jax.vmap(train))(keys)
    self.assertTrue(np.isfinite(np.asarray(mv["loss"])).all())
    # vmap over seeds == separate runs
    _, m0 = jax.jit(train)(keys[0])
    np.testing.assert_allclose(np.asarray(mv["loss"][0]),
                               np.asarray(m0["loss"]), rtol=1e-4, atol=1e-5)


class TRPOTest(absltest.TestCase):

  def test_trpo_cartpole_improves(self):
    cfg = trpo.TRPOConfig(num_envs=4, num_steps=128, total_steps=4 * 128 * 12,
                          hidden=32)
    _, m = jax.jit(jax.vmap(trpo.make_train(cfg)))(
        jax.random.split(jax.random.PRNGKey(0), 4))
    gain = _gain(m["episode_return"])
    self.assertGreater(gain.mean(), 15.0, gain)
    self.assertGreater(np.asarray(m["accepted"]).mean(), 0.5)
    self.assertLessEqual(np.asarray(m["kl"]).max(), 0.01 + 1e-6)


class EnvsTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("pendulum", "Pendulum-v1"), ("deep_sea", "DeepSea-bsuite"),
      ("four_rooms", "FourRooms-misc"),
      ("mountain_car_continuous", "MountainCarContinuous-v0"))
  def test_gymnax_adapter_six_values(self, name):
    env = envs.make(name)
    obs, st = env.reset(jax.random.PRNGKey(0))
    self.assertEqual(obs.shape, (env.obs_dim,))
    a = (jnp.zeros((env.action_dim,)) if not env.discrete
         else jnp.array(0, jnp.int32))
    tr = jax.jit(env.step)(jax.random.PRNGKey(1), st, a)
    self.assertEqual(tr.obs.shape, (env.obs_dim,))
    self.assertEqual(tr.next_obs.shape, (env.obs_dim,))
    self.assertEqual(tr.terminated.dtype, jnp.bool_)
    self.assertEqual(tr.truncated.dtype, jnp.bool_)

  def test_truncation_keeps_final_observation(self):
    env = envs.make("Pendulum-v1")
    obs, st = env.reset(jax.random.PRNGKey(0))

    def body(c, k):
      st = c
      tr = env.step(k, st, jnp.zeros(1))
      return tr.state, (tr.truncated, tr.obs, tr.next_obs)

    _, (trunc, o, no) = jax.jit(lambda s: jax.lax.scan(
        body, s, jax.random.split(jax.random.PRNGKey(1), 200)))(st)
    self.assertTrue(bool(trunc[-1]) and not bool(trunc[:-1].any()))
    # reset vs final obs
    self.assertGreater(float(jnp.abs(o[-1] - no[-1]).max()), 0)
    np.testing.assert_allclose(o[:-1], no[:-1])

  def test_tabular_env_samples_P(self):
    mdp = envs.chain_mdp(3, slip=0.25, horizon=1000)
    env = envs.tabular_env(mdp)
    _, st = env.reset(jax.random.PRNGKey(0))
    st = st._replace(pos=jnp.array(1))
    nxt = jax.vmap(lambda k: env.step(k, st, jnp.array(1)).state.pos)(
        jax.random.split(jax.random.PRNGKey(1), 4000))
    np.testing.assert_allclose(np.mean(np.asarray(nxt) == 2), 0.75, atol=0.03)


if __name__ == "__main__":
  absltest.main()
