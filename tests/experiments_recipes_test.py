"""Every RLVR method config follows its paper's recipe (issue 18, item 1):
its docstring cites the source of its hyperparameters, the drifts found in
the audit stay fixed, and its ``:paper`` variant loads. Configs are only
built here (no training: experiments_configs_test trains them)."""

import math
import os
import re
import runpy

from absl.testing import absltest
from absl.testing import parameterized

from entropy_rl import builders
from experiments.configs import base
from tests import experiments_configs_test as configs_test

# Configs that are not one method's recipe.
NOT_METHODS = ("base", "default")
METHODS = [p for p in configs_test.CONFIGS
           if os.path.basename(p)[:-3] not in NOT_METHODS]
# A link to the paper or the authors' code, and a pointer into it (a
# section, table, appendix, spec section or script).
SOURCE = re.compile(r"arxiv\.org/abs/\d{4}\.\d{4,5}|github\.com/[\w.-]+/")
PLACE = re.compile(r"§|\bTable\b|\bSec\.|\bSection\b|\bApp\.|"
                   r"\bAppendix\b|\bEq\.|\.sh\b|\.yaml\b")


def name_of(path):
  return os.path.basename(path)[:-3]


def config(name, arg="tiny"):
  return configs_test.load(os.path.join(
      configs_test.ROOT, "experiments", "configs", f"{name}.py")
  ).get_config(arg)


def objective(c, response_len=8):
  return builders.build_objective(c.objective, response_len=response_len)


class RecipesTest(parameterized.TestCase):

  def test_every_method_config_is_audited(self):
    self.assertGreaterEqual(len(METHODS), 25)

  @parameterized.named_parameters((name_of(p), p) for p in METHODS)
  def test_docstring_cites_its_source(self, path):
    doc = runpy.run_path(path)["__doc__"]
    self.assertIsNotNone(doc, f"{path}: no module docstring")
    self.assertRegex(doc, SOURCE, f"{path}: the docstring names no arXiv "
                     "paper or authors' repository")
    self.assertRegex(doc, PLACE, f"{path}: the docstring points to no "
                     "section / table / script of its source")

  @parameterized.named_parameters((name_of(p), p) for p in METHODS)
  def test_paper_variant_loads(self, path):
    module = configs_test.load(path)
    for arg in ("paper", "tiny,paper", "smollm2,paper"):
      c = module.get_config(arg)
      c.lock()
      builders.build_transform(c.regularizers, response_len=8, group_size=4)
      builders.build_objective(c.objective, response_len=8)

  # ------------------------------------------------ the drifts

  def test_hapo_token_mean_dual_clip_10(self):
    for arg in ("tiny", "paper"):
      obj = objective(config("hapo", arg))
      self.assertEqual(obj.agg, "token-mean")
      self.assertEqual(float(obj.clip.dual_c), 10.0)
      self.assertEqual((obj.clip.eps_low, obj.clip.eps_high), (0.2, 0.2))
    c = config("hapo")
    self.assertTrue(c.rollout.dynamic_sampling.enabled)
    self.assertEqual(c.sampling.hapo_tau, 0.05)
    self.assertEqual(
        (c.regularizers.hapo.pivot, c.regularizers.hapo.clip_alpha,
         c.regularizers.hapo.adv_beta), (0.8, 1.0, 1.0))

  @parameterized.parameters("gtpo", "grpo_s", "qae", "rent", "riskpo")
  def test_token_mean(self, name):
    obj = objective(config(name))
    self.assertEqual(obj.agg, "token-mean", name)

  def test_qae_is_the_dapo_recipe(self):
    c = config("qae")
    obj = objective(c)
    self.assertEqual((obj.clip.eps_low, obj.clip.eps_high), (0.2, 0.28))
    self.assertEqual(float(obj.clip.dual_c), 10.0)
    self.assertTrue(c.rollout.dynamic_sampling.enabled)
    self.assertEqual(c.regularizers.qae.k, 0.4)

  def test_rent_kl_loss(self):
    c = config("rent")
    self.assertIn("kl", c.regularizers.order)
    self.assertEqual(c.regularizers.kl.coef, 0.001)
    self.assertEqual(c.regularizers.kl.estimator, "k3")
    obj = objective(c)
    self.assertEqual((obj.clip.eps_low, obj.clip.eps_high), (0.2, 0.2))

  def test_riskpo_verl_defaults(self):
    c = config("riskpo")
    obj = objective(c)
    self.assertEqual((obj.clip.eps_low, obj.clip.eps_high), (0.2, 0.2))
    self.assertEqual(float(obj.clip.dual_c), 3.0)
    self.assertEqual(c.regularizers.riskpo.bundle_size, 4)
    p = config("riskpo", "paper")
    self.assertEqual(p.regularizers.riskpo.bundle_size, 5)
    self.assertEqual(p.data.prompts_per_step % 5, 0)
    self.assertEqual(p.data.num_samples, 10)

  def test_em_rl_clip_kl_entropy(self):
    c = config("em_rl")
    obj = objective(c)
    self.assertEqual((obj.clip.eps_low, obj.clip.eps_high), (0.2, 0.2))
    self.assertEqual(obj.agg, "token-mean")
    self.assertTrue(math.isinf(float(obj.clip.dual_c)))
    r = c.regularizers
    self.assertEqual(r.order, ("em_rl", "kl", "bonus"))
    self.assertEqual((r.kl.kind, r.kl.coef, r.kl.estimator),
                     ("kl_penalty", 0.001, "k3"))
    self.assertEqual((r.bonus.kind, r.bonus.coef), ("entropy_bonus", 0.001))

  # --------------------------------------------- the rest of the audit

  def test_clip_cov_paper_values(self):
    c = config("clip_cov")
    self.assertEqual(c.regularizers.clip_cov.ratio, 0.02)  # toy
    p = config("clip_cov", "paper")
    self.assertEqual(p.regularizers.clip_cov.ratio, 2e-4)
    for cc in (c, p):
      obj = objective(cc)
      self.assertEqual((obj.clip.eps_low, obj.clip.eps_high), (1.0, 1.0))
      self.assertEqual(obj.agg, "token-mean")
      self.assertEqual((cc.regularizers.clip_cov.cov_low,
                        cc.regularizers.clip_cov.cov_high), (1.0, 5.0))

  def test_kl_cov_paper_values(self):
    self.assertEqual(config("kl_cov").regularizers.kl_cov.k_fraction, 0.02)
    p = config("kl_cov", "paper")
    self.assertEqual(p.regularizers.kl_cov.k_fraction, 2e-3)
    self.assertEqual(p.regularizers.kl_cov.beta, 1.0)
    self.assertEqual(objective(p).agg, "token-mean")

  def test_adaptive_entropy_skywork_values(self):
    c = config("adaptive_entropy")
    self.assertEqual(objective(c).agg, "token-mean")
    self.assertEqual(c.regularizers.adaptive.max_coef, 0.005)
    self.assertEqual(
        config("adaptive_entropy", "paper").regularizers.adaptive.target, 0.2)

  def test_ce_gppo_dynamic_sampling(self):
    c = config("ce_gppo")
    self.assertTrue(c.rollout.dynamic_sampling.enabled)
    obj = objective(c)
    self.assertEqual((obj.agg, float(obj.clip.dual_c)), ("token-mean", 10.0))

  def test_grpo_paper_kl(self):
    self.assertNotIn("kl", config("grpo").regularizers.order)
    p = config("grpo", "paper")
    self.assertEqual((p.regularizers.kl.coef, p.regularizers.kl.estimator),
                     (0.04, "k3"))
    self.assertEqual(objective(p).agg, "seq-mean-token-mean")

  def test_parse_arg(self):
    self.assertEqual(base.parse_arg(""), ("tiny", False))
    self.assertEqual(base.parse_arg("paper"), ("tiny", True))
    self.assertEqual(base.parse_arg("0.5b,paper"), ("0.5b", True))
    with self.assertRaisesRegex(ValueError, "'<size>\\[,paper\\]'"):
      base.parse_arg("huge")
    with self.assertRaisesRegex(ValueError, "one size"):
      base.parse_arg("tiny,smollm2")


if __name__ == "__main__":
  absltest.main()
