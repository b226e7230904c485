"""The Python adapter on the reasoning-gym calculator task.

Scripted actions are forced through the real jitted sampler with DR-PO's
roll-in processor (``processor_params`` as a function of the turn): a
calculator call then the right answer, a wrong answer, malformed and
invalid turns then the right answer, and garbage until the turn limit.
Rewards, turn counts, observations, masks and the layout converters on
variable-length actions are checked, then a 2-iteration smoke run of the
``agent_grpo.py:calc`` config.
"""

import os
import tempfile

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from entropy_rl import agents
from entropy_rl.models import as_functions
from entropy_rl.models import Decoder
from entropy_rl.models import DecoderConfig

from entropy_rl.agents import _calculator as calc
from entropy_rl.agents import _layouts as layouts
from entropy_rl.agents import _turns as turns_lib
from experiments import main
from experiments.agents import runner

# Compiles whole rollouts / iterations: XLA with most optimisations off
# (tests/conftest.py).
UNOPTIMISED_COMPILES = True

L, O, T = 16, 12, 3


def assert_trees_equal(test, a, b):
  la = jax.tree_util.tree_leaves_with_path(a)
  lb = jax.tree.leaves(b)
  test.assertEqual(len(la), len(lb))
  for (path, x), y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y),
                                  err_msg=jax.tree_util.keystr(path))


class CalculatorAdapterTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    envs, spec, tok = calc.calculator_task(
        num_envs=4, max_turns=T, action_len=L, obs_len=O, init_obs_len=20,
        size=100, seed=1)
    cls.envs, cls.spec, cls.tok = envs, spec, tok
    cfg = DecoderConfig(vocab_size=tok.vocab_size, hidden_size=16,
                        num_layers=1, num_heads=2, num_kv_heads=2,
                        intermediate_size=32)
    fns, params = as_functions(Decoder(cfg, rngs=nnx.Rngs(0)))

    def script(t):
      rows = []
      for i, env in enumerate(envs):
        item = env.item
        expr = item["metadata"]["expression"].replace(" ", "")
        right = item["answer"]
        wrong = str(int(right) + 7)
        text = [["calc:" + expr, "answer:" + right, ""],
                ["answer:" + wrong, "", ""],
                ["hello", "calc:1+", "answer:" + right],
                ["x" * 20, "calc", "ans"]][i][t]
        ids = (tok.encode(text) + [tok.eos_id])[:L]
        rows.append(ids + [tok.pad_id] * (L - len(ids)))
      ref = jnp.asarray(rows, jnp.int32)
      return ({"ref_tokens": ref, "rollin": jnp.full((4,), L, jnp.int32)},)

    cls.ep = turns_lib.python_rollout(
        fns, params, envs, spec, jax.random.PRNGKey(0), group_size=2,
        processors=(agents.rollin_processor(),), processor_params=script)

  def test_rewards_turns_and_aux(self):
    tr = self.ep.trajectories
    np.testing.assert_array_equal(tr.returns, [1.0, 0.0, 1.0, 0.0])
    np.testing.assert_array_equal(tr.num_turns, [2, 1, 3, 3])
    np.testing.assert_array_equal(tr.aux["success"], [1, 0, 1, 0])
    np.testing.assert_array_equal(tr.aux["n_tool_calls"], [1, 0, 1, 0])
    np.testing.assert_array_equal(tr.aux["malformed"], [0, 0, 1, 3])
    np.testing.assert_array_equal(tr.group_ids, [0, 0, 1, 1])
    # Group members got the same question.
    self.assertEqual(self.envs[0].item, self.envs[1].item)
    self.assertEqual(self.envs[2].item, self.envs[3].item)

  def test_observations_and_masks(self):
    tb = self.ep.turns
    obs = np.asarray(tb.obs).reshape(4, T, O)
    om = np.asarray(tb.obs_mask).reshape(4, T, O)
    text = lambda i, t: self.tok.decode(obs[i, t][om[i, t]])
    self.assertEqual(text(0, 0), "=" + self.envs[0].item["answer"])
    self.assertEqual(text(0, 1), ".")
    self.assertEqual(text(2, 0), "?")
    self.assertEqual(text(2, 1), "=?")
    self.assertEqual(text(0, 2), "")  # after the end: nothing
    # Action masks: the text plus its end token (cut at L).
    am = np.asarray(tb.action_mask).reshape(4, T, L)
    expr = self.envs[0].item["metadata"]["expression"].replace(" ", "")
    self.assertEqual(am[0, 0].sum(), min(len("calc:" + expr) + 1, L))
    self.assertEqual(am[3, 0].sum(), L)  # 20 x's: cut, no end token
    self.assertEqual(am[1, 1].sum(), 0)  # finished
    # Forced tokens: probability 1.
    np.testing.assert_allclose(np.asarray(tb.logp), 0.0, atol=1e-6)
    # L2: observations are context, not loss; actions are the loss.
    tr = self.ep.trajectories
    np.testing.assert_array_equal(tr.loss_mask > 0, tr.segment_ids >= 0)
    np.testing.assert_array_equal(np.asarray(tr.loss_mask).sum(1),
                                  am.sum((1, 2)))
    np.testing.assert_array_equal(
        np.asarray(tr.token_mask).sum(1) - np.asarray(tr.loss_mask).sum(1),
        np.asarray(tb.prompt_mask).reshape(4, T, -1)[:, 0].sum(1)
        + om.sum((1, 2)))

  def test_layout_round_trip_variable_lengths(self):
    trajs = layouts.turns_to_trajectories(self.ep.turns, T)
    assert_trees_equal(self, trajs, self.ep.trajectories)
    turns = layouts.trajectories_to_turns(self.ep.trajectories, L, O)
    assert_trees_equal(self, turns, self.ep.turns)


class CalculatorConfigSmokeTest(absltest.TestCase):

  def test_two_iterations(self):
    path = os.path.join(os.path.dirname(__file__), "..", "experiments",
                        "configs", "agent_grpo.py")
    config = main.load_config(path + ":calc", [
        "--config.rollout.num_groups=1", "--config.rollout.group_size=2",
        "--config.train.num_steps=2"])
    with tempfile.TemporaryDirectory() as d:
      out = main.run_experiment(config, d, plot=False)["runs"]["run"]
      rows = runner.read_rows(os.path.join(d, "metrics.jsonl"))
    self.assertEqual(out["steps"], 2)
    self.assertEqual(len(rows), 2)
    for r in rows:
      self.assertTrue(np.isfinite(r["loss"]))
      self.assertTrue(0.0 <= r["success"] <= 1.0)


if __name__ == "__main__":
  absltest.main()
