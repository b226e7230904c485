"""experiments/main.py runs the agent and classic configs like RLVR ones.

Every ``classic_*`` config runs a few steps through
``experiments.main.run_experiment`` (in process, shrunk with
``--config.x=y`` overrides on the locked config); ``agent_base`` and the
GRPO/EPO/EMPG comparison ``agent_compare`` (side-by-side variants) do too,
and each agent method config is run through the same function by
tests/agents_configs_test.py. Every agent and classic config builds at each
size and has a ``get_sweep()`` whose keys are real; an unknown key fails
with a did-you-mean, on the command line too.
"""

import glob
import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

from entropy_rl import agent_builders
from experiments import main
from experiments import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(ROOT, "experiments", "configs")


def configs(prefix):
  return sorted(os.path.relpath(p, ROOT) for p in glob.glob(
      os.path.join(CONFIG_DIR, prefix + "*.py")))


AGENT = configs("agent_")
CLASSIC = configs("classic_")
AGENT_SIZES = ("tiny", "calc")
CLASSIC_SIZES = ("tiny", "")

# A 1-layer model, 2 groups of 2 episodes of at most 4 turns, 2 iterations.
AGENT_TINY = [
    "--config.model.hidden_size=16", "--config.model.num_layers=1",
    "--config.model.num_heads=2", "--config.model.num_kv_heads=2",
    "--config.model.intermediate_size=32", "--config.rollout.num_groups=2",
    "--config.rollout.group_size=2", "--config.env.token_game.max_turns=4",
    "--config.train.num_steps=2", "--config.num_seeds=2"]

_SAC = ["total_steps=300", "buffer_size=300", "learning_starts=100",
        "batch_size=16", "hidden=8", "ace_causal_interval=100",
        "ace_causal_sample=100"]
_PG = ["num_envs=2", "num_steps=16", "total_steps=64", "hidden=8"]
# Per config: overrides of config.algorithm that make each run a few
# hundred environment steps (or a few tabular iterations) of one seed.
CLASSIC_TINY = {
    "classic_ace": _SAC + ["ace_reset_interval=50", "ace_reset_start=150"],
    "classic_bandlimited_sac": _SAC,
    "classic_bobw": ["iters=5"],
    "classic_diayn": _SAC,
    "classic_doraemon": ["outer_iters=2", "ppo_updates_per_iter=1",
                         "eval_episodes=2", "eval_steps=20",
                         "ppo.num_envs=2", "ppo.num_steps=16"],
    "classic_maxent_exploration": ["episodes=3"],
    "classic_maxinforl": _SAC,
    "classic_mdqn": ["total_steps=300", "buffer_size=300",
                     "learning_starts=100", "batch_size=16",
                     "target_update_every=20", "eps_decay_steps=100",
                     "hidden=8"],
    "classic_mdvi": ["iters=5"],
    "classic_moco": ["iters=5"],
    "classic_moss": ["total_steps=200", "buffer_size=200", "batch_size=16",
                     "learning_starts=40", "hidden=8", "cic_hidden=8",
                     "skill_dim=4", "knn_k=4"],
    "classic_ppo": _PG,
    "classic_sac": _SAC,
    "classic_sac_era": _SAC,
    "classic_trpo": _PG,
}

# MountainCarContinuous episodes last 999 steps: none ends in 300, so the
# episode return is NaN (no finished episode), its entropy finite.
NO_EPISODE_ENDS = {("classic_maxinforl", "episode_return")}


def name_of(path):
  return os.path.basename(path)[:-3]


def has_key(config, dotted):
  node = config
  for part in dotted.split("."):
    if part not in node:
      return False
    node = node[part]
  return True


def read_jsonl(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


class KindsTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls._opt = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)  # compiles

  @classmethod
  def tearDownClass(cls):
    jax.config.update("jax_disable_most_optimizations", cls._opt)
    super().tearDownClass()

  def test_every_family_has_configs(self):
    self.assertEqual([name_of(p) for p in AGENT], [
        "agent_aepo", "agent_base", "agent_compare", "agent_dr_po",
        "agent_empg", "agent_epo", "agent_grpo", "agent_spear"])
    self.assertEqual(sorted(CLASSIC_TINY), [name_of(p) for p in CLASSIC])

  def test_configs_build_and_have_sweeps(self):
    for paths, kind, sizes in ((AGENT, "agent", AGENT_SIZES),
                               (CLASSIC, "classic", CLASSIC_SIZES)):
      for path in paths:
        for size in sizes:
          if name_of(path) == "agent_dr_po" and size == "calc":
            continue  # token game only (its get_config says so)
          with self.subTest(path=path, size=size):
            arg = f"{path}:{size}" if size else path
            c = main.load_config(arg)
            self.assertEqual(c.kind, kind)
            points = sweep.load_sweep(arg)
            self.assertNotEqual(points, [{}], "no get_sweep()")
            for point in points:
              for k in point:
                self.assertTrue(has_key(c, k), f"sweep key {k}")
            # The sweep's overrides apply to the locked config.
            main.load_config(arg, [
                f"--config.{k}={sweep.format_value(v)}"
                for k, v in points[-1].items()])
            if kind == "agent":
              agent_builders.build_transform(c.regularizers)

  def test_override_follows_references_and_unknown_key_did_you_mean(self):
    c = main.load_config("experiments/configs/agent_epo.py:tiny", [
        "--config.train.num_steps=7", "--config.env.token_game.max_turns=6"])
    self.assertEqual(c.regularizers.epo.num_epochs, 7)  # K = the run
    self.assertEqual(c.regularizers.epo.max_turns, 6)
    self.assertEqual(c.regularizers.epo.gate_turn, 3)  # max_turns // 2
    c = main.load_config("experiments/configs/agent_spear.py:tiny",
                         ["--config.train.num_steps=9"])
    self.assertEqual(c.regularizers.toolcall.total_steps, 5)  # ⌈9 / 2⌉
    self.assertEqual(c.replay.total_steps, 5)
    for path, bad, hint in (
        ("agent_epo.py:tiny", "regularizers.epo.entropy_cof=0.1",
         "entropy_coef"),
        ("classic_sac.py:tiny", "algorithm.total_step=3", "total_steps"),
        ("agent_grpo.py:calc", "train.num_step=3", "num_steps")):
      with self.subTest(path):
        with self.assertRaisesRegex(Exception, f'Did you mean "{hint}"'):
          main.load_config(f"experiments/configs/{path}", [f"--config.{bad}"])

  def test_bad_kind_and_bad_method_kind(self):
    c = main.load_config("experiments/configs/classic_bobw.py:tiny")
    with c.unlocked():
      c.kind = "nope"
    with self.assertRaisesRegex(ValueError, "unknown config kind 'nope'"):
      main.run_experiment(c, tempfile.mkdtemp(), plot=False)
    c = main.load_config("experiments/configs/agent_epo.py:tiny",
                         ["--config.regularizers.epo.kind=epoo"])
    with self.assertRaisesRegex(ValueError, r"did you mean \['epo'"):
      agent_builders.build_transform(c.regularizers)
    c = main.load_config("experiments/configs/classic_ppo.py:tiny",
                         ["--config.algorithm.kind=trop"])
    with self.assertRaisesRegex(ValueError, r"did you mean \['trpo'\]"):
      main.run_experiment(c, tempfile.mkdtemp(), plot=False)

  # One test per config, so pytest-xdist spreads them over its workers.
  @parameterized.named_parameters((name_of(p), p) for p in CLASSIC)
  def test_classic_config_runs(self, path):
    name = name_of(path)
    c = main.load_config(f"{path}:tiny", ["--config.num_seeds=1"] + [
        f"--config.algorithm.{o}" for o in CLASSIC_TINY[name]])
    d = tempfile.mkdtemp()
    s = main.run_experiment(c, d, plot=False)
    self.assertEqual(s["status"], "done")
    r = s["runs"]["run"]
    self.assertGreater(r["step"], 0)
    self.assertNotEmpty(r["final"])
    rows = read_jsonl(os.path.join(d, "metrics.jsonl"))
    self.assertNotEmpty(rows)
    for k, v in r["final"].items():
      if (name, k) not in NO_EPISODE_ENDS:
        self.assertTrue(np.isfinite(v), (name, k, v))
      self.assertLen(rows[0][k + "/seeds"], 1)
    with open(os.path.join(d, "summary.json"), encoding="utf-8") as f:
      self.assertEqual(json.load(f)["runs"]["run"]["step"], r["step"])

  def test_agent_base_and_comparison_run(self):
    d = tempfile.mkdtemp()
    c = main.load_config("experiments/configs/agent_base.py:tiny",
                         AGENT_TINY)
    s = main.run_experiment(c, d, plot=False)
    self.assertEqual(s["runs"]["run"]["step"], 2)
    self.assertLen(read_jsonl(os.path.join(d, "metrics.jsonl")), 2)
    d = tempfile.mkdtemp()
    c = main.load_config("experiments/configs/agent_compare.py:tiny",
                         AGENT_TINY)
    s = main.run_experiment(c, d)
    self.assertEqual(sorted(s["runs"]), ["empg", "epo", "grpo"])
    for name, r in s["runs"].items():
      self.assertEqual(r["status"], "done")
      self.assertEqual(r["method"], name)
      rows = read_jsonl(os.path.join(d, name, "metrics.jsonl"))
      self.assertLen(rows, 2)
      for row in rows:
        self.assertTrue(np.isfinite(row["loss"]), (name, row))
        self.assertTrue(0.0 <= row["success"] <= 1.0)
    self.assertEqual(s["runs"]["epo"]["order"], ["advantages", "epo"])
    for png in ("compare.png", "turn_entropy.png"):
      self.assertGreater(os.path.getsize(os.path.join(d, png)), 1000)

  def test_command_line(self):
    d = tempfile.mkdtemp()
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    p = subprocess.run(
        [sys.executable, "-m", "experiments.main",
         "--config=experiments/configs/classic_bobw.py:tiny",
         f"--workdir={d}", "--config.algorithm.iters=4",
         "--config.num_seeds=3"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        check=False)
    self.assertEqual(p.returncode, 0, p.stdout[-2000:] + p.stderr[-3000:])
    rows = read_jsonl(os.path.join(d, "metrics.jsonl"))
    self.assertLen(rows, 4)
    self.assertLen(rows[0]["return_tsallis/seeds"], 3)
    self.assertGreater(os.path.getsize(os.path.join(d, "curves.png")), 1000)
    with open(os.path.join(d, "config.json"), encoding="utf-8") as f:
      self.assertEqual(json.load(f)["algorithm"]["iters"], 4)
    p = subprocess.run(
        [sys.executable, "-m", "experiments.main",
         "--config=experiments/configs/agent_grpo.py:tiny",
         f"--workdir={d}", "--config.rollout.num_group=3"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        check=False)
    self.assertEqual(p.returncode, 2)
    self.assertIn('Did you mean "num_groups"', p.stderr)
    self.assertNotIn("Traceback", p.stderr)


if __name__ == "__main__":
  absltest.main()
