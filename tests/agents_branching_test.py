"""AEPO's entropy-balanced branching inside the on-device agent rollout.

A scripted environment (reward 1 per turn, an episode ends after a fixed
number of its own turns) makes branch and fresh-sample schedules
hand-computable; the token game checks equality with the plain rollout.
"""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from entropy_rl.models import as_functions
from entropy_rl.models import Decoder
from entropy_rl.models import DecoderConfig

from entropy_rl.agents import _branching as branching
from entropy_rl.agents import _envs as envs_lib
from entropy_rl.agents import _rollout as rollout_lib
from entropy_rl.agents import _turns as turns_lib
from entropy_rl.agents import _token_game as game
from entropy_rl.agents import _train as train
from entropy_rl.agents import _layouts as layouts

# Compiles whole rollouts / iterations: XLA with most optimisations off
# (tests/conftest.py).
UNOPTIMISED_COMPILES = True

CFG = DecoderConfig(vocab_size=16, hidden_size=16, num_layers=1, num_heads=2,
                    num_kv_heads=2, intermediate_size=32)
EXTRA = ("valid", "branch_turn", "branch_source", "fresh", "global_samples")
PRE_STREAM = 0x9E4D  # branching._PRE_STREAM


def strip_aux(ep, keys):
  """Episodes without the given aux entries (both layouts)."""
  drop = lambda aux: {k: v for k, v in aux.items() if k not in keys}
  return ep._replace(
      turns=ep.turns._replace(aux=drop(ep.turns.aux)),
      trajectories=ep.trajectories._replace(aux=drop(ep.trajectories.aux)))


def assert_trees_equal(a, b):
  la = jax.tree_util.tree_leaves_with_path(a)
  lb = jax.tree.leaves(b)
  assert len(la) == len(lb), (len(la), len(lb))
  for (path, x), y in zip(la, lb):
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


def scripted_env(max_turns: int, end_after: int) -> envs_lib.AgentEnv:
  """Reward 1 every turn; done after ``end_after`` own turns."""
  spec = envs_lib.EnvSpec(action_len=3, obs_len=2, init_obs_len=1,
                          max_turns=max_turns, vocab_size=16)

  def reset(rng):
    del rng
    return jnp.zeros((), jnp.int32), jnp.ones((1,), jnp.int32)

  def step(state, action, rng):
    del action, rng
    n = state + 1
    obs = jnp.stack([2 + n % 8, jnp.int32(12)]).astype(jnp.int32)
    return n, obs, jnp.float32(1.0), n >= end_after

  return envs_lib.AgentEnv(reset, step, spec,
                           lambda s: {"turns": s.astype(jnp.float32)})


class BranchingRolloutTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.fns, cls.params = as_functions(Decoder(CFG, rngs=nnx.Rngs(0)))

  def roll(self, env, cfg, key, groups, size):
    f = jax.jit(lambda p, k: rollout_lib.rollout(
        self.fns, p, env, k, num_groups=groups, group_size=size,
        branching=cfg))
    return f(self.params, jax.random.PRNGKey(key))

  def test_no_budget_equals_plain_rollout(self):
    env = game.token_game(num_slots=1, num_values=4, max_turns=4,
                          p_true=0.5)
    plain = jax.jit(lambda p, k: turns_lib.plain_rollout(
        self.fns, p, env, k, num_groups=2, group_size=2))(
            self.params, jax.random.PRNGKey(5))
    ep = self.roll(env, branching.BranchingConfig(2, tau=1.0,
                                                  pre_monitor=False),
                   5, 2, 2)
    np.testing.assert_array_equal(ep.trajectories.aux["valid"], 1.0)
    np.testing.assert_array_equal(ep.trajectories.aux["branch_turn"], -1.0)
    np.testing.assert_array_equal(ep.trajectories.aux["global_samples"], 2.0)
    assert_trees_equal(strip_aux(ep, EXTRA), plain)

  def test_branch_schedule_penalty_and_shared_prefix(self):
    # τ = 1, w = 0: P = penalty^l; penalty 0 forbids branching twice in a
    # row. Group of 4, m = 1, T = 4, never done:
    #   turn 1: row 0 (l=0) branches into slot 1 (both get l=1);
    #   turn 2: rows 0, 1 have l=1 -> P=0, no branch, l reset to 0;
    #   turn 3: rows 0, 1 branch into slots 2, 3.
    env = scripted_env(max_turns=4, end_after=99)
    cfg = branching.BranchingConfig(1, tau=1.0, weight=0.0, penalty=0.0,
                                    pre_monitor=False)
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
    cfg = branching.BranchingConfig(1, tau=0.0, weight=0.0,
                                    pre_monitor=False)
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
    cfg = branching.BranchingConfig(2, tau=0.5, weight=0.2, penalty=0.5,
                                    pre_monitor=False)
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


class PreMonitorTest(absltest.TestCase):
  """AEPO's entropy pre-monitoring: a dynamic m per group (spec A3)."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.fns, cls.params = as_functions(Decoder(CFG, rngs=nnx.Rngs(0)))

  def roll(self, env, cfg, key, groups, size, pre=None):
    f = jax.jit(lambda p, k, pre: branching.branching_rollout(
        self.fns, p, env, k, num_groups=groups, group_size=size,
        branching=cfg, pre_entropies=pre))
    return f(self.params, jax.random.PRNGKey(key), pre)

  def test_budget_hand_values(self):
    # Spec A3 (f) 4: k = 16, β = 1: equal entropies -> 8; a gap of 2 ->
    # 16·σ(2) = 14.09 -> 14. β = 0.5, gap 2: 16·σ(1) = 11.70 -> 12; gap
    # −10: 16·σ(−5) = 0.11 -> 0, clipped to 1. No tool turn: the static m.
    cfg = branching.BranchingConfig(3)
    m = branching.pre_monitor_budget(
        jnp.array([1.0, 3.0, 0.0, 2.0]), jnp.array([1.0, 1.0, 10.0, 1.0]),
        jnp.array([4, 1, 2, 0]), group_size=16, cfg=cfg)
    np.testing.assert_array_equal(m, [8, 14, 1, 3])
    m = branching.pre_monitor_budget(jnp.array(3.0), jnp.array(1.0),
                                     jnp.array(2), group_size=16,
                                     cfg=cfg._replace(beta=0.5))
    self.assertEqual(int(m), 12)
    self.assertEqual(int(m), round(16 / (1 + np.exp(-1.0))))
    with self.assertRaisesRegex(ValueError, "beta"):
      branching.check_config(cfg._replace(beta=float("nan")), 4)

  def test_dynamic_m_equals_static_m(self):
    env = game.token_game(num_slots=1, num_values=4, max_turns=4,
                          p_true=0.5, command_mod=4)
    cfg = branching.BranchingConfig(1, tau=0.5, weight=0.2, penalty=0.5)
    static = lambda m: self.roll(env, cfg._replace(
        initial_rollouts=m, pre_monitor=False), 7, 2, 4)
    # Hand-set equal entropies: m = round(4·σ(0)) = 2 in every group.
    dyn = self.roll(env, cfg, 7, 2, 4, pre=(jnp.float32(0.7),
                                            jnp.float32(0.7)))
    np.testing.assert_array_equal(dyn.trajectories.aux["global_samples"], 2)
    np.testing.assert_allclose(dyn.trajectories.aux["h_root"], 0.7)
    assert_trees_equal(strip_aux(dyn, ("h_root", "h_tool")), static(2))
    # Measured by the pre-rollout (one group): its m, used statically,
    # gives the same rollout (the pre-rollout has its own keys).
    meas = self.roll(env, cfg, 11, 1, 4)
    aux = meas.trajectories.aux
    m = int(aux["global_samples"][0])
    np.testing.assert_array_equal(aux["global_samples"], m)
    self.assertTrue(np.all(np.isfinite(aux["h_root"])))
    ref = self.roll(env, cfg._replace(initial_rollouts=m, pre_monitor=False),
                    11, 1, 4)
    assert_trees_equal(strip_aux(meas, ("h_root", "h_tool")), ref)

  def test_measured_entropies(self):
    # The pre-rollout's two turns are the plain rollout's with the key
    # fold_in(rng, tag) (the scripted env ignores its reset key, so the
    # tasks agree): H_root = group mean of turn-0 chunk entropies, H̄_tool
    # = group mean of turn-1's, m = round(k·σ(β(H_root − H̄_tool))).
    cfg = branching.BranchingConfig(1, beta=3.0)
    env = scripted_env(max_turns=3, end_after=99)
    ep = self.roll(env, cfg, 4, 2, 4)
    plain = jax.jit(lambda p, k: turns_lib.plain_rollout(
        self.fns, p, env, k, num_groups=2, group_size=4))(
            self.params, jax.random.fold_in(jax.random.PRNGKey(4),
                                            PRE_STREAM))
    tb = plain.turns
    ent = np.asarray(tb.entropy).reshape(8, 3, -1)
    mask = np.asarray(tb.action_mask).reshape(8, 3, -1)
    h = [np.asarray(branching.turn_entropy(jnp.asarray(ent[:, t]),
                                           jnp.asarray(mask[:, t]), 20, 16))
         for t in (0, 1)]
    h_root, h_tool = (x.reshape(2, 4).mean(1) for x in h)
    aux = {k: np.asarray(v).reshape(2, 4)
           for k, v in ep.trajectories.aux.items()}
    np.testing.assert_allclose(aux["h_root"][:, 0], h_root, rtol=1e-5)
    np.testing.assert_allclose(aux["h_tool"][:, 0], h_tool, rtol=1e-5)
    m = np.clip(np.round(4 / (1 + np.exp(-3.0 * (h_root - h_tool)))), 1, 4)
    np.testing.assert_array_equal(aux["global_samples"][:, 0], m)
    # Episodes that end at their first turn give no tool entropy: the
    # static initial_rollouts.
    ep = self.roll(scripted_env(max_turns=3, end_after=1), cfg, 4, 2, 4)
    aux = ep.trajectories.aux
    np.testing.assert_array_equal(aux["global_samples"], 1)
    self.assertTrue(np.all(np.isnan(aux["h_tool"])))

  def test_entropies_set_initial_and_branched_rows_one_trace(self):
    # τ = 1, w = 0, penalty 1: every source branches while budget is free.
    # k = 4, T = 4, never done. H_root − H̄_tool = −2: m = round(4σ(−2)) =
    # round(0.48) -> 1; +1: round(4σ(1)) = round(2.92) = 3.
    #   m = 1: turn 1 row 0 -> slot 1; turn 2 rows 0, 1 -> slots 2, 3.
    #   m = 3: turn 1 row 0 -> slot 3.
    env = scripted_env(max_turns=4, end_after=99)
    cfg = branching.BranchingConfig(2, tau=1.0, weight=0.0, penalty=1.0)
    traces = []

    def fn(p, k, h_root, h_tool):
      traces.append(1)
      return branching.branching_rollout(
          self.fns, p, env, k, num_groups=2, group_size=4, branching=cfg,
          pre_entropies=(h_root, h_tool)).trajectories.aux

    f = jax.jit(fn)
    key = jax.random.PRNGKey(1)
    want = {1: [-1, 1, 2, 2], 3: [-1, -1, -1, 1]}
    for d in ([-2.0, 1.0], [1.0, -2.0], [0.0, 0.0]):
      aux = {k: np.asarray(v).reshape(2, 4) for k, v in
             f(self.params, key, jnp.array(d) + 0.5,
               jnp.full((2,), 0.5)).items()}
      m = [1 if x < 0 else 3 if x > 0 else 2 for x in d]
      np.testing.assert_array_equal(aux["global_samples"][:, 0], m)
      np.testing.assert_array_equal((aux["branch_turn"] < 0).sum(1), m)
      np.testing.assert_array_equal((aux["branch_turn"] >= 0).sum(1),
                                    [4 - x for x in m])
      np.testing.assert_array_equal(aux["valid"], 1)
      np.testing.assert_array_equal(aux["fresh"], 0)
      for g, x in enumerate(m):
        if x in want:
          np.testing.assert_array_equal(aux["branch_turn"][g], want[x])
    self.assertLen(traces, 1)  # one trace for every m


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
