"""Every LLM experiment config (classic_*, agent_* have their own tests):
its sizes build, its sweep names real keys, and its :tiny variant trains
for 2 steps (1-layer model, Python-reward path so that all configs share
one sampler compilation)."""

import glob
import os
import runpy
import tempfile
import types

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

from entropy_rl import builders
from entropy_rl.training import loop
from entropy_rl.training import metrics as metrics_lib
from tests import training_loop_test

# Config families with their own runners and tests.
OTHER_FAMILIES = ("classic_", "agent_", "study_")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(p for p in glob.glob(os.path.join(ROOT, "experiments",
                                                   "configs", "*.py"))
                 if not p.endswith("__init__.py")
                 and not os.path.basename(p).startswith(OTHER_FAMILIES))


def load(path):
  """The config file's module namespace (``get_config``, ``get_sweep``)."""
  return types.SimpleNamespace(**runpy.run_path(path))


def has_key(config, dotted):
  node = config
  for part in dotted.split("."):
    if part not in node:
      return False
    node = node[part]
  return True


class ConfigsTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls._opt = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)  # compiles
    cls.reuse = builders.build_experiment(training_loop_test.tiny_config())

  @classmethod
  def tearDownClass(cls):
    jax.config.update("jax_disable_most_optimizations", cls._opt)
    super().tearDownClass()

  def test_there_are_method_configs(self):
    names = {os.path.basename(p)[:-3] for p in CONFIGS}
    for want in ("base", "default", "grpo", "dapo", "steer", "clip_cov",
                 "kl_cov", "siren"):
      self.assertIn(want, names)

  @parameterized.named_parameters(
      (os.path.basename(p)[:-3], p) for p in CONFIGS)
  def test_config(self, path):
    module = load(path)
    for size in ("tiny", "smollm2", "0.5b"):
      c = module.get_config(size)
      c.lock()
      builders.build_transform(c.regularizers, response_len=8, group_size=4)
      builders.build_objective(c.objective, response_len=8)
      for point in module.get_sweep(size):
        for k in point:
          self.assertTrue(has_key(c, k), f"{path}: sweep key {k}")
    cfg = training_loop_test.tiny_config(module.get_config("tiny"))
    cfg.data.jax_reward = False
    for name, vc in builders.variants(cfg):
      exp = builders.build_experiment(vc, reuse=self.reuse)
      self.assertIs(exp.fns, self.reuse.fns)
      workdir = tempfile.mkdtemp()
      summary = loop.run_rl(exp, workdir)
      self.assertEqual(summary["status"], "done", name)
      self.assertEqual(summary["step"], 2)
      recs = metrics_lib.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
      self.assertLen(recs, 2)
      for r in recs:
        self.assertTrue(np.isfinite(r["loss"]), (name, r))
        self.assertEqual(r["nonfinite_steps"], 0.0)


if __name__ == "__main__":
  absltest.main()
