"""experiments/main.py, sweep.py and plot.py: exact resume in a fresh
process, locked-config errors, sweep commands and tables, PNG curves."""

import json
import os
import subprocess
import sys
import tempfile
from unittest import mock

from absl import flags
from absl.testing import absltest
import numpy as np

from entropy_rl import builders
from entropy_rl.training import loop as loop_lib
from experiments import plot
from experiments import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A 1-layer model, 4 prompts x 4 samples, eval every 2 steps, one device.
TINY = ["--config.model.hidden_size=16", "--config.model.num_layers=1",
        "--config.model.num_heads=2", "--config.model.num_kv_heads=2",
        "--config.model.intermediate_size=32",
        "--config.data.prompts_per_step=4", "--config.data.num_samples=4",
        "--config.sampling.max_new_tokens=4", "--config.sampling.block_size=4",
        "--config.sft.steps=0",
        "--config.eval.every=2", "--config.eval.num_prompts=8",
        "--config.eval.num_samples=2", "--config.eval.ks=(1, 2)",
        "--config.checkpoint.every=2", "--config.log.tensorboard=False",
        "--config.mesh.shape=(1, 1, 1)", "--plot=False"]
ENV = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1",
           JAX_PLATFORMS="cpu", PYTHONPATH=ROOT,
           JAX_DISABLE_MOST_OPTIMIZATIONS="1")  # faster compiles
TIMING = ("step_time", "tokens_per_s")


def main_cmd(workdir, *extra, config="experiments/configs/grpo.py:tiny"):
  return [sys.executable, "-m", "experiments.main", f"--config={config}",
          f"--workdir={workdir}", *TINY, *extra]


def records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    recs = [json.loads(line) for line in f]
  return [{k: v for k, v in r.items() if k not in TIMING} for r in recs]


def final_params(workdir, step):
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  with ocp.CheckpointManager(os.path.join(workdir, "checkpoints")) as m:
    out = m.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore()))
  return out["state"]


class ResumeTest(absltest.TestCase):

  def test_two_steps_then_resume_in_a_fresh_process_equals_four(self):
    root = tempfile.mkdtemp()
    straight, split = os.path.join(root, "a"), os.path.join(root, "b")
    # The 2-step run first: the straight run and the resume then find its
    # programs in the session's compilation cache (tests/conftest.py).
    p = subprocess.run(main_cmd(split, "--config.train.num_steps=2"),
                       cwd=ROOT, env=ENV, capture_output=True, text=True,
                       timeout=600, check=False)
    self.assertEqual(p.returncode, 0, p.stdout[-2000:] + p.stderr[-3000:])
    # A fresh process resumes the 2-step run, beside the straight run.
    procs = [subprocess.Popen(main_cmd(straight, "--config.train.num_steps=4"),
                              cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True),
             subprocess.Popen(main_cmd(split, "--config.train.num_steps=4"),
                              cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)]
    for p in procs:
      out, _ = p.communicate(timeout=600)
      self.assertEqual(p.returncode, 0, out[-3000:])

    a, b = records(straight), records(split)
    self.assertEqual([(r["phase"], r["step"]) for r in a],
                     [(r["phase"], r["step"]) for r in b])
    self.assertEqual(a, b)  # every metric, bit for bit (timings aside)
    # The data iterator continued: steps 3-4 read the straight run's prompts.
    idx = [r["data_index"] for r in a if r["phase"] == "rl"]
    self.assertLen(set(idx), 4)
    pa, pb = final_params(straight, 4), final_params(split, 4)
    flat_a = jax_leaves(pa)
    flat_b = jax_leaves(pb)
    self.assertLen(flat_b, len(flat_a))
    for x, y in zip(flat_a, flat_b):
      np.testing.assert_array_equal(x, y)

  def test_unknown_config_key_fails_with_did_you_mean(self):
    p = subprocess.run(
        [sys.executable, "-m", "experiments.main",
         "--config=experiments/configs/grpo.py:tiny",
         "--workdir=/tmp/unused", "--config.train.num_step=3"],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300,
        check=False)
    self.assertEqual(p.returncode, 2)
    self.assertIn('Did you mean "num_steps"', p.stderr)
    self.assertNotIn("Traceback", p.stderr)


def jax_leaves(tree):
  import jax  # pylint: disable=import-outside-toplevel
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


class SweepTest(absltest.TestCase):

  def test_commands_and_table(self):
    points = sweep.load_sweep("experiments/configs/steer.py:tiny")
    self.assertLen(points, 3)
    cmds = sweep.commands("experiments/configs/steer.py:tiny", "/w", points,
                          ["train.num_steps=5"], python="py")
    name, argv = cmds[0]
    self.assertEqual(name, "steer.w_min=0.9,steer.w_max=1.1")
    self.assertEqual(argv[:4], ["py", "-m", "experiments.main",
                                "--config=experiments/configs/steer.py:tiny"])
    self.assertIn("--config.regularizers.steer.w_min=0.9", argv)
    self.assertEqual(argv[-1], "--config.train.num_steps=5")
    self.assertEqual(sweep.format_value(("a", "b")), "('a', 'b')")
    self.assertEqual(sweep.format_value(("a",)), "('a',)")
    d = tempfile.mkdtemp()
    os.makedirs(os.path.join(d, name))
    with open(os.path.join(d, name, "summary.json"), "w") as f:
      json.dump({"status": "done", "runs": {"run": {
          "status": "done", "step": 5, "eval": {"eval/accuracy": 0.5},
          "final": {"entropy": 0.25}}}}, f)
    rows = sweep.collect(d, [n for n, _ in cmds], points)
    self.assertEqual(rows[0]["eval/accuracy"], 0.5)
    self.assertEqual(rows[1]["status"], "missing")
    md = sweep.table(rows)
    self.assertIn("| point | run |", md.splitlines()[0])
    self.assertIn("0.5", md)
    self.assertEqual(sweep.run_all(cmds[:1], d), {name: 0})  # done: skipped


class EntryPointsTest(absltest.TestCase):

  def test_importing_main_registers_no_global_flag(self):
    """Tests and sweep.py import experiments.main for run_experiment and
    load_config; its --config must not collide with another entry point's
    (experiments.preflight defines its own) in the same process."""
    from experiments import main  # pylint: disable=g-import-not-at-top
    from experiments import preflight  # pylint: disable=g-import-not-at-top,unused-import
    self.assertIsNone(main._CONFIG)  # pylint: disable=protected-access
    self.assertIn("config", flags.FLAGS)  # preflight's
    cfg = main.load_config("experiments/configs/steer.py:tiny",
                           ["--config.train.num_steps=3"])
    self.assertEqual(cfg.train.num_steps, 3)


class ExitCodeTest(absltest.TestCase):
  """main()'s exit status: 0 when finished, EXIT_PREEMPTED (143) when a
  signal stopped SFT or RL after saving a checkpoint; summary.json says
  "preempted" in both cases. The loop is stubbed (no model is built)."""

  def run_main(self, run_sft, run_rl):
    from experiments import main  # pylint: disable=g-import-not-at-top
    workdir = tempfile.mkdtemp()
    cfg = main.load_config("experiments/configs/grpo.py:tiny")
    holder = lambda v: mock.Mock(value=v, present=False)  # noqa: E731
    with mock.patch.object(main, "_CONFIG", holder(cfg)), \
        mock.patch.object(main, "_WORKDIR", holder(workdir)), \
        mock.patch.object(main, "_PLOT", holder(False)), \
        mock.patch.object(builders, "build_experiment"), \
        mock.patch.object(loop_lib, "describe", return_value=""), \
        mock.patch.object(loop_lib, "run_sft", side_effect=run_sft), \
        mock.patch.object(loop_lib, "run_rl", side_effect=run_rl):
      code = main.main(["main"])
    with open(os.path.join(workdir, "summary.json"), encoding="utf-8") as f:
      return code, json.load(f), main.EXIT_PREEMPTED

  def test_preempted_runs_exit_143_finished_ones_0(self):
    def rl(status):
      return lambda *a: {"status": status, "step": 2, "final": {},
                         "eval": {}}

    def sft_preempted(exp, workdir):
      del exp
      raise loop_lib.Preempted(3, workdir)

    code, summary, preempted = self.run_main(lambda *a: None, rl("done"))
    self.assertEqual((code, summary["status"]), (0, "done"))
    self.assertEqual(preempted, 143)
    code, summary, _ = self.run_main(lambda *a: None, rl("preempted"))
    self.assertEqual((code, summary["status"]), (143, "preempted"))
    self.assertEqual(summary["runs"]["run"]["step"], 2)
    code, summary, _ = self.run_main(sft_preempted, rl("done"))
    self.assertEqual((code, summary["status"]), (143, "preempted"))
    self.assertEqual(summary["sft"]["step"], 3)
    self.assertEqual(summary["runs"], {})


class PlotTest(absltest.TestCase):

  def test_plot_runs_and_find_runs(self):
    d = tempfile.mkdtemp()
    for name, h in (("grpo", 0.5), ("grpo_steer", 0.6)):
      os.makedirs(os.path.join(d, name))
      with open(os.path.join(d, name, "metrics.jsonl"), "w") as f:
        for s in range(1, 6):
          f.write(json.dumps({"step": s, "phase": "rl", "entropy": h - s / 50,
                              "accuracy": s / 10, "reward": s / 10,
                              "entropy_change": -0.01,
                              "pred_entropy_change": -0.02}) + "\n")
        f.write(json.dumps({"step": 5, "phase": "eval",
                            "eval/accuracy": 0.4}) + "\n")
    runs = plot.find_runs(d)
    self.assertEqual(sorted(runs), ["grpo", "grpo_steer"])
    out = plot.main(["--workdir", d])
    self.assertEqual(out, os.path.join(d, "compare.png"))
    with open(out, "rb") as f:
      self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
    steps, ys = plot.series(plot.metrics_lib.read_jsonl(
        os.path.join(d, "grpo", "metrics.jsonl")), "eval", "eval/accuracy")
    np.testing.assert_array_equal(steps, [5])
    np.testing.assert_array_equal(ys, [0.4])
    np.testing.assert_allclose(plot.smooth(np.array([1.0, 3.0, 5.0]), 2),
                               [1.0, 2.0, 4.0])


if __name__ == "__main__":
  absltest.main()
