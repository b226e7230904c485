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
    np.testing.assert_allclose(pb.weights[:, 2], [1, 1, w, w], rtol=1e-6)
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
