"""AEPO's entropy-balanced branching inside the on-device agent rollout.

A scripted environment (reward 1 per turn, an episode ends after a fixed
number of its own turns) makes branch and fresh-sample schedules
hand-computable; the token game checks equality with the plain rollout.
"""

import importlib

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from entropy_rl.models import as_functions
from entropy_rl.models import Decoder
from entropy_rl.models import DecoderConfig

env_lib = importlib.import_module("entropy_rl.agents.env")
branching = importlib.import_module("entropy_rl.agents.branching")
game = importlib.import_module("entropy_rl.agents.token_game")
train = importlib.import_module("entropy_rl.agents.train")
layouts = importlib.import_module("entropy_rl.agents.layouts")

CFG = DecoderConfig(vocab_size=16, hidden_size=16, num_layers=1, num_heads=2,
                    num_kv_heads=2, intermediate_size=32)
EXTRA = ("valid", "branch_turn", "branch_source", "fresh")


def scripted_env(max_turns: int, end_after: int) -> env_lib.AgentEnv:
  """Reward 1 every turn; done after ``end_after`` own turns."""
  spec = env_lib.EnvSpec(action_len=3, obs_len=2, init_obs_len=1,
                         max_turns=max_turns, vocab_size=16)

  def reset(rng):
    del rng
    return jnp.zeros((), jnp.int32), jnp.ones((1,), jnp.int32)

  def step(state, action, rng):
    del action, rng
    n = state + 1
    obs = jnp.stack([2 + n % 8, jnp.int32(12)]).astype(jnp.int32)
    return n, obs, jnp.float32(1.0), n >= end_after

  return env_lib.AgentEnv(reset, step, spec,
                          lambda s: {"turns": s.astype(jnp.float32)})


class BranchingRolloutTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.fns, cls.params = as_functions(Decoder(CFG, rngs=nnx.Rngs(0)))

  def roll(self, env, cfg, key, groups, size):
    f = jax.jit(lambda p, k: env_lib.rollout(
        self.fns, p, env, k, num_groups=groups, group_size=size,
        branching=cfg))
    return f(self.params, jax.random.PRNGKey(key))

  def test_no_budget_equals_plain_rollout(self):
    env = game.token_game(num_slots=1, num_values=4, max_turns=4,
                          p_true=0.5)
    plain = jax.jit(lambda p, k: env_lib.rollout(
        self.fns, p, env, k, num_groups=2, group_size=2))(
            self.params, jax.random.PRNGKey(5))
    ep = self.roll(env, branching.BranchingConfig(2, tau=1.0), 5, 2, 2)
    np.testing.assert_array_equal(ep.trajectories.aux["valid"], 1.0)
    np.testing.assert_array_equal(ep.trajectories.aux["branch_turn"], -1.0)
    strip = lambda e: e._replace(
        turns=e.turns._replace(aux={k: v for k, v in e.turns.aux.items()
                                    if k not in EXTRA}),
        trajectories=e.trajectories._replace(aux={
            k: v for k, v in e.trajectories.aux.items() if k not in EXTRA}))
    la = jax.tree_util.tree_leaves_with_path(strip(ep))
    lb = jax.tree.leaves(plain)
    self.assertEqual(len(la), len(lb))
    for (path, a), b in zip(la, lb):
      np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))

  def test_branch_schedule_penalty_and_shared_prefix(self):
    # τ = 1, w = 0: P = penalty^l; penalty 0 forbids branching twice in a
    # row. Group of 4, m = 1, T = 4, never done:
    #   turn 1: row 0 (l=0) branches into slot 1 (both get l=1);
    #   turn 2: rows 0, 1 have l=1 -> P=0, no branch, l reset to 0;
    #   turn 3: rows 0, 1 branch into slots 2, 3.
    env = scripted_env(max_turns=4, end_after=99)
    cfg = branching.BranchingConfig(1, tau=1.0, weight=0.0, penalty=0.0)
    ep = self.roll(env, cfg, 3, 2, 4)
    tr, tb = ep.trajectories, ep.turns
    np.testing.assert_array_equal(tr.aux["branch_turn"],
                                  [-1, 1, 3, 3] * 2)
    np.testing.assert_array_equal(tr.aux["branch_source"],
                                  [-1, 0, 0, 1, -1, 4, 4, 5])
    np.testing.assert_array_equal(tr.aux["valid"], 1.0)
    np.testing.assert_array_equal(tr.num_turns, 4)
    np.testing.assert_array_equal(tr.returns, 4.0)  # copied rewards too
    np.testing.assert_array_equal(tr.group_ids, [0, 0, 0, 0, 1, 1, 1, 1])
    # The branch shares the source's turns before the branch point, and
    # re-samples the branch turn with its own key stream.
    act = np.asarray(tb.action).reshape(8, 4, 3)
    prompt = np.asarray(tb.prompt).reshape(8, 4, -1)
    for row, src, bt in ((1, 0, 1), (2, 0, 3), (3, 1, 3), (6, 4, 3)):
      np.testing.assert_array_equal(act[row, :bt], act[src, :bt])
      np.testing.assert_array_equal(prompt[row, :bt + 1],
                                    prompt[src, :bt + 1])
      self.assertFalse(np.array_equal(act[row, bt], act[src, bt]))
    # Observation tokens are never in the loss; segment ids are turns.
    np.testing.assert_array_equal(tr.loss_mask > 0, tr.segment_ids >= 0)
    np.testing.assert_array_equal(np.asarray(tr.token_mask).sum(1),
                                  1 + 4 * (3 + 2))
    np.testing.assert_array_equal(np.asarray(tr.loss_mask).sum(1), 4 * 3)
    seg = np.asarray(tr.segment_ids)
    for row in range(8):
      np.testing.assert_array_equal(np.unique(seg[row][seg[row] >= 0]),
                                    [0, 1, 2, 3])
    # L1 rows: one trajectory per row, its group kept.
    np.testing.assert_array_equal(tb.traj_ids, np.repeat(np.arange(8), 4))
    np.testing.assert_array_equal(tb.group_ids, np.repeat([0, 1], 16))
    # The layouts stay exact inverses.
    back = layouts.turns_to_trajectories(tb, 4)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(tr)):
      np.testing.assert_array_equal(a, b)

  def test_fresh_samples_and_unused_budget(self):
    # Episodes end after 2 own turns; τ = 0, w = 0: never branch. Group of
    # 3, m = 1, T = 5: row 0 plays turns 0-1; turn 2 has no live rollout,
    # slot 1 starts fresh (turns 2-3); slot 2 starts at turn 4 and is cut
    # by the last turn.
    env = scripted_env(max_turns=5, end_after=2)
    cfg = branching.BranchingConfig(1, tau=0.0, weight=0.0)
    ep = self.roll(env, cfg, 0, 1, 3)
    tr = ep.trajectories
    np.testing.assert_array_equal(tr.num_turns, [2, 2, 1])
    np.testing.assert_array_equal(tr.aux["fresh"], [0, 1, 1])
    np.testing.assert_array_equal(tr.aux["branch_turn"], -1)
    np.testing.assert_array_equal(tr.returns, [2.0, 2.0, 1.0])
    np.testing.assert_array_equal(tr.aux["turns"], [2.0, 2.0, 1.0])
    seg = np.asarray(tr.segment_ids)
    np.testing.assert_array_equal(np.unique(seg[1][seg[1] >= 0]), [0, 1])
    # Without fresh samples the budget stays unused: empty, invalid rows
    # holding only the task, out of the group statistics.
    ep = self.roll(env, cfg._replace(fresh=False), 0, 1, 3)
    tr = ep.trajectories
    np.testing.assert_array_equal(tr.num_turns, [2, 0, 0])
    np.testing.assert_array_equal(tr.aux["valid"], [1, 0, 0])
    np.testing.assert_array_equal(np.asarray(tr.token_mask).sum(1),
                                  [1 + 2 * 5, 1, 1])
    np.testing.assert_array_equal(np.asarray(tr.loss_mask).sum(1), [6, 0, 0])
    pb = layouts.policy_batch(tr)
    t = train.episode_advantages()
    out, _ = t.prepare(pb, (), rng=None, step=0)
    # One valid trajectory: a singleton group, A = R = 2 on its tokens.
    np.testing.assert_allclose(np.asarray(out.advantages).sum(1),
                               [2.0 * 6, 0.0, 0.0])

  def test_deterministic_and_within_budget(self):
    env = game.token_game(num_slots=1, num_values=4, max_turns=5,
                          p_true=0.5, command_mod=4)
    cfg = branching.BranchingConfig(2, tau=0.5, weight=0.2, penalty=0.5)
    a = self.roll(env, cfg, 7, 3, 4)
    b = self.roll(env, cfg, 7, 3, 4)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_array_equal(x, y)
    aux = {k: np.asarray(v).reshape(3, 4)
           for k, v in a.trajectories.aux.items()}
    started = (aux["branch_turn"] >= 0) | (aux["fresh"] > 0)
    self.assertTrue(np.all(started.sum(1) <= 4 - 2))
    self.assertTrue(np.all(started[:, :2] == 0))  # slots 0-1 are global
    np.testing.assert_array_equal(aux["valid"][:, :2], 1)
    np.testing.assert_array_equal(aux["valid"] > 0,
                                  started | (np.arange(4) < 2))
    self.assertGreater(int((aux["branch_turn"] >= 0).sum()), 0)
    # Sources are in the branch's group.
    src = aux["branch_source"].reshape(-1)
    rows = np.arange(12)
    has = src >= 0
    np.testing.assert_array_equal(src[has] // 4, rows[has] // 4)


class EpisodeGrpoValidTest(absltest.TestCase):

  def test_invalid_rows_left_out(self):
    # Valid returns (1, 3): mean 2, unbiased std √2.
    a = train.episode_grpo(jnp.array([1.0, 3.0, 0.0, 0.0]),
                           jnp.zeros(4, jnp.int32),
                           valid=jnp.array([1.0, 1.0, 0.0, 0.0]))
    s = 1.0 / (np.sqrt(2.0) + 1e-6)
    np.testing.assert_allclose(a, [-s, s, 0.0, 0.0], rtol=1e-6)


if __name__ == "__main__":
  absltest.main()
