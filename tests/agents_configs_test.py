"""2-iteration smoke runs of every agent method config (token game).

Each runs through ``experiments.main.run_experiment``, the entry point of
every config. The rollout is compiled once (the configs share the model
shape, the environment and two vmapped seeds); each method compiles its
own train step. Groups and the model are shrunk with ``--config.x=y``
overrides to keep the test fast; the methods' settings are the configs'
own.
"""

import json
import os
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from entropy_rl import agent_builders
from experiments import main
from experiments.agents import runner

# Compiles whole rollouts / iterations: XLA with most optimisations off
# (tests/conftest.py).
UNOPTIMISED_COMPILES = True

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "experiments",
                       "configs")
TINY = ("--config.rollout.num_groups=2", "--config.rollout.group_size=2",
        "--config.model.hidden_size=16", "--config.model.num_layers=1",
        "--config.model.num_heads=2", "--config.model.num_kv_heads=2",
        "--config.model.intermediate_size=32",
        "--config.env.token_game.max_turns=4", "--config.num_seeds=2")


def tiny(method, **overrides):
  """The locked ``agent_<method>.py:tiny`` config, shrunk, with
  ``overrides`` ({dotted path: value}) applied as ``--config`` flags."""
  return main.load_config(
      os.path.join(CONFIGS, f"agent_{method}.py") + ":tiny",
      list(TINY) + [f"--config.{k}={v}" for k, v in overrides.items()])


def run_config(config, workdir, num_steps):
  """Trains ``config`` for ``num_steps`` through experiments.main; returns
  the run's summary and its metrics.jsonl rows."""
  config.train.num_steps = num_steps
  summary = main.run_experiment(config, workdir, plot=False)
  return (summary["runs"]["run"],
          runner.read_rows(os.path.join(workdir, "metrics.jsonl")))


class AgentConfigsTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("grpo", "grpo", {}), ("epo", "epo", {}), ("empg", "empg", {}),
      ("aepo", "aepo", {"rollout.branching.initial_rollouts": 1}),
      ("aepo_plain_rollout", "aepo", {"rollout.branching.enabled": False}),
      ("spear", "spear", {}), ("dr_po", "dr_po", {}))
  def test_two_iterations(self, method, overrides):
    config = tiny(method, **overrides)
    self.assertEqual(config.name, method)
    with tempfile.TemporaryDirectory() as d:
      out, rows = run_config(config, d, num_steps=2)
    self.assertEqual(out["steps"], 2)
    self.assertLen(rows, 2)
    for r in rows:
      self.assertTrue(np.isfinite(r["loss"]), r)
      self.assertLen(r["success/seeds"], config.num_seeds)
      self.assertLen(r["turn_entropy"], 4)
      self.assertTrue(0.0 <= r["success"] <= 1.0)
      self.assertEqual(r["skipped_steps"], 0.0)
    if config.name == "dr_po":
      # β = 1: every episode starts from a dataset state (1 or 2 forced
      # turns of 4), whose tokens are out of the policy gradient.
      for r in rows:
        self.assertTrue(0.0 < r["dr_po/rollin_frac"] < 1.0, r)
    if config.name == "aepo":
      # Branching: 1 global sample + 1 budget slot per group.
      branching = config.rollout.branching.enabled
      self.assertEqual("branches" in rows[0], branching)
      for r in rows if branching else ():
        self.assertTrue(1.0 <= r["trajectories"] <= 2.0, r)
        self.assertLessEqual(r["branches"] + r["fresh_samples"], 1.0)

  def test_plots(self):
    rng = np.random.default_rng(0)
    keys = ("success", "action_entropy", "command_entropy", "num_turns")
    with tempfile.TemporaryDirectory() as d:
      dirs = {}
      for m in ("grpo", "epo"):
        dirs[m] = os.path.join(d, m)
        os.makedirs(dirs[m])
        with open(os.path.join(dirs[m], "metrics.jsonl"), "w") as f:
          for i in range(30):
            row = {"step": i, "turn_entropy": rng.random(4).tolist()}
            row.update({k + "/seeds": rng.random(2).tolist() for k in keys})
            f.write(json.dumps(row) + "\n")
      paths = runner.plot(dirs, d)
      for p in paths:
        self.assertGreater(os.path.getsize(p), 1000)

  def test_bad_config(self):
    config = tiny("grpo", **{"regularizers.advantages.kind": "nope"})
    with self.assertRaisesRegex(ValueError, "unknown agent method kind"):
      agent_builders.build(config)


if __name__ == "__main__":
  absltest.main()
