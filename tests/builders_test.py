"""entropy_rl.builders: registries, errors that list choices, schedules,
objectives, optimizers, sampling, variants and settings."""

from absl.testing import absltest
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import entropy_rl as er
from entropy_rl import agent_builders
from entropy_rl import agents
from entropy_rl import builders
from entropy_rl import regularizers
from entropy_rl import sampling
from entropy_rl.core import combine
from experiments.configs import base
from experiments.configs import default
from experiments.configs import hapo as hapo_config


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

  def test_registries_are_explicit_and_sorted(self):
    for table in (regularizers.TRANSFORMS, regularizers.OBJECTIVES,
                  regularizers.ROLLOUT_HOOKS, agents.TRANSFORMS):
      self.assertEqual(list(table), sorted(table))
    for kind, ctor in agents.TRANSFORMS.items():
      self.assertIs(getattr(agents, kind), ctor)
    self.assertEqual(agent_builders.transform_registry(),
                     {**regularizers.TRANSFORMS, **agents.TRANSFORMS})
    self.assertEqual(builders.regularizer_registry(), regularizers.TRANSFORMS)
    self.assertEqual(builders.objective_registry(), regularizers.OBJECTIVES)
    # Public transforms that are not config kinds stay out (the AEPO
    # hook's member is inserted by its hook, not named by a config).
    self.assertNotIn("aepo_rollout_advantages", regularizers.TRANSFORMS)
    self.assertIs(regularizers.OBJECTIVES["dapo"], er.dapo)
    self.assertIs(regularizers.OBJECTIVES["siren"],
                  regularizers.siren_objective)

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


class RolloutProcessorsTest(absltest.TestCase):

  def sampler_logits(self, sign_mode):
    """HAPO's adaptive temperature as built from a config whose ``hapo``
    member has ``sign_mode``, after one prepare (statistics ready)."""
    c = hapo_config.get_config("tiny")
    c.regularizers.hapo.sign_mode = sign_mode
    procs, params_fn = builders.build_rollout_processors(c)
    (proc,) = procs
    t = builders.build_transform(c.regularizers)
    # One prepare on the spec's example, old entropies H = (0.05, 0.2, 1,
    # 2, 0.5): the member stores q = 0, s = 1.582758, 1/P = 2.283437,
    # 1/N = -0.528337 for the next rollout.
    h = jnp.array([[0.05, 0.2, 1.0, 2.0, 0.5]])
    batch = er.PolicyBatch(
        logp=jnp.zeros((1, 5)), old_logp=jnp.zeros((1, 5)),
        advantages=jnp.zeros((1, 5)), mask=jnp.ones((1, 5)), entropy=h,
        old_entropy=h, rewards=jnp.ones((1,)),
        group_ids=jnp.zeros((1,), jnp.int32))
    _, ts, _ = er.prepare_batch(batch, t, t.init(None))
    np.testing.assert_allclose(combine.get_state(ts, "hapo").sampler_stats.s,
                               1.582758, rtol=1e-5)
    (params,) = params_fn(ts)
    # A low-entropy row (H = 0.0517 < e^q = 1): h < 0.
    z = jnp.array([[6.0, 0.0, 0.0, 0.0]])
    return z, proc.apply(z, params, rng=None, pos=0), params

  def test_hapo_sampler_follows_the_members_sign_mode(self):
    for sign in ("intended", "released"):
      z, got, params = self.sampler_logits(sign)
      want = sampling.hapo_temperature(0.05, 1.0, sign).apply(
          z, params, rng=None, pos=0)
      np.testing.assert_allclose(got, want, rtol=1e-6)
      other = sampling.hapo_temperature(
          0.05, 1.0, {"intended": "released", "released": "intended"}[sign]
      ).apply(z, params, rng=None, pos=0)
      self.assertFalse(np.allclose(got, other), sign)
      # Low entropy, H(softmax z) = 0.0517: h = log(0.0517) / 1.582758 =
      # -1.8714; intended ĥ = h·|1/N| = -0.9887 cools the row, T = 1 +
      # 0.05·ĥ = 0.95056; released ĥ = h·(1/N) = +0.9887 heats it, 1.04944.
      t_eff = float(z[0, 0] / got[0, 0])
      self.assertAlmostEqual(
          t_eff, {"intended": 0.95056, "released": 1.04944}[sign], places=4)
      self.assertEqual(float(params["t0"]), 1.0)
      self.assertAlmostEqual(float(params["tau"]), 0.05)

  def test_hapo_sampler_needs_a_member(self):
    c = hapo_config.get_config("tiny")
    c.regularizers.order = ()
    with self.assertRaisesRegex(ValueError, "kind 'hapo'"):
      builders.build_rollout_processors(c)
    self.assertEqual(builders.build_rollout_processors(base.get_config()),
                     ((), None))


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
