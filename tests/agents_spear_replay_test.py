"""SPEAR's self-imitation replay (spec A4) in the agent training loop:
admission, baseline history, the replay pass, the mixed batch and the
runner (token game, tiny decoder)."""

import math
import os
import tempfile

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

import entropy_rl as er

from entropy_rl.agents import _spear as spear
from entropy_rl.agents import _train as train
from entropy_rl.agents import _layouts as layouts
from tests import agents_configs_test as configs_test

# Compiles whole rollouts / iterations: XLA with most optimisations off
# (tests/conftest.py).
UNOPTIMISED_COMPILES = True


def fake_trajs(returns, group_ids, c=4, t=2):
  """L2 rows with 2 action tokens each (slots 2, 3) after 2 obs tokens."""
  r = len(returns)
  tok = jnp.tile(jnp.array([[1, 5, 6, 7]]), (r, 1))[:, :c]
  seg = jnp.tile(jnp.array([[-1, -1, 0, 0]]), (r, 1))
  return layouts.TrajBatch(
      tokens=tok, token_mask=jnp.ones((r, c), bool),
      loss_mask=(seg >= 0).astype(jnp.float32), segment_ids=seg,
      logp=jnp.zeros((r, c)), entropy=jnp.zeros((r, c)),
      turn_rewards=jnp.zeros((r, t)), num_turns=jnp.ones((r,), jnp.int32),
      returns=jnp.asarray(returns, jnp.float32),
      group_ids=jnp.asarray(group_ids, jnp.int32),
      aux={"success": jnp.zeros((r,))})


class ReplayStateTest(absltest.TestCase):

  def test_admit_replay_pass_and_clear(self):
    cfg = spear.ReplayConfig(buffer_size=2, baseline_size=8)
    st = spear.init_replay_state(cfg, jnp.zeros((), jnp.float32))
    self.assertEqual(st.buffer.valid.shape, (4,))  # ring of 2·buffer_size
    # Step 3: advantages > 0 on rows 0, 2, 3 (row 4 is not a trajectory).
    rew = jnp.array([1.0, 0.0, 3.0, 2.0, 0.0])
    st = spear.admit(st, rew, rew, jnp.array([0.5, -1.0, 1.0, 0.2, 7.0]),
                     jnp.array([0, 0, 1, 1, 1]), 3, cfg,
                     valid=jnp.array([1, 1, 1, 1, 0]))
    np.testing.assert_array_equal(st.buffer.valid, [1, 1, 1, 0])
    np.testing.assert_array_equal(st.buffer.rewards[:3], [1.0, 3.0, 2.0])
    # Group means (1+0)/2 and (3+2)/2, population stds 0.5 and 0.5.
    np.testing.assert_allclose(st.group_means[:2], [0.5, 2.5])
    np.testing.assert_allclose(st.group_stds[:2], [0.5, 0.5])
    np.testing.assert_array_equal(st.group_valid.sum(), 2)
    # 3 rows is not > 1.5·2: no replay, the buffer stays.
    st2, rep = spear.replay_pass(st, jax.random.key(0), cfg)
    np.testing.assert_array_equal(rep.ok, [False, False])
    np.testing.assert_array_equal(st2.buffer.valid, st.buffer.valid)
    # Step 4: one more positive row (reward 4, group mean 2).
    st = spear.admit(st, jnp.array([4.0, 0.0]), jnp.array([4.0, 0.0]),
                     jnp.array([1.0, -1.0]), jnp.array([0, 0]), 4, cfg)
    np.testing.assert_array_equal(st.buffer.rewards, [1.0, 3.0, 2.0, 4.0])
    st, rep = spear.replay_pass(st, jax.random.key(0), cfg)
    # μ₅₀ of {0.5, 2.5, 2.0} = 2: A = R − 2 = (−1, 1, 0, 2); three rows
    # have A ≥ 0, the largest power of two ≤ 3 is 2.
    np.testing.assert_array_equal(rep.ok, [True, True])
    rows = np.asarray(rep.rows)
    self.assertTrue(set(rows.tolist()) <= {3.0, 2.0, 4.0})
    self.assertLen(set(rows.tolist()), 2)
    np.testing.assert_allclose(rep.advantages, rows - 2.0)
    np.testing.assert_array_equal(st.buffer.valid, False)  # one pass

  def test_expiry_of_old_rows(self):
    cfg = spear.ReplayConfig(buffer_size=2, tolerate_steps=5)
    st = spear.init_replay_state(cfg, jnp.zeros((), jnp.float32))
    st = spear.admit(st, jnp.ones(2), jnp.ones(2), jnp.ones(2),
                     jnp.zeros(2, jnp.int32), 1, cfg)
    st = spear.admit(st, jnp.ones(1), jnp.ones(1), jnp.ones(1),
                     jnp.zeros(1, jnp.int32), 6, cfg)
    self.assertEqual(int(st.buffer.valid.sum()), 3)  # 6 − 1 ≤ 5
    st = spear.admit(st, jnp.ones(1), jnp.ones(1), -jnp.ones(1),
                     jnp.zeros(1, jnp.int32), 7, cfg)
    np.testing.assert_array_equal(st.buffer.valid, [0, 0, 1, 0])


class MixReplayTest(absltest.TestCase):

  def test_replayed_rows_advantage_and_weight(self):
    on = train.train_inputs(fake_trajs([1.0, 3.0], [0, 0]))
    rep = train.train_inputs(fake_trajs([5.0, 6.0], [7, 7]))
    w = float(spear.replay_weight(50, 200))  # 0.14645
    mixed = train.mix_replay(on, rep, jnp.array([1.5, 9.0]),
                             jnp.array([True, False]), w)
    pb = mixed.batch
    self.assertEqual(mixed.tokens.shape, (4, 4))
    np.testing.assert_array_equal(pb.aux["is_replay"], [0, 0, 1, 0])
    np.testing.assert_array_equal(pb.aux["replay_advantage"], [0, 0, 1.5, 0])
    np.testing.assert_array_equal(pb.aux["valid"], [1, 1, 0, 0])
    np.testing.assert_allclose(pb.aux["replay_weight"], [0, 0, w, w],
                               rtol=1e-6)
    np.testing.assert_array_equal(pb.aux["replay_slot"], [0, 0, 1, 1])
    np.testing.assert_array_equal(pb.weights, 1.0)
    np.testing.assert_array_equal(pb.mask.sum(1), [2, 2, 2, 0])
    chain = er.chain(train.episode_advantages(), spear.replay_advantages())
    out, _, _ = er.prepare_batch(pb, chain, chain.init(None), rng=None,
                                 step=0)
    # On-policy group (1, 3): ∓1/(√2 + 1e-6); the replayed row keeps
    # A_replay = 1.5 (not in the group statistics); padding row 0.
    s = 1.0 / (math.sqrt(2.0) + 1e-6)
    np.testing.assert_allclose(out.advantages[:, 2:].sum(1) / 2,
                               [-s, s, 1.5, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(out.advantages[:, :2], 0.0)


def _inputs(mask, logp, rewards=None, group_ids=None):
  """AgentInputs over a hand-made [B, T] policy batch (ratio 1: logp =
  old_logp); the model-input fields are placeholders."""
  mask = jnp.asarray(mask, jnp.float32)
  logp = jnp.asarray(logp, jnp.float32)
  b, t = mask.shape
  pb = er.PolicyBatch(
      logp=logp, old_logp=logp, advantages=jnp.zeros((b, t)), mask=mask,
      rewards=None if rewards is None else jnp.asarray(rewards, jnp.float32),
      group_ids=None if group_ids is None else jnp.asarray(group_ids,
                                                           jnp.int32))
  return train.AgentInputs(jnp.zeros((b, t), jnp.int32),
                           jnp.ones((b, t), bool), pb)


class ReplayLossTest(absltest.TestCase):
  """The SPEAR loss is L_on + w·L_replay, each aggregated over its own
  rows' tokens, with Clip-Cov's replay settings on replayed rows (spec A4
  (c) 2-3; ``dp_actor.py`` runs the replay batch as its own loss)."""

  # On-policy: one group, rewards (1, 0) -> A = ±0.5/(0.70711 + 1e-6);
  # 3 and 1 action tokens. Replayed: A_replay = 2 (4 tokens), 0.5
  # (2 tokens) and a padding slot (ok False). Ratio 1 everywhere, so a
  # token's PPO loss is −A.
  ON_MASK = [[1, 1, 1, 0], [1, 0, 0, 0]]
  REP_MASK = [[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 1]]
  W = 0.3

  def mixed(self, rep_logp):
    on = _inputs(self.ON_MASK, -jnp.ones((2, 4)), [1.0, 0.0], [0, 0])
    rep = _inputs(self.REP_MASK, rep_logp, [0.0, 0.0, 0.0], [5, 5, 5])
    return train.mix_replay(on, rep, jnp.array([2.0, 0.5, 7.0]),
                            jnp.array([True, True, False]), self.W)

  def loss(self, regularizers, rep_logp):
    from entropy_rl import agent_builders
    t = agent_builders.build_transform(regularizers, replay=True)
    pb = self.mixed(rep_logp).batch
    pb, s, _ = er.prepare_batch(pb, t, t.init(None), rng=jax.random.key(1))
    loss, (_, m) = er.policy_loss(pb, t, s, objective=er.ppo_clip(
        0.2, 0.28, agg="token-mean"), rng=jax.random.key(2))
    return float(loss), m

  def test_loss_is_on_policy_plus_weighted_replay_token_means(self):
    import ml_collections
    regs = ml_collections.ConfigDict(dict(
        order=("advantages",), advantages=dict(kind="episode_advantages")))
    loss, _ = self.loss(regs, -jnp.ones((3, 4)))
    a = 0.5 / (math.sqrt(0.5) + 1e-6)  # 0.70711
    l_on = -(3 * a - 1 * a) / 4  # −0.35355
    l_rep = -(4 * 2.0 + 2 * 0.5) / 6  # −1.5
    np.testing.assert_allclose(loss, l_on + self.W * l_rep, rtol=1e-5)
    np.testing.assert_allclose(loss, -0.803553, rtol=1e-5)
    # The old pooled token-mean (w folded into the weights) is −0.411421.
    pooled = (-(3 * a - a) + self.W * -(4 * 2.0 + 2 * 0.5)) / 10
    self.assertGreater(abs(loss - pooled), 0.3)

  def test_replayed_rows_use_replay_clip_cov_settings(self):
    # The config's Clip-Cov member: on-policy (2e-4, 1, 5), replay
    # (0.02, 2, 60). On-policy logp are equal: covariance 0, nothing
    # eligible. Replayed rows (statistics over their own 6 tokens):
    # Ā = (4·2 + 2·0.5)/6 = 1.5; logp −1 except row 1 token 0 (−10), so
    # ℓ̄ = −2.5 and c = (A − Ā)(ℓ − ℓ̄): row 0: 0.5·1.5 = 0.75, row 1:
    # −1·(−7.5) = 7.5 and −1·1.5 = −1.5. Only c = 7.5 lies in (2, 60) (and
    # outside the on-policy (1, 5)); n = max(1, ⌊0.02·6⌋) = 1: that token
    # is detached and keeps its place in the denominator.
    from experiments.configs import agent_spear
    regs = agent_spear.get_config("tiny").regularizers
    regs.order = ("advantages", "clip_cov")
    rep_logp = jnp.full((3, 4), -1.0).at[1, 0].set(-10.0)
    loss, m = self.loss(regs, rep_logp)
    a = 0.5 / (math.sqrt(0.5) + 1e-6)
    l_on = -(3 * a - 1 * a) / 4
    l_rep = -(4 * 2.0 + 1 * 0.5 + 0.0) / 6  # −1.41667
    np.testing.assert_allclose(loss, l_on + self.W * l_rep, rtol=1e-5)
    np.testing.assert_allclose(m["clip_cov/clip_cov_frac_replay"], 1 / 6,
                               rtol=1e-6)
    np.testing.assert_allclose(m["clip_cov/clip_cov_frac"], 0.0, atol=0)


class ReplayRunnerTest(absltest.TestCase):

  def run_spear(self, d, steps, **overrides):
    config = configs_test.tiny("spear", **overrides)
    config.num_seeds = 1
    return configs_test.run_config(config, d, num_steps=steps)

  def test_replay_runs_and_disabled_equals_plain(self):
    # Clip-Cov made the identity (no eligible token) so that the only
    # difference between the runs is the replay.
    common = {"regularizers.clip_cov.cov_low": 1e9,
              "regularizers.clip_cov.cov_high": 2e9,
              "train.epochs": 1, "train.minibatches": 1}
    with tempfile.TemporaryDirectory() as d:
      _, plain = self.run_spear(os.path.join(d, "a"), 2,
                                **{"replay.enabled": False}, **common)
      # Enabled but never triggered: K = 2 masked rows appended.
      _, idle = self.run_spear(os.path.join(d, "b"), 2,
                               **{"replay.buffer_size": 2,
                                  "replay.trigger": 1e9}, **common)
      # Triggered as soon as the buffer holds a row; T_r = 4.
      _, live = self.run_spear(os.path.join(d, "c"), 3,
                               **{"replay.buffer_size": 2,
                                  "replay.trigger": 0.0,
                                  "replay.total_steps": 4})
    self.assertNotIn("replayed_rows", plain[0])
    for a, b in zip(plain, idle):
      self.assertEqual(b["replayed_rows"], 0.0)
      for k in ("loss", "success", "action_entropy", "episode_return",
                "grad_norm"):
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-7,
                                   err_msg=k)
    # w(t) = (1 − cos(πt/4))/2 at t = 0, 1, 2.
    np.testing.assert_allclose([r["replay_weight"] for r in live],
                               [0.0, (1 - math.cos(math.pi / 4)) / 2, 0.5],
                               atol=1e-6)
    for prev, r in zip(live, live[1:]):
      self.assertIn(r["replayed_rows"], (0.0, 1.0, 2.0))
      self.assertLessEqual(r["replayed_rows"], prev["replay_buffer_rows"])
      self.assertTrue(np.isfinite(r["loss"]))
    self.assertEqual(live[0]["replayed_rows"], 0.0)  # empty buffer at t=0


if __name__ == "__main__":
  absltest.main()
