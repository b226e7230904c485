"""SAC family: learning on a continuous bandit (vmapped seeds), entropy
behaviour (α tracks its target, ERA's floor), DIAYN skills, vmap == loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from entropy_rl.classic import sac
from tests import test_utils

SEEDS = 8


_fast_compile = pytest.fixture(autouse=True, scope="module")(
    test_utils.disable_most_optimizations)


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


@pytest.mark.parametrize("variant",
                         ["sac", "era", "bandlimited", "ace", "maxinfo"])
def test_improves_on_continuous_bandit(variant):
  kw = dict(era_h=-1.0) if variant == "era" else {}
  _, m = _run(_bandit_cfg(variant, **kw))
  ret = np.asarray(m["episode_return"])  # [seeds, steps]
  early = ret[:, 20:100].mean(1)  # uniform-random warm-up actions
  late = ret[:, -100:].mean(1)
  gain = late - early
  # statistical threshold over seeds: mean gain well above its noise
  assert gain.mean() > 0.1, gain
  assert gain.mean() > 3 * gain.std(ddof=1) / np.sqrt(SEEDS), gain
  assert np.isfinite(np.asarray(m["critic_loss"])[:, -1]).all()
  if variant == "sac":  # α falls while entropy is above its target −|A|
    alpha = np.asarray(m["alpha"])
    ent = np.asarray(m["entropy"])
    assert (alpha[:, -1] < alpha[:, 100]).all()
    assert ent[:, -50:].mean() < ent[:, 100:150].mean()
  if variant == "era":  # the Gaussian entropy never falls below D·h
    g = np.asarray(m["gauss_entropy"])[:, 100:]
    assert g.min() >= -1.0 - 1e-4
  if variant == "ace":
    w = np.asarray(m["causal_w"])[:, -1]
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
  if variant == "maxinfo":
    assert np.isfinite(np.asarray(m["lambda"])[:, -1]).all()


def test_ace_weights_dummy_dimension_down():
  # The least-squares proxy (ace_causal_method="ols"): the bandit's reward is
  # a noise-free quadratic of a_0, outside DirectLiNGAM's linear
  # non-Gaussian-noise model (its loop test is in classic_ace_test.py).
  cfg = _bandit_cfg("ace", env_name="ContinuousBandit",
                    env_kwargs=(("irrelevant", 1),), total_steps=400,
                    ace_reset_interval=0, ace_causal_method="ols")
  _, m = _run(cfg, 4)
  w = np.asarray(m["causal_w"])[:, -1]  # [seeds, 2]
  # Reward depends on a_0 only; its causal weight exceeds the dummy's on
  # average (early on a_0 < 0.5 so its effect is positive).
  assert w[:, 0].mean() > w[:, 1].mean()


def test_vmap_over_seeds_equals_separate_runs():
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


def test_vmap_over_hyperparameters():
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


def test_diayn_skills_distinguishable():
  cfg = sac.SACConfig(env_name="PointMass", variant="diayn", total_steps=1500,
                      learning_starts=200, buffer_size=1500, batch_size=64,
                      hidden=32, lr=3e-3, alpha=0.1, diayn_skills=4,
                      autotune=False)
  _, m = _run(cfg, 4)
  acc = np.asarray(m["disc_acc"])
  assert acc[:, -200:].mean() > 0.5  # chance is 0.25
  assert acc[:, -200:].mean() > np.nanmean(acc[:, 200:300]) + 0.1
