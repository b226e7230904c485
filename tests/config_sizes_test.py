"""Negative or zero sizes and counts are config errors that name the key,
for the three kinds of config (RLVR, agent, classic), raised before anything
is built; every shipped config at every size passes the check."""

import glob
import os
import runpy

from absl.testing import absltest

from entropy_rl import agent_builders
from entropy_rl import builders
from entropy_rl import classic_builders
from experiments.configs import agent_base
from experiments.configs import base

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(p for p in glob.glob(os.path.join(
    ROOT, "experiments", "configs", "*.py")) if not p.endswith("__init__.py"))


def _set(config, dotted, value):
  node = config
  *parents, leaf = dotted.split(".")
  for p in parents:
    node = node[p]
  if isinstance(node[leaf], tuple):  # eval.ks: check each item
    value = (value,)
  node[leaf] = value


def _has(config, dotted):
  node = config
  for p in dotted.split("."):
    if not hasattr(node, "keys") or p not in node:
      return False
    node = node[p]
  return True


def _classic_config(algorithm="sac"):
  c = runpy.run_path(os.path.join(ROOT, "experiments", "configs",
                                  f"classic_{algorithm}.py"))["get_config"]
  return c("tiny")


class SizeChecksTest(absltest.TestCase):

  def test_rlvr_names_the_key(self):
    c = base.get_config("tiny")
    c.train.num_steps = -1
    with self.assertRaisesRegex(
        ValueError, r"^config\.train\.num_steps must be >= 1, got -1$"):
      builders.build_experiment(c)
    c = base.get_config("tiny")
    c.data.prompts_per_step = 0  # was: an internal "batch_size" error
    c.eval.ks = (1, 0)
    with self.assertRaisesRegex(
        ValueError, r"config\.data\.prompts_per_step must be >= 1, got 0; "
        r"config\.eval\.ks\[1\] must be >= 1, got 0"):
      builders.build_experiment(c)

  def test_agent_names_the_key(self):
    c = agent_base.get_config("tiny")
    c.rollout.num_groups = -2
    with self.assertRaisesRegex(
        ValueError, r"^config\.rollout\.num_groups must be >= 1, got -2$"):
      agent_builders.build(c)
    c = agent_base.get_config("tiny")
    c.log_every = 0
    with self.assertRaisesRegex(ValueError,
                                r"config\.log_every must be >= 1, got 0"):
      agent_builders.build(c)
    c = agent_base.get_config("tiny")
    c.rollout.group_size = 1  # branching off: its initial_rollouts (0) is
    builders.check_sizes(c, agent_builders.SIZE_MINIMUMS)  # not checked

  def test_classic_names_the_key(self):
    c = _classic_config("sac")
    c.algorithm.batch_size = -32
    with self.assertRaisesRegex(
        ValueError, r"^config\.algorithm\.batch_size must be >= 1, got -32$"):
      classic_builders.build(c)
    c = _classic_config("mdvi")
    c.num_seeds = 0
    with self.assertRaisesRegex(ValueError,
                                r"config\.num_seeds must be >= 1, got 0"):
      classic_builders.build(c)

  def test_every_listed_key_is_checked_before_building(self):
    for kind, get, minimums, build in (
        ("rlvr", lambda: base.get_config("tiny"), builders.SIZE_MINIMUMS,
         builders.build_experiment),
        ("agent", lambda: agent_base.get_config("tiny"),
         agent_builders.SIZE_MINIMUMS, agent_builders.build),
        ("classic", _classic_config, classic_builders.SIZE_MINIMUMS,
         classic_builders.build)):
      checked = 0
      for key, low in minimums.items():
        c = get()
        if not _has(c, key):  # e.g. another classic algorithm's field
          continue
        checked += 1
        _set(c, key, low - 1)
        with self.assertRaisesRegex(
            ValueError, rf"config\.{key}(\[0\])? must be >= {low}, "
            rf"got {low - 1}", msg=f"{kind}: {key}"):
          build(c)
      self.assertGreaterEqual(checked, 5, kind)

  def test_shipped_configs_pass(self):
    for path in CONFIGS:
      name = os.path.basename(path)[:-3]
      module = runpy.run_path(path)
      if name.startswith("classic_"):
        sizes, minimums = ("tiny", ""), classic_builders.SIZE_MINIMUMS
      elif name.startswith("agent_"):
        sizes, minimums = ("tiny", "calc"), agent_builders.SIZE_MINIMUMS
      else:
        sizes, minimums = base.SIZES, builders.SIZE_MINIMUMS
      for size in sizes:
        try:
          c = module["get_config"](size)
        except ValueError:  # a size this config does not have
          continue
        builders.check_sizes(c, minimums)  # raises if a size is bad
        for _, vc in builders.variants(c):
          builders.check_sizes(vc, minimums)


if __name__ == "__main__":
  absltest.main()
