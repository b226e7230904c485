"""ACE (spec §B2): DirectLiNGAM causal weights, gradient dormancy, soft reset.

Hand-built networks with known dead neurons, a linear non-Gaussian SEM with a
known graph, and the SAC-ACE loop (reset schedule, reset off == never-firing
schedule, causal weights on a linear bandit with a dummy action dimension).
"""

import functools

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from entropy_rl.classic import ace
from entropy_rl.classic import envs
from entropy_rl.classic import nets
from entropy_rl.classic import sac
from tests import test_utils

close = np.testing.assert_allclose


_FAST_COMPILE = test_utils.disable_most_optimizations()


def setUpModule():
  next(_FAST_COMPILE)


def tearDownModule():
  next(_FAST_COMPILE, None)


# --- DirectLiNGAM ---------------------------------------------------------------


def _sem(key, n=1000):
  """s ⟂ a1; r = 2·a1 + e_r; a2 = r + e_2 (a2 is a *child* of r); uniform e."""
  k = jax.random.split(key, 4)
  u = lambda kk: jax.random.uniform(kk, (n,), minval=-1.0, maxval=1.0)
  s, a1 = u(k[0]), u(k[1])
  r = 2.0 * a1 + 0.5 * u(k[2])
  a2 = r + 0.5 * u(k[3])
  return jnp.stack([s, a1, a2, r], 1)


# --- gradient dormancy and reset ------------------------------------------------


def _dead_net():
  """MLP 3-4-4-2; neurons 0, 2 of layer 1 and 1 of layer 2 never fire."""
  p = nets.mlp_init(jax.random.PRNGKey(0), (3, 4, 4, 2))
  (w1, _), (w2, _), last = p
  # |pre-activation| < 5 on inputs in [−1, 1]³: bias +5 keeps a neuron
  # always active, −100 keeps it always dead.
  b1 = jnp.array([-100.0, 5.0, -100.0, 5.0])
  b2 = jnp.array([5.0, -100.0, 5.0, 5.0])
  return [(0.5 * w1, b1), (0.2 * w2, b2), last]


def _grads(params):
  x = jax.random.uniform(jax.random.PRNGKey(1), (64, 3), minval=-1, maxval=1)
  y = jax.random.normal(jax.random.PRNGKey(2), (64, 2))
  return jax.grad(lambda p: jnp.mean((nets.mlp_apply(p, x) - y) ** 2))(params)


# --- in the SAC-ACE loop -----------------------------------------------------


def _cfg(**kw):
  base = dict(env_name="ContinuousBandit", variant="ace", total_steps=600,
              learning_starts=100, buffer_size=1000, batch_size=32, hidden=32,
              lr=3e-3, ace_causal_interval=200, ace_causal_sample=200,
              ace_reset_interval=100, ace_reset_start=150)
  base.update(kw)
  return sac.SACConfig(**base)


@functools.cache  # one compiled run per setting, shared by the tests
def _run(cfg, seeds=2, env=None):
  keys = jax.random.split(jax.random.PRNGKey(0), seeds)
  return jax.jit(jax.vmap(sac.make_train(cfg, env)))(keys)


def _linear_bandit():
  """One step: r = 2·a_0 + uniform noise; a_1 is ignored (a dummy)."""

  def reset(key, params=None):
    del key, params
    return jnp.ones((1,)), jnp.zeros(())

  def step(key, state, action, params=None):
    del params
    r = 2.0 * jnp.clip(action[0], -1, 1) + jax.random.uniform(
        key, (), minval=-0.5, maxval=0.5)
    obs = jnp.ones((1,))
    return envs.Transition(obs, state, r, jnp.array(True), jnp.array(False),
                           obs)

  return envs.Env(reset, step, None, 1, 0, 2, "LinearBandit")


class DirectLingamTest(absltest.TestCase):

  def test_maxent_entropy_vectors(self):
    # ½(1 + log 2π) − 79.047·(E log cosh u − 0.37457)²
    #   − 7.4129·(E u e^{−u²/2})²
    close(ace.maxent_entropy(jnp.array([-1.0, 1.0])), 1.1418059, atol=1e-5)
    close(ace.maxent_entropy(jnp.array([0.0, 1.0, 2.0])), -2.7571955,
          atol=1e-4)
    g = jax.random.normal(jax.random.PRNGKey(0), (200_000,))
    close(ace.maxent_entropy(g), 0.5 * (1 + np.log(2 * np.pi)), atol=5e-3)

  def test_direct_lingam_recovers_linear_sem(self):
    x = _sem(jax.random.PRNGKey(0))
    b, order = jax.jit(ace.direct_lingam)(x)
    b, order = np.asarray(b), np.asarray(order).tolist()
    pos = {v: i for i, v in enumerate(order)}
    self.assertTrue(pos[1] < pos[3] < pos[2])  # a1 before r before a2
    close(b[3, 1], 2.0, atol=0.05)  # a1 → r
    close(b[2, 3], 1.0, atol=0.05)  # r → a2
    mask = np.ones_like(b, bool)
    mask[3, 1] = mask[2, 3] = False
    # every other edge is pruned to exactly zero, or is a tiny leftover
    self.assertLess(np.abs(b[mask]).max(), 0.05, b)
    self.assertEqual((b[3, 2], b[3, 0]), (0.0, 0.0))  # r: no other parents

  def test_numpy_input_gives_the_jax_result(self):
    # NumPy input (float64, the NumPy default) gives the jax input's result;
    # it used to fail with a tracer conversion error inside the vmap.
    x = _sem(jax.random.PRNGKey(2), n=300)[:, 1:]  # [a1, a2, r]
    kw = dict(n_alphas=8, sweeps=10)  # small: two eager (unjitted) runs
    b_j, o_j = ace.direct_lingam(x, **kw)
    b_n, o_n = ace.direct_lingam(np.asarray(x, np.float64), **kw)
    close(b_n, b_j, atol=1e-6)
    np.testing.assert_array_equal(o_n, o_j)
    np.testing.assert_array_equal(o_n, [0, 2, 1])  # a1, r, a2
    close(b_n[2, 0], 2.0, atol=0.1)  # a1 → r

  def test_lingam_and_ols_proxy_differ(self):
    x = _sem(jax.random.PRNGKey(1))
    obs, act, r = x[:, :1], x[:, 1:3], x[:, 3]
    b_l = np.asarray(ace.causal_effects(obs, act, r, "direct_lingam"))
    b_o = np.asarray(ace.causal_effects(obs, act, r, "ols"))
    close(b_l, [2.0, 0.0], atol=0.05)
    self.assertEqual(b_l[1], 0.0)  # a child of r is not a cause
    self.assertGreater(b_o[1], 0.3)  # least squares credits the child
    w_l, w_o = ace.causal_weights(b_l), ace.causal_weights(b_o)
    close(w_l.sum(), 2.0, atol=1e-5)
    self.assertGreater(float(jnp.abs(w_l - w_o).max()), 0.1)
    with self.assertRaisesRegex(ValueError, "causal method"):
      ace.causal_effects(obs, act, r, "pc")


class DormancyResetTest(absltest.TestCase):

  def test_dormant_ratio_hand_network(self):
    g = _grads(_dead_net())
    # the dead neurons' gradient columns are exactly zero
    self.assertEqual(float(jnp.abs(g[0][0][:, jnp.array([0, 2])]).max()), 0.0)
    self.assertEqual(float(jnp.abs(g[1][0][:, 1]).max()), 0.0)
    dormant, total = ace.dormant_counts(g)
    self.assertEqual((int(dormant), total), (3, 10))
    close(ace.dormant_ratio(g), 0.3, atol=1e-7)
    alive = [(w, jnp.abs(b)) for w, b in _dead_net()]  # revive them
    self.assertLess(float(ace.dormant_ratio(_grads(alive))), 0.3)
    # threshold: norms [1, 1, 1, ε]; dormant iff ε < 0.05·(3 + ε)/4
    # (≈ 0.038)
    for eps, want in ((0.03, 0.25), (0.04, 0.0)):
      gw = jnp.diag(jnp.array([1.0, 1.0, 1.0, eps]))
      close(ace.dormant_ratio([(gw, jnp.zeros(4))]), want)

  def test_reset_factor_and_soft_reset_hand_values(self):
    close(ace.reset_factor(jnp.array(0.3)), 0.7, atol=1e-7)
    close(ace.reset_factor(jnp.array(0.0)), 0.9)
    close(ace.reset_factor(jnp.array(0.95)), 0.2)
    close(ace.causal_reset_factor(jnp.ones(3)), 0.5, atol=1e-7)
    # spread 0.2: 1.5 − exp(−1.6) = 1.29810 → clipped to 0.9
    close(ace.causal_reset_factor(jnp.array([1.1, 1.0, 0.9])), 0.9)
    # spread 0.05: 1.5 − exp(−0.4) = 0.82968 (f ∈ [0.5, 0.9] for this
    # variant)
    close(ace.causal_reset_factor(jnp.array([1.025, 0.975])), 0.829680,
          atol=1e-5)

    net = _dead_net()
    f = ace.reset_factor(ace.dormant_ratio(_grads(net)))  # 0.7
    init_a = lambda k: nets.mlp_init(k, (3, 4, 4, 2))
    init_c = lambda k: nets.ensemble_init(k, 2, (4, 4, 1))
    critic = init_c(jax.random.PRNGKey(5))
    target = jax.tree.map(lambda x: x + 1.0, critic)
    key = jax.random.PRNGKey(7)
    a2, c2, t2 = ace.reset_networks(key, f, net, critic, target, init_a,
                                    init_c)
    ka, kc, kt = jax.random.split(key, 3)
    for new, old, fresh in ((a2, net, init_a(ka)), (c2, critic, init_c(kc)),
                            (t2, target, init_c(kt))):
      for n_, o_, r_ in zip(jax.tree.leaves(new), jax.tree.leaves(old),
                            jax.tree.leaves(fresh)):
        close(n_, 0.7 * o_ + 0.3 * r_, atol=1e-6)
    # fresh biases are zero: a bias is scaled by exactly f
    close(a2[0][1], 0.7 * net[0][1], atol=1e-5)
    # the critic and its target get different fresh draws
    self.assertFalse(np.allclose(np.asarray(c2[0][0] - 0.7 * critic[0][0]),
                                 np.asarray(t2[0][0] - 0.7 * target[0][0])))


class SACAceLoopTest(absltest.TestCase):

  def test_reset_schedule_and_factor_in_loop(self):
    st, m = _run(_cfg())
    # updates u = 0..500 (steps 99..599); resets after
    # u ∈ {200, 300, 400, 500}
    reset = np.asarray(m["reset"])
    self.assertEqual(reset.sum(1).tolist(), [4.0, 4.0])
    steps = np.nonzero(reset[0])[0]
    self.assertEqual(steps.tolist(), [299, 399, 499, 599])
    d = np.asarray(m["dormant"])[:, steps]
    self.assertTrue(((d >= 0) & (d <= 1)).all())
    close(np.asarray(m["reset_factor"])[:, steps], np.clip(1 - d, 0.2, 0.9),
          atol=1e-6)
    self.assertEqual(int(st.n_updates[0]), 501)

  def test_reset_disabled_equals_never_firing_schedule(self):
    # reset off (interval 0) == the old loop: identical to a schedule that
    # never fires; a firing schedule changes the trajectory.
    st0, m0 = _run(_cfg(ace_reset_interval=0))
    st1, m1 = _run(_cfg(ace_reset_interval=10_000))
    st2, _ = _run(_cfg())
    self.assertEqual(float(np.asarray(m1["reset"]).sum()), 0.0)
    for k in ("episode_return", "critic_loss", "actor_loss", "causal_w"):
      close(np.asarray(m0[k]), np.asarray(m1[k]), rtol=0, atol=0)
    jax.tree.map(lambda a, b: close(a, b, rtol=0, atol=0), st0.actor,
                 st1.actor)
    diff = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), st0.actor,
                        st2.actor)
    self.assertGreater(max(jax.tree.leaves(diff)), 1e-3)

  def test_direct_lingam_weights_dummy_dimension_down_in_loop(self):
    cfg = _cfg(total_steps=400, ace_reset_interval=0)
    _, m = _run(cfg, seeds=3, env=_linear_bandit())
    w = np.asarray(m["causal_w"])[:, -1]  # [seeds, 2]
    # LiNGAM finds a_0 → r and prunes the dummy: B = [≈2, 0] in every seed
    self.assertTrue((w[:, 0] > 1.5).all() and (w[:, 1] < 0.5).all(), w)
    close(w.sum(1), 2.0, atol=1e-5)


if __name__ == "__main__":
  absltest.main()
