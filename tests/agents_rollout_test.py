"""Multi-turn rollouts: on-device scan vs the Python adapter, layouts, masks,
episode advantages and the agent train step (tiny decoder, token game)."""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import entropy_rl as er
from entropy_rl.core import advantages as adv_lib
from entropy_rl.models import as_functions
from entropy_rl.models import Decoder
from entropy_rl.models import DecoderConfig
from entropy_rl.training import init_train_state

from entropy_rl.agents import _envs as envs_lib
from entropy_rl.agents import _layouts as layouts
from entropy_rl.agents import _rollout as rollout_lib
from entropy_rl.agents import _token_game as game
from entropy_rl.agents import _train as train
from entropy_rl.agents import _turns as turns_lib

# Compiles whole rollouts / iterations: XLA with most optimisations off
# (tests/conftest.py).
UNOPTIMISED_COMPILES = True

T, G, N = 4, 2, 2  # turns, groups, group size
CFG = DecoderConfig(vocab_size=16, hidden_size=16, num_layers=1, num_heads=2,
                    num_kv_heads=2, intermediate_size=32)


def assert_trees_equal(test, a, b, atol=0.0):
  la = jax.tree_util.tree_leaves_with_path(a)
  lb = jax.tree.leaves(b)
  test.assertEqual(len(la), len(lb))
  for (path, x), y in zip(la, lb):
    x, y = np.asarray(x), np.asarray(y)
    msg = jax.tree_util.keystr(path)
    if x.dtype.kind == "f" and atol:
      np.testing.assert_allclose(x, y, atol=atol, err_msg=msg)
    else:
      np.testing.assert_array_equal(x, y, err_msg=msg)


class RolloutTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.fns, cls.params = as_functions(Decoder(CFG, rngs=nnx.Rngs(0)))
    # p_true < 1 and a few turns: tool noise and early answers both occur.
    cls.env = game.token_game(num_slots=1, num_values=4, max_turns=T,
                              p_true=0.5)
    cls.rng = jax.random.PRNGKey(5)
    roll = jax.jit(lambda p, k: rollout_lib.rollout(
        cls.fns, p, cls.env, k, num_groups=G, group_size=N))
    cls.ep = roll(cls.params, cls.rng)
    # A second key with an episode that ends early (found by search).
    cls.ep2 = None
    for s in range(40):
      ep = roll(cls.params, jax.random.PRNGKey(100 + s))
      if int(ep.trajectories.num_turns.min()) < T:
        cls.ep2 = ep
        break

  def test_episode_ends_early_somewhere(self):
    self.assertIsNotNone(self.ep2)

  def test_scan_equals_python_adapter(self):
    envs = [envs_lib.JaxEnvAsPython(self.env) for _ in range(G * N)]
    ep = turns_lib.python_rollout(self.fns, self.params, envs, self.env.spec,
                                self.rng, group_size=N)
    assert_trees_equal(self, self.ep, ep, atol=1e-5)
    # Members of a group share their hidden key; the groups differ here.
    keys = [tuple(np.asarray(e.state.key).tolist()) for e in envs]
    self.assertEqual(keys[0], keys[1])
    self.assertEqual(keys[2], keys[3])

  def test_layout_round_trip(self):
    for ep in (self.ep, self.ep2):
      trajs = layouts.turns_to_trajectories(ep.turns, T)
      assert_trees_equal(self, trajs, ep.trajectories)
      turns = layouts.trajectories_to_turns(ep.trajectories, 4, 2)
      assert_trees_equal(self, turns, ep.turns)

  def test_shapes_and_masks(self):
    tb, tr = self.ep2.turns, self.ep2.trajectories
    c = self.env.spec.context_len
    self.assertEqual(tb.prompt.shape, (G * N * T, c))
    self.assertEqual(tb.action.shape, (G * N * T, 4))
    self.assertEqual(tr.tokens.shape, (G * N, c))
    # L2: the loss mask is exactly the action tokens; observations and the
    # initial observation are real tokens without loss.
    np.testing.assert_array_equal(tr.loss_mask > 0, tr.segment_ids >= 0)
    obs_tokens = np.asarray(tr.token_mask & (tr.segment_ids < 0))
    n_turns = np.asarray(tr.num_turns)
    np.testing.assert_array_equal(obs_tokens.sum(1), 1 + 2 * n_turns)
    np.testing.assert_array_equal(np.asarray(tr.loss_mask).sum(1),
                                  4 * n_turns)
    # L1: turns after the end are masked and hold the final context.
    live = np.asarray(tb.turn_mask).reshape(G * N, T)
    np.testing.assert_array_equal(live.sum(1), n_turns)
    am = np.asarray(tb.action_mask).reshape(G * N, T, 4)
    self.assertTrue(np.all(am[~live] == 0) and np.all(am[live] == 1))
    done = np.asarray(tb.done).reshape(G * N, T)
    np.testing.assert_array_equal(done.sum(1), 1)
    # The policy batches: observation tokens never in the loss.
    pb1, pb2 = layouts.policy_batch(tb), layouts.policy_batch(tr)
    er.validate_batch(pb1)
    er.validate_batch(pb2)
    self.assertIsNone(pb2.traj_ids)
    np.testing.assert_array_equal(np.asarray(pb1.mask).sum(),
                                  np.asarray(pb2.mask).sum())
    np.testing.assert_array_equal(
        np.sort(np.asarray(pb1.segment_ids)[np.asarray(pb1.mask) > 0]),
        np.sort(np.asarray(pb2.segment_ids)[np.asarray(pb2.mask) > 0]))
    np.testing.assert_array_equal(pb1.rewards.reshape(G * N, T)[:, 0],
                                  pb2.rewards)

  def test_model_stats_agree_across_layouts_and_sampler(self):
    """The train step's log-probs of the actions: L1 rows (prompt + action)
    = L2 rows (whole episode) = the sampler's (cached decode)."""
    stats = jax.jit(train.sequence_stats, static_argnums=(0, 4))
    out = {}
    for name, data in (("l1", self.ep2.turns),
                       ("l2", self.ep2.trajectories)):
      inp = train.train_inputs(data)
      st = stats(self.fns, self.params, inp.tokens, inp.attn_mask,
                 inp.batch.logp.shape[1])
      m = np.asarray(inp.batch.mask) > 0
      out[name] = (np.asarray(st["logp"])[m], np.asarray(st["entropy"])[m],
                   np.asarray(inp.batch.logp)[m],
                   np.asarray(inp.batch.entropy)[m],
                   np.asarray(inp.batch.segment_ids)[m])
    # Same tokens in the same (trajectory, turn, position) order.
    np.testing.assert_array_equal(out["l1"][4], out["l2"][4])
    for i in range(4):
      np.testing.assert_allclose(out["l1"][i], out["l2"][i], atol=2e-5)
    np.testing.assert_allclose(out["l2"][0], out["l2"][2], atol=2e-5)
    np.testing.assert_allclose(out["l2"][1], out["l2"][3], atol=2e-5)

  def test_train_step_both_layouts(self):
    opt = optax.adam(1e-2)
    tr = er.chain(train.episode_advantages())
    obj = er.ppo_clip(0.2)
    # Distinct returns within each group: non-zero advantages.
    trajs = self.ep2.trajectories._replace(
        returns=jnp.array([0.0, 10.0, 10.0, 0.0]))
    turns = layouts.trajectories_to_turns(trajs, 4, 2)
    for name, data, kw in (("l1", turns, {}), ("l2", trajs, {}),
                           ("l2-multi", trajs,
                            dict(epochs=2, minibatches=2))):
      step = jax.jit(train.make_agent_train_step(self.fns, obj, tr, opt,
                                                 **kw))
      state = init_train_state(self.params, opt, tr, rng=0)
      state2, m = step(state, train.train_inputs(data))
      self.assertTrue(np.isfinite(float(m["loss"])), name)
      self.assertEqual(int(state2.step), 1)
      self.assertEqual(float(m["skipped_steps"]), 0.0)
      moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()),
                           state2.params, state.params)
      self.assertGreater(max(jax.tree.leaves(moved)), 0.0, name)


class EpisodeAdvantageTest(absltest.TestCase):

  def test_hand_values_count_each_trajectory_once(self):
    # One group of 4 trajectories with 3, 1, 2, 1 turn rows (L1).
    returns = jnp.array([10.0] * 3 + [0.0] + [0.0] * 2 + [0.0])
    traj = jnp.array([0, 0, 0, 1, 2, 2, 3])
    a = train.episode_grpo(returns, jnp.zeros(7, jnp.int32), traj)
    # mean 2.5, unbiased std 5 -> (1.5, −0.5, −0.5, −0.5) per trajectory.
    np.testing.assert_allclose(a, [1.5] * 3 + [-0.5] * 4, atol=1e-5)
    # Without dedup (each row a trajectory) the numbers differ.
    b = train.episode_grpo(returns, jnp.zeros(7, jnp.int32))
    self.assertGreater(float(jnp.abs(a - b).max()), 0.1)

  def test_l2_equals_core_grpo(self):
    r = jnp.array([1.0, 0.0, 3.0, 3.0, 2.0, 0.0])
    g = jnp.array([0, 0, 1, 1, 2, 2])
    np.testing.assert_allclose(train.episode_grpo(r, g),
                               adv_lib.grpo(r, g), atol=1e-6)
    np.testing.assert_allclose(
        train.episode_grpo(r, g, normalize_std=False),
        adv_lib.grpo(r, g, normalize_std=False), atol=1e-6)
    # Constant group: exactly 0; singleton: A = R.
    a = train.episode_grpo(jnp.array([0.3, 0.3, 7.0]), jnp.array([0, 0, 1]))
    np.testing.assert_array_equal(a, [0.0, 0.0, 7.0])


if __name__ == "__main__":
  absltest.main()
