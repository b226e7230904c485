"""ERA's δ compensation (spec §A5.2/§B1) and DORAEMON's effect (spec §B7).

* The truncated-normal entropy against scipy's values, the δ loss gradient
  and its projected step by hand, the tuned δ lifting the realised entropy
  of random policies to the floor H₀ = D·h, and the same inside SAC-ERA.
* DORAEMON on CartPole, vmapped over seeds: the Beta distribution's entropy
  grows while the policy's success rate under it stays above α.
"""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np
import optax

from entropy_rl.classic import doraemon
from entropy_rl.classic import era
from entropy_rl.classic import ppo
from entropy_rl.classic import sac
from tests import test_utils

close = np.testing.assert_allclose


_FAST_COMPILE = test_utils.disable_most_optimizations()


def setUpModule():
  next(_FAST_COMPILE)


def tearDownModule():
  next(_FAST_COMPILE, None)


def _realised(pre, mu, h, delta):
  d = pre.shape[-1]
  log_std = era.era_log_std(pre, h + delta / d)
  return era.truncated_normal_entropy(jnp.tanh(mu), jnp.exp(log_std)).sum(-1)


ALPHA = 0.5  # DORAEMON's success_rate condition α
SEEDS = 4


# --- ERA: δ compensation ------------------------------------------------------


class EraCompensationTest(absltest.TestCase):

  def test_truncated_normal_entropy_vectors(self):
    # scipy.stats.truncnorm((−1 − loc)/σ, (1 − loc)/σ, loc, σ).entropy(),
    # float64
    loc = jnp.array([0.0, 0.5, 0.9, -0.3])
    scale = jnp.array([1.0, 0.31, 0.05, 2.0])
    close(era.truncated_normal_entropy(loc, scale),
          [0.6827859, 0.1003278, -1.6550545, 0.6915883], atol=2e-6)
    # very wide: uniform on [−1, 1] (log 2); very narrow: the Gaussian's
    close(era.truncated_normal_entropy(jnp.float32(0.0), jnp.float32(1e3)),
          np.log(2.0), atol=1e-4)  # float32: log σ + log Z cancel
    close(era.truncated_normal_entropy(jnp.float32(0.0), jnp.float32(1e-3)),
          era.gaussian_entropy(jnp.log(jnp.full((1,), 1e-3))), atol=1e-5)
    # truncation never raises the entropy above the Gaussian's
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    loc = jnp.tanh(jax.random.normal(k1, (1000,)))
    log_std = jax.random.uniform(k2, (1000,), minval=-8.0, maxval=0.0)
    h = era.truncated_normal_entropy(loc, jnp.exp(log_std))
    self.assertTrue(bool(jnp.all(
        h <= log_std + era.nets.LOG_2PI_E_HALF + 1e-5)))

  def test_delta_loss_gradient_and_projected_step(self):
    h = jnp.array([0.2, 0.4])  # mean 0.3 < H₀ = 0.5
    g = jax.grad(era.delta_loss)(jnp.float32(0.7), h, 0.5)
    close(g, -0.2, atol=1e-7)  # ∂L/∂δ̂ = E[H] − H₀
    close(era.delta_loss(jnp.float32(0.7), h, 0.5), -0.14, atol=1e-7)
    tx = optax.adam(0.1)
    d, _ = era.delta_step(tx, jnp.float32(0.0), tx.init(jnp.zeros(())), h, 0.5)
    close(d, 0.1, atol=1e-6)  # Adam's first step is lr·sign(−g)
    d, _ = era.delta_step(tx, jnp.float32(0.05), tx.init(jnp.zeros(())),
                          h + 1.0, 0.5)
    # above the floor: δ shrinks and is kept ≥ 0
    self.assertEqual(float(d), 0.0)

  def test_delta_lifts_realised_entropy_to_floor_on_random_inputs(self):
    dim, h = 3, 0.25
    h0 = dim * h  # the floor H₀ = D·h = 0.75

    def batch(key):
      k1, k2 = jax.random.split(key)
      return (jax.random.normal(k1, (512, dim)),
              0.5 * jax.random.normal(k2, (512, dim)))

    pre, mu = batch(jax.random.PRNGKey(0))
    h_real0 = _realised(pre, mu, h, 0.0)
    # the Gaussian sits on the floor but truncation pulls H[π] below it
    close(era.gaussian_entropy(era.era_log_std(pre, h)), h0, atol=1e-4)
    self.assertLess(float(h_real0.mean()), h0 - 0.2)
    self.assertTrue(bool(jnp.all(h_real0 < h0)))

    tx = optax.adam(0.05)

    def step(c, key):
      d, s = c
      pre, mu = batch(key)
      d, s = era.delta_step(tx, d, s, _realised(pre, mu, h, d), h0)
      return (d, s), d

    (delta, _), path = jax.jit(lambda k: jax.lax.scan(
        step, (jnp.float32(0.0), tx.init(jnp.zeros(()))),
        jax.random.split(k, 400)))(jax.random.PRNGKey(1))
    self.assertGreaterEqual(float(path.min()), 0.0)
    self.assertTrue(0.3 < float(delta) < 3.0, delta)
    # held-out random inputs: the realised entropy is back on the floor
    pre, mu = batch(jax.random.PRNGKey(2))
    h_real = _realised(pre, mu, h, delta)
    self.assertGreaterEqual(float(h_real.mean()), h0 - 0.02,
                            float(h_real.mean()))
    self.assertLessEqual(float(h_real.mean()), h0 + 0.1)
    # and the Gaussian entropy is the compensated target H₀ + δ
    close(era.gaussian_entropy(era.era_log_std(pre, h + delta / dim)),
          h0 + float(delta), atol=1e-4)

  def test_sac_era_compensation_in_loop(self):
    base = dict(env_name="ContinuousBandit", variant="era", total_steps=600,
                learning_starts=100, buffer_size=1000, batch_size=32, hidden=32,
                lr=3e-3, era_h=0.25)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    out = {}
    for auto in (False, True):
      cfg = sac.SACConfig(**base, era_autotune_delta=auto)
      _, m = jax.jit(jax.vmap(sac.make_train(cfg)))(keys)
      out[auto] = jax.tree.map(np.asarray, m)
    h0 = 0.25  # D·h with D = 1
    off, on = out[False], out[True]
    self.assertTrue((off["era_delta"][:, 100:] == 0.0).all())
    self.assertLess(off["era_entropy"][:, -100:].mean(), h0 - 0.05)
    self.assertGreaterEqual(on["era_delta"][:, 100:].min(), 0.0)
    self.assertTrue((on["era_delta"][:, -1] > 0.05).all())
    late = on["era_entropy"][:, -100:].mean(1)  # per seed
    self.assertTrue((late >= h0 - 0.03).all(), late)
    # the Gaussian entropy is the compensated floor D·h + δ
    close(on["gauss_entropy"][:, -1], h0 + on["era_delta"][:, -2], atol=2e-3)


# --- DORAEMON: entropy grows, success stays above α --------------------------


class DoraemonTest(absltest.TestCase):

  def test_doraemon_entropy_grows_while_success_stays_above_alpha(self):
    # CartPole-v1 under Beta(100, 100) on 4 dynamics parameters; success is an
    # evaluation return ≥ 200. ε = 0.05 (the paper sweeps 0.001–0.2).
    cfg = doraemon.DoraemonTrainConfig(
        ppo=ppo.PPOConfig(num_envs=8, num_steps=64, lr=2.5e-3),
        doraemon=doraemon.DoraemonConfig(kl_ub=0.05, success_rate=ALPHA),
        outer_iters=20, ppo_updates_per_iter=10, eval_episodes=32,
        eval_steps=201, performance_lb=200.0)
    keys = jax.random.split(jax.random.PRNGKey(0), SEEDS)
    _, dist, m = jax.jit(jax.vmap(doraemon.make_train(cfg)))(keys)
    m = jax.tree.map(np.asarray, m)
    h_init = 4 * float(doraemon.beta_entropy(100.0, 100.0))  # −7.7035
    close(h_init, 4 * -1.925880, atol=1e-3)
    # (1) the entropy of ν grows: final gain > 0 in every seed and > 3 SE
    gain = m["entropy"][:, -1] - h_init
    self.assertTrue((gain > 0).all(), gain)
    self.assertGreater(gain.mean(), 3 * gain.std(ddof=1) / np.sqrt(SEEDS),
                       gain)
    # from −7.7 to above −4.7 nats
    self.assertGreater(gain.mean(), 3.0, gain)
    close(m["entropy"][:, -1], jax.vmap(doraemon.entropy)(dist), atol=1e-4)
    # every step stays inside the trust region KL(ν_i‖ν_{i+1}) ≤ ε
    self.assertLessEqual(m["kl_step"].max(), 0.05 + 1e-4)
    # (2) the success rate under the growing ν stays above α: the mean over
    # the second half of the run, per seed, and its seed mean minus 2 SE
    late = m["success"][:, 10:].mean(1)
    self.assertTrue((late >= ALPHA).all(), late)
    self.assertGreaterEqual(
        late.mean() - 2 * late.std(ddof=1) / np.sqrt(SEEDS), ALPHA, late)
    # (3) whenever ν_i was feasible, the chosen ν_{i+1} keeps the IS estimate
    # of the success rate ≥ α (the constraint of the update)
    feasible = m["success"] >= ALPHA
    self.assertTrue((m["success_is"][feasible] >= ALPHA - 1e-5).all())


if __name__ == "__main__":
  absltest.main()
