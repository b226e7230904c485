"""entropy_rl.builders: registries, errors that list choices, schedules,
objectives, optimizers, sampling, variants and settings."""

from absl.testing import absltest
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import entropy_rl as er
from entropy_rl import builders
from experiments.configs import base
from experiments.configs import default


def cd(**kw):
  return ml_collections.ConfigDict(kw)


class RegistryTest(absltest.TestCase):

  def test_regularizers_are_discovered(self):
    reg = builders.regularizer_registry()
    for kind in ("grpo_advantages", "entropy_bonus", "steer", "clip_cov",
                 "kl_cov", "siren", "kl_penalty", "adaptive_entropy"):
      self.assertIn(kind, reg)
    self.assertNotIn("token_covariance", reg)  # not a transform
    obj = builders.objective_registry()
    for kind in ("grpo", "dapo", "dr_grpo", "clip_cov", "kl_cov", "siren"):
      self.assertIn(kind, obj)

  def test_transform_chain_in_order_with_names(self):
    cfg = cd(order=("advantages", "bonus"),
             advantages=dict(kind="grpo_advantages"),
             bonus=dict(kind="entropy_bonus", coef=0.01),
             unused=dict(kind="steer"))
    t = builders.build_transform(cfg)
    state = t.init(None)
    self.assertEqual(list(state), ["advantages", "bonus"])
    self.assertIn("entropy", t.needs.fields)

  def test_unknown_kind_lists_valid_ones(self):
    cfg = cd(order=("x",), x=dict(kind="steeer"))
    with self.assertRaisesRegex(ValueError, r"did you mean \['steer'\]"):
      builders.build_transform(cfg)
    with self.assertRaisesRegex(ValueError, "Valid: .*clip_cov"):
      builders.build_transform(cd(order=("x",), x=dict(kind="nope")))
    with self.assertRaisesRegex(ValueError, "not defined"):
      builders.build_transform(cd(order=("missing",)))
    with self.assertRaisesRegex(ValueError, "unknown arguments \\['wmin'\\]"):
      builders.build_transform(cd(order=("s",), s=dict(kind="steer", wmin=1)))
    with self.assertRaisesRegex(ValueError, "objective kind"):
      builders.build_objective(cd(kind="ppo"))

  def test_schedule_values(self):
    cfg = cd(order=("b",), b=dict(kind="entropy_bonus", coef=dict(
        schedule="linear", init=0.1, end=0.0, steps=10)))
    t = builders.build_transform(cfg)
    batch = er.PolicyBatch(logp=jnp.zeros((1, 2)), old_logp=jnp.zeros((1, 2)),
                           advantages=jnp.zeros((1, 2)), mask=jnp.ones((1, 2)),
                           entropy=jnp.ones((1, 2)))
    _, (_, m) = er.policy_loss(batch, t, t.init(None), objective=er.grpo(),
                               step=5)
    np.testing.assert_allclose(m["b/entropy_coef"], 0.05, atol=1e-7)

  def test_objective_lmax_fill(self):
    obj = builders.build_objective(cd(kind="dr_grpo", l_max=-1),
                                   response_len=7)
    self.assertEqual(obj.l_max, 7)
    self.assertEqual(builders.build_objective(cd(kind="dapo")).name, "dapo")


class OptimizerTest(absltest.TestCase):

  def test_warmup_cosine(self):
    lr = builders.build_schedule(dict(learning_rate=1.0, warmup_steps=4,
                                      schedule="cosine"), 14)
    np.testing.assert_allclose([lr(0), lr(2), lr(4), lr(14)],
                               [0.0, 0.5, 1.0, 0.0], atol=1e-6)
    self.assertEqual(builders.build_schedule(dict(learning_rate=0.1), 5)(3),
                     0.1)
    with self.assertRaisesRegex(ValueError, "did you mean"):
      builders.build_optimizer(dict(name="adamww"), 10)
    opt = builders.build_optimizer(base.get_config("tiny").optimizer, 10)
    self.assertIsInstance(opt, optax.GradientTransformation)

  def test_sampling_is_shared_and_checked(self):
    a = builders.build_sampling(cd(method="top_p", temperature=0.7,
                                   top_p=0.9))
    b = builders.build_sampling(cd(method="top_p", temperature=0.7,
                                   top_p=0.9))
    # Values: equal settings are equal methods (one sampler compilation).
    self.assertEqual(a, b)
    self.assertEqual(hash(a), hash(b))
    with self.assertRaisesRegex(ValueError, "sampling method"):
      builders.build_sampling(cd(method="nucleus"))

  def test_sampler_kwargs(self):
    spec = base.get_config("tiny").sampling
    self.assertEqual(builders.build_sampler_kwargs(spec),
                     dict(block_size=8, num_buckets=None, share_prompt=None))
    spec.update(num_buckets=2, share_prompt="off")
    self.assertEqual(builders.build_sampler_kwargs(spec),
                     dict(block_size=8, num_buckets=2, share_prompt=False))
    spec.share_prompt = "yes"
    with self.assertRaisesRegex(ValueError, "share_prompt must be one of"):
      builders.build_sampler_kwargs(spec)
    spec.update(share_prompt="on", num_buckets=-1)
    with self.assertRaisesRegex(ValueError, "num_buckets must be >= 0"):
      builders.build_sampler_kwargs(spec)


class ConfigTest(absltest.TestCase):

  def test_variants(self):
    c = default.get_config()
    c.lock()
    runs = builders.variants(c)
    self.assertEqual([n for n, _ in runs],
                     ["grpo", "grpo_clip_cov", "grpo_kl_cov"])
    self.assertEqual(runs[1][1].regularizers.order,
                     ("advantages", "clip_cov"))
    self.assertEqual(runs[2][1].regularizers.order, ("advantages", "kl_cov"))
    self.assertEqual(c.regularizers.order, ("advantages",))  # unchanged
    self.assertEqual(builders.variants(base.get_config())[0][0], "")
    with self.assertRaisesRegex(ValueError, "config key in a variant"):
      builders.deep_update(c.copy_and_resolve_references(), {"trian": 1})

  def test_settings_and_step_kwargs(self):
    c = base.get_config("tiny")
    s = builders.build_settings(c)
    self.assertEqual(s.num_steps, c.train.num_steps)
    self.assertEqual(s.eval_ks, (1, 4))
    kw = builders.step_kwargs(c)
    self.assertIsNone(kw["stat_scope"])
    self.assertIsNone(kw["compute_dtype"])
    self.assertEqual(kw["max_grad_norm"], 1.0)

  def test_xla_options(self):
    c = base.get_config("tiny")
    self.assertEqual(builders.build_settings(c).xla_options, ())
    c.train.xla_options = "xla_cpu_experimental_ynn_fusion_type=, a_b=3"
    self.assertEqual(builders.build_settings(c).xla_options,
                     (("xla_cpu_experimental_ynn_fusion_type", ""),
                      ("a_b", "3")))
    for bad in ("no_value", "=3", "a b=1"):
      with self.assertRaisesRegex(ValueError, "bad XLA option"):
        builders.parse_xla_options(bad)

  def test_model_and_task(self):
    c = base.get_config("tiny")
    tok = builders.build_tokenizer(c.tokenizer)
    task = builders.build_task(c.task, tok)
    self.assertIsNotNone(task.jax_reward_fn)
    fns, params, axes = builders.build_model(
        cd(kind="decoder", preset="tiny", hidden_size=16, num_layers=1,
           num_heads=2, num_kv_heads=2, intermediate_size=32),
        vocab_size=tok.vocab_size)
    self.assertEqual(fns.config.vocab_size, tok.vocab_size)
    self.assertEqual(fns.head(params).shape, (16, tok.vocab_size))
    self.assertIsNotNone(axes)
    with self.assertRaisesRegex(ValueError, "model.path"):
      builders.build_model(cd(kind="pretrained", path=""))
    with self.assertRaisesRegex(ValueError, "model kind"):
      builders.build_model(cd(kind="gpt"))


if __name__ == "__main__":
  absltest.main()
