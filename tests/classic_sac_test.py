"""SAC family: learning on a continuous bandit (vmapped seeds), entropy
behaviour (α tracks its target, ERA's floor), DIAYN skills, vmap == loop,
and the variant resolved once into pieces of one skeleton."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from entropy_rl.classic import nets
from entropy_rl.classic import sac
from entropy_rl.classic import sac_pieces
from tests import test_utils

SEEDS = 8

_FAST_COMPILE = test_utils.disable_most_optimizations()


def setUpModule():
  next(_FAST_COMPILE)


def tearDownModule():
  next(_FAST_COMPILE, None)


def _bandit_cfg(variant, **kw):
  base = dict(env_name="ContinuousBandit", variant=variant, total_steps=600,
              learning_starts=100, buffer_size=1000, batch_size=32, hidden=32,
              lr=3e-3, ace_causal_interval=200, ace_causal_sample=200,
              ace_reset_interval=150, ace_reset_start=300)
  base.update(kw)
  return sac.SACConfig(**base)


def _run(cfg, seeds=SEEDS):
  keys = jax.random.split(jax.random.PRNGKey(0), seeds)
  return jax.jit(jax.vmap(sac.make_train(cfg)))(keys)


class SACLearnsTest(parameterized.TestCase):

  @parameterized.named_parameters(
      (v, v) for v in ("sac", "era", "bandlimited", "ace", "maxinfo"))
  def test_improves_on_continuous_bandit(self, variant):
    kw = dict(era_h=-1.0) if variant == "era" else {}
    _, m = _run(_bandit_cfg(variant, **kw))
    ret = np.asarray(m["episode_return"])  # [seeds, steps]
    early = ret[:, 20:100].mean(1)  # uniform-random warm-up actions
    late = ret[:, -100:].mean(1)
    gain = late - early
    # statistical threshold over seeds: mean gain well above its noise
    self.assertGreater(gain.mean(), 0.1, gain)
    self.assertGreater(gain.mean(), 3 * gain.std(ddof=1) / np.sqrt(SEEDS),
                       gain)
    self.assertTrue(np.isfinite(np.asarray(m["critic_loss"])[:, -1]).all())
    if variant == "sac":  # α falls while entropy is above its target −|A|
      alpha = np.asarray(m["alpha"])
      ent = np.asarray(m["entropy"])
      self.assertTrue((alpha[:, -1] < alpha[:, 100]).all())
      self.assertLess(ent[:, -50:].mean(), ent[:, 100:150].mean())
    if variant == "era":  # the Gaussian entropy never falls below D·h
      g = np.asarray(m["gauss_entropy"])[:, 100:]
      self.assertGreaterEqual(g.min(), -1.0 - 1e-4)
    if variant == "ace":
      w = np.asarray(m["causal_w"])[:, -1]
      np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
    if variant == "maxinfo":
      self.assertTrue(np.isfinite(np.asarray(m["lambda"])[:, -1]).all())

  def test_ace_weights_dummy_dimension_down(self):
    # The least-squares proxy (ace_causal_method="ols"): the bandit's reward
    # is a noise-free quadratic of a_0, outside DirectLiNGAM's linear
    # non-Gaussian-noise model (its loop test is in classic_ace_test.py).
    cfg = _bandit_cfg("ace", env_name="ContinuousBandit",
                      env_kwargs=(("irrelevant", 1),), total_steps=400,
                      ace_reset_interval=0, ace_causal_method="ols")
    _, m = _run(cfg, 4)
    w = np.asarray(m["causal_w"])[:, -1]  # [seeds, 2]
    # Reward depends on a_0 only; its causal weight exceeds the dummy's on
    # average (early on a_0 < 0.5 so its effect is positive).
    self.assertGreater(w[:, 0].mean(), w[:, 1].mean())

  def test_diayn_skills_distinguishable(self):
    cfg = sac.SACConfig(env_name="PointMass", variant="diayn",
                        total_steps=1500, learning_starts=200,
                        buffer_size=1500, batch_size=64, hidden=32, lr=3e-3,
                        alpha=0.1, diayn_skills=4, autotune=False)
    _, m = _run(cfg, 4)
    acc = np.asarray(m["disc_acc"])
    self.assertGreater(acc[:, -200:].mean(), 0.5)  # chance is 0.25
    self.assertGreater(acc[:, -200:].mean(),
                       np.nanmean(acc[:, 200:300]) + 0.1)


class SACVmapTest(absltest.TestCase):

  def test_vmap_over_seeds_equals_separate_runs(self):
    cfg = _bandit_cfg("sac", total_steps=200)
    train = sac.make_train(cfg)
    keys = jax.random.split(jax.random.PRNGKey(3), 2)
    _, mv = jax.jit(jax.vmap(train))(keys)
    single = jax.jit(train)
    for i in range(2):
      _, ms = single(keys[i])
      np.testing.assert_allclose(np.asarray(mv["episode_return"][i]),
                                 np.asarray(ms["episode_return"]), rtol=1e-4,
                                 atol=1e-5)

  def test_vmap_over_hyperparameters(self):
    cfg = _bandit_cfg("era", total_steps=200)
    env = sac.make_env(cfg)
    hp = sac.default_hyper(cfg, env)
    hs = hp._replace(era_h=jnp.array([0.25, -0.5]))
    stacked = jax.tree.map(lambda x: jnp.broadcast_to(x, (2,) + x.shape), hp)
    stacked = stacked._replace(era_h=hs.era_h)
    _, m = jax.jit(jax.vmap(sac.make_train(cfg), (None, 0)))(
        jax.random.PRNGKey(0), stacked)
    g = np.asarray(m["gauss_entropy"])[:, -1]
    np.testing.assert_allclose(g, [0.25, -0.5], atol=1e-4)


def _fixed_actor_state(mu, log_std, hidden=4):
  """A SACState whose actor outputs (μ, log σ) for every observation."""
  actor = nets.mlp_init(jax.random.PRNGKey(0), (1, hidden, hidden, 2))
  actor[-1] = (jnp.zeros((hidden, 2)), jnp.array([mu, log_std]))
  none = sac.SACState(*[None] * len(sac.SACState._fields))
  return none._replace(actor=actor)


class EvalPolicyTest(absltest.TestCase):
  # ContinuousBandit: one step, r = −(a − 0.5)²; the actor gives μ = 0, σ = 1.

  def test_deterministic_by_default_and_stochastic_on_request(self):
    cfg = _bandit_cfg("sac", hidden=4)
    st = _fixed_actor_state(0.0, 0.0)
    key = jax.random.PRNGKey(0)
    # default: the mean action tanh(μ) = 0, so r = −0.25 exactly
    det = sac.eval_policy(cfg, st, key, num_episodes=8, max_steps=1)
    np.testing.assert_allclose(det, -0.25, rtol=1e-6)
    # stochastic: a = tanh(u), u ~ N(0, 1); E[−(tanh u − 0.5)²] = −0.64429
    # (Gauss–Hermite); per-episode std 0.70, so 4096 episodes: SE 0.011.
    sto = sac.eval_policy(cfg, st, key, num_episodes=4096, max_steps=1,
                          deterministic=False)
    np.testing.assert_allclose(sto, -0.64429, atol=0.05)

  def test_diayn_needs_a_skill(self):
    cfg = _bandit_cfg("diayn", hidden=4, diayn_skills=2)
    with self.assertRaisesRegex(ValueError, "DIAYN.*skill"):
      sac.eval_policy(cfg, _fixed_actor_state(0.0, 0.0), jax.random.PRNGKey(0))


class SACPiecesTest(absltest.TestCase):

  def test_every_variant_resolves_to_pieces(self):
    self.assertEqual(sac.VARIANTS, ("sac", "era", "bandlimited", "ace",
                                    "maxinfo", "diayn"))
    for v in sac.VARIANTS:
      p = sac.make_pieces(sac.SACConfig(variant=v))
      self.assertIsInstance(p, sac_pieces.SACPieces)
    # what each method changes, read off its pieces
    base = sac_pieces.SACPieces()
    era = sac.make_pieces(sac.SACConfig(variant="era"))
    self.assertFalse(era.tune_alpha)
    self.assertIsNot(era.policy_head, base.policy_head)
    bl = sac.make_pieces(sac.SACConfig(variant="bandlimited"))
    self.assertEqual(bl._replace(target_q=base.target_q), base)
    self.assertEqual(sac.make_pieces(sac.SACConfig(variant="diayn",
                                                   diayn_skills=3)
                                     ).num_skills, 3)
    fixed = sac.make_pieces(sac.SACConfig(autotune=False))
    self.assertFalse(fixed.tune_alpha)
    self.assertIs(fixed.alpha, sac_pieces.fixed_alpha)

  def test_rejects_unknown_variant(self):
    with self.assertRaisesRegex(ValueError, "unknown SAC variant"):
      sac.make_train(sac.SACConfig(variant="td3"))


if __name__ == "__main__":
  absltest.main()
