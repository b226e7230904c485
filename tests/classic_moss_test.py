"""MOSS agent (spec §B8): the spec's reward vector through the agent's
pieces, CIC's contrastive loss by hand, the mode/skill schedule, n-step
replay, a PointMass run over vmapped seeds (each mode improves its own
signed surprise), vmap == separate runs, one trace."""

import math

from absl.testing import absltest
import chex
import jax
import jax.numpy as jnp
import numpy as np

from entropy_rl.classic import moss
from entropy_rl.classic import moss_agent as ma
from tests import test_utils

SEEDS = 8

_FAST_COMPILE = test_utils.disable_most_optimizations()


def setUpModule():
  next(_FAST_COMPILE)


def tearDownModule():
  next(_FAST_COMPILE, None)


def _cfg(**kw):
  base = dict(env_name="PointMass", env_kwargs=(("horizon", 20),),
              total_steps=4000, num_envs=4, buffer_size=4000,
              batch_size=128, learning_starts=400, hidden=64, cic_hidden=64,
              skill_dim=8)
  base.update(kw)
  return ma.MOSSConfig(**base)

class MOSSPiecesTest(absltest.TestCase):

  def test_spec_vector_through_the_agent_reward(self):
    """§B8(f): embeddings [0, 1, 3], k = 2, fresh stats; control row negated.

    The agent computes moss.particle_entropy_reward and flips control rows by
    ``control_sign`` (−1); that equals moss.moss_reward.
    """
    e = jnp.array([[0.0], [1.0], [3.0]])
    raw, s = moss.particle_entropy_reward(e, e, moss.knn_stats_init(), k=2)
    np.testing.assert_allclose(raw, [0.26217, 0.26217, 0.78833], atol=1e-4)
    np.testing.assert_allclose([s.mean, s.var], [0.66666, 0.55557], atol=1e-4)
    mode = jnp.array([0, 0, 1])
    hp = ma.default_hyper(_cfg())
    np.testing.assert_allclose(jnp.where(mode == 1, hp.control_sign * raw, raw),
                               [0.26217, 0.26217, -0.78833], atol=1e-4)

  def test_cpc_loss_by_hand(self):
    """CIC/MOSS cpc_loss: pos = e^{q·k/T}, neg = Σ_j e^{q·k_j/T} − e^{1/T}."""
    q = jnp.eye(2)
    # identical unit pairs, orthogonal negatives: neg = e² + 1 − e² = 1
    np.testing.assert_allclose(moss.cpc_loss(q, q, 0.5),
                               -2.0 + math.log(1 + 1e-6), atol=1e-6)
    rng = np.random.default_rng(0)
    qa, ka = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    qn = qa / np.linalg.norm(qa, axis=-1, keepdims=True)
    kn = ka / np.linalg.norm(ka, axis=-1, keepdims=True)
    sim = np.exp(qn @ kn.T / 0.5)
    neg = np.maximum(sim.sum(-1) - math.exp(2.0), 1e-6)
    want = np.mean(-np.log(np.diag(sim) / (neg + 1e-6)))
    np.testing.assert_allclose(moss.cpc_loss(jnp.asarray(qa), jnp.asarray(ka)),
                               want, rtol=1e-5)

  def test_mode_and_skill_schedule(self):
    t = jnp.arange(20)
    np.testing.assert_array_equal(ma.episode_mode(t, 20, 2),
                                  [0] * 10 + [1] * 10)
    np.testing.assert_array_equal(ma.episode_mode(t, 20, 4),
                                  ([0] * 5 + [1] * 5) * 2)
    z = ma.draw_skill(jax.random.PRNGKey(0), jnp.array([0, 1]), 8)
    self.assertEqual(float(jnp.abs(z[0, 4:]).sum()), 0.0)
    self.assertGreater(float(z[0, :4].min()), 0)
    self.assertEqual(float(jnp.abs(z[1, :4]).sum()), 0.0)
    self.assertGreater(float(z[1, 4:].min()), 0)
    np.testing.assert_allclose(ma.fixed_skill(1, 4), [0, 0, 0.5, 0.5])

  def test_nstep_sample_stops_at_episode_end(self):
    C, n, g = 6, 3, 0.5
    z = jnp.zeros((C, 1))
    buf = ma.Ring(
        obs=jnp.arange(C, dtype=jnp.float32).reshape(C, 1, 1),
        action=jnp.zeros((C, 1, 1)),
        reward=jnp.arange(1, C + 1, dtype=jnp.float32).reshape(C, 1),
        next_obs=(jnp.arange(C, dtype=jnp.float32) + 0.5).reshape(C, 1, 1),
        terminated=z.at[1, 0].set(1.0), done=z.at[1, 0].set(1.0).at[3, 0].set(
            1.0), skill=jnp.zeros((C, 1, 2)),
        mode=jnp.zeros((C, 1), jnp.int32), ptr=jnp.array(0),
        size=jnp.array(C))
    b = ma.sample_nstep(buf, jax.random.PRNGKey(0), 64, n, g)
    # rows 0..5, row 1 terminates, row 3 is truncated
    want = {0: (1 + g * 2, 1.5, 0.0), 1: (2, 1.5, 0.0),
            2: (3 + g * 4, 3.5, g ** 2), 3: (4, 3.5, g),
            # start rows ≤ size − n = 3 only
            }
    starts = np.asarray(b["obs"][:, 0]).astype(int)
    self.assertEqual(set(starts), {0, 1, 2, 3})
    for i, s in enumerate(starts):
      r, nxt, disc = want[s]
      np.testing.assert_allclose(b["ext_reward"][i], r, atol=1e-6)
      np.testing.assert_allclose(b["next_obs"][i, 0], nxt, atol=1e-6)
      np.testing.assert_allclose(b["discount"][i], disc, atol=1e-6)


class MOSSAgentTest(absltest.TestCase):

  def test_pointmass_modes_improve_their_signed_surprise(self):
    """Explore rows' particle reward rises, control rows' falls: each mode
    improves its own signed intrinsic reward (the agent's return); CIC's
    contrastive loss falls below its start."""
    cfg = _cfg()
    train = chex.assert_max_traces(ma.make_train(cfg), n=1)
    f = jax.jit(jax.vmap(train))
    keys = jax.random.split(jax.random.PRNGKey(0), SEEDS)
    st, m = f(keys)
    n = m["cpc_loss"].shape[1]
    early = lambda k: np.nanmean(np.asarray(m[k])[:, : n // 8], 1)
    late = lambda k: np.nanmean(np.asarray(m[k])[:, -n // 4:], 1)

    def significant(gain, floor):
      self.assertGreater(gain.mean(), floor, gain)
      self.assertGreater(gain.mean(),
                         3 * gain.std(ddof=1) / np.sqrt(SEEDS), gain)

    significant(late("intr_explore") - early("intr_explore"), 0.2)
    significant(early("intr_control") - late("intr_control"), 0.2)
    significant(late("intrinsic_reward") - early("intrinsic_reward"), 0.2)
    significant(early("cpc_loss") - late("cpc_loss"), 0.05)
    self.assertTrue(np.isfinite(np.asarray(m["critic_loss"])[:, -1]).all())
    # diagnostics are well-formed
    cov = np.asarray(jax.vmap(lambda s: ma.mode_coverage(s, last_rows=200))(st))
    self.assertTrue(((cov > 0) & (cov <= 1)).all())
    sur = np.asarray(jax.vmap(lambda s: ma.mode_surprise(s, 100))(st))
    self.assertTrue(np.isfinite(sur).all())
    # jitted once: new keys reuse the compiled program
    f(jax.random.split(jax.random.PRNGKey(1), SEEDS))
    self.assertEqual(f._cache_size(), 1)

  def test_vmap_over_seeds_equals_separate_runs(self):
    # 10 gradient steps. Batched matmuls reassociate float sums under vmap
    # (the CPC row sums of exp differ by ~5e-5 relative), and the k-NN
    # selection would amplify that over a long run; hence rtol 1e-4.
    cfg = _cfg(total_steps=200, buffer_size=200, learning_starts=160,
               batch_size=32)
    train = ma.make_train(cfg)
    keys = jax.random.split(jax.random.PRNGKey(3), 2)
    sv, mv = jax.jit(jax.vmap(train))(keys)
    single = jax.jit(train)
    for i in range(2):
      ss, ms = single(keys[i])
      for k in ("intrinsic_reward", "cpc_loss", "critic_loss", "q"):
        np.testing.assert_allclose(np.asarray(mv[k][i]), np.asarray(ms[k]),
                                   rtol=1e-4, atol=1e-5, err_msg=k)
      jax.tree.map(lambda a, b: np.testing.assert_allclose(
          np.asarray(a[i]), np.asarray(b), rtol=1e-4, atol=1e-5),
                   sv.actor, ss.actor)

  def test_rejects_discrete_env(self):
    with self.assertRaisesRegex(ValueError, "continuous"):
      ma.make_train(_cfg(env_name="CartPole-v1", env_kwargs=()))


if __name__ == "__main__":
  absltest.main()
