"""Munchausen-DQN agent (spec §B9): the hand-computed Munchausen target, a
CartPole learning run over vmapped seeds, vmap == separate runs, one trace."""

from absl.testing import absltest
import chex
import jax
import jax.numpy as jnp
import numpy as np

from entropy_rl.classic import mdqn
from entropy_rl.classic import mdvi
from tests import test_utils

SEEDS = 8

_FAST_COMPILE = test_utils.disable_most_optimizations()


def setUpModule():
  next(_FAST_COMPILE)


def tearDownModule():
  next(_FAST_COMPILE, None)


def _cfg(**kw):
  base = dict(env_name="CartPole-v1", total_steps=5000, buffer_size=5000,
              batch_size=64, learning_starts=500, target_update_every=100,
              hidden=64, lr=1e-3, eps_decay_steps=2000)
  base.update(kw)
  return mdqn.MDQNConfig(**base)


class MDQNTest(absltest.TestCase):

  def test_munchausen_target_hand_vector(self):
    """q̄(s) = [1, 0], q̄(s') = [0, 0], τ = 1, α = 0.9, l₀ = −1, r = 1, γ = 0.9.

    τ log π(·|s) = [1, 0] − log(e + 1) = [−0.31326, −1.31326]; the clip sends
    the second to −1. The soft value of s' is log 2. So
    y(a=0) = 1 − 0.9·0.31326 + 0.9·log 2 = 1.34190 and
    y(a=1) = 1 − 0.9 + 0.9·log 2 = 0.72383.
    """
    qs = jnp.array([[1.0, 0.0], [1.0, 0.0]])
    qn = jnp.zeros((2, 2))
    y = mdvi.munchausen_target(qs, qn, jnp.array([0, 1]), jnp.ones(2),
                               jnp.full(2, 0.9), tau=1.0, alpha=0.9, l0=-1.0)
    np.testing.assert_allclose(y, [1.341896, 0.723832], atol=1e-5)
    # The agent's loss regresses on exactly this target: at q_θ = y it is 0.
    hp = mdqn.default_hyper(_cfg())._replace(m_tau=jnp.float32(1.0))
    w = jnp.zeros((1, 2))
    target = [(w, jnp.array([1.0, 0.0]))]  # q̄(s) = [1, 0] for every s
    batch = dict(obs=jnp.zeros((2, 1)), next_obs=jnp.zeros((2, 1)),
                 action=jnp.array([0, 1]), reward=jnp.ones(2),
                 terminated=jnp.zeros(2))
    y2 = mdvi.munchausen_target(qs, qs, batch["action"], batch["reward"],
                                jnp.full(2, hp.gamma), 1.0, hp.m_alpha, hp.l0)
    loss, aux = mdqn.td_loss(target, target, batch, hp)
    q_a = jnp.array([1.0, 0.0])
    np.testing.assert_allclose(
        loss, np.mean(np.asarray(jax.vmap(
            lambda e: jnp.where(jnp.abs(e) <= 1, 0.5 * e ** 2,
                                jnp.abs(e) - 0.5))(q_a - y2))), rtol=1e-6)
    np.testing.assert_allclose(aux["target"], y2.mean(), rtol=1e-6)

  def test_epsilon_schedule(self):
    cfg = _cfg(learning_starts=100, eps_decay_steps=200)
    eps = [float(mdqn.linear_epsilon(s, cfg, 0.01)) for s in (0, 100, 200, 300,
                                                             1000)]
    np.testing.assert_allclose(eps, [1.0, 1.0, 0.505, 0.01, 0.01], atol=1e-6)

  def test_cartpole_improves_over_seeds(self):
    cfg = _cfg()
    train = chex.assert_max_traces(mdqn.make_train(cfg), n=1)
    f = jax.jit(jax.vmap(train))
    keys = jax.random.split(jax.random.PRNGKey(0), SEEDS)
    st, m = f(keys)
    ret = np.asarray(m["episode_return"])  # [seeds, iterations]
    n = ret.shape[1]
    early = np.nanmean(ret[:, : n // 10], 1)  # ε = 1: a random policy (≈ 20)
    late = np.nanmean(ret[:, -n // 5:], 1)
    gain = late - early
    # statistical threshold over seeds: the mean gain is large and well above
    # its standard error, and no seed gets worse.
    self.assertGreater(gain.mean(), 50.0, gain)
    self.assertGreater(gain.mean(), 3 * gain.std(ddof=1) / np.sqrt(SEEDS),
                       gain)
    self.assertTrue((gain > 0).all(), gain)
    self.assertTrue(np.isfinite(np.asarray(m["loss"])[:, -1]).all())
    # π = softmax(q̄/τ) has an entropy in [0, log 2].
    ent = np.asarray(m["policy_entropy"])[:, -1]
    self.assertTrue(((ent >= -1e-6) & (ent <= np.log(2) + 1e-6)).all())
    # the greedy policy of the final network beats a random one (≈ 22)
    ev = jax.jit(jax.vmap(lambda s, k: mdqn.eval_policy(cfg, s, k)))(st, keys)
    self.assertGreater(float(np.mean(ev)), 60.0, ev)
    # jitted once: a second call with new keys reuses the compiled program
    f(jax.random.split(jax.random.PRNGKey(1), SEEDS))
    self.assertEqual(f._cache_size(), 1)

  def test_vmap_over_seeds_equals_separate_runs(self):
    cfg = _cfg(total_steps=400, learning_starts=100, target_update_every=50,
               eps_decay_steps=200, interact="stochastic")
    train = mdqn.make_train(cfg)
    keys = jax.random.split(jax.random.PRNGKey(3), 2)
    sv, mv = jax.jit(jax.vmap(train))(keys)
    single = jax.jit(train)
    for i in range(2):
      ss, ms = single(keys[i])
      for k in ("episode_return", "loss", "q"):
        np.testing.assert_allclose(np.asarray(mv[k][i]), np.asarray(ms[k]),
                                   rtol=1e-6, atol=1e-6, err_msg=k)
      jax.tree.map(lambda a, b: np.testing.assert_allclose(
          np.asarray(a[i]), np.asarray(b), rtol=1e-6, atol=1e-6),
                   sv.params, ss.params)

  def test_vmap_over_hyperparameters(self):
    """α = 0 (soft-DQN) and α = 0.9 (M-DQN) in one program."""
    cfg = _cfg(total_steps=300, learning_starts=100)
    hp = mdqn.default_hyper(cfg)
    hs = jax.tree.map(lambda x: jnp.broadcast_to(x, (2,)), hp)._replace(
        m_alpha=jnp.array([0.0, 0.9]))
    _, m = jax.jit(jax.vmap(mdqn.make_train(cfg), (None, 0)))(
        jax.random.PRNGKey(0), hs)
    t = np.asarray(m["target"])
    self.assertTrue(np.isfinite(t[:, -1]).all())
    # At the first gradient step both runs hold the same networks and batch;
    # the Munchausen term α·clip(τ log π(a|s), l₀, 0) ≤ 0 lowers the target.
    first = int(np.argmax(np.isfinite(t[0])))
    self.assertLess(t[1, first], t[0, first])

  def test_rejects_continuous_env_and_bad_interact(self):
    with self.assertRaisesRegex(ValueError, "discrete"):
      mdqn.make_train(_cfg(env_name="Pendulum-v1"))
    with self.assertRaisesRegex(ValueError, "interact"):
      mdqn.make_train(_cfg(interact="boltzmann"))


if __name__ == "__main__":
  absltest.main()
