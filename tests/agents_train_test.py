"""The agent train step is the shared RL step with the agents' layout: the
non-finite skip, the reference pass, ``compute_dtype``, no shuffle with one
mini-batch, and the same update as the RLVR layout where the layouts
coincide (a tiny decoder, hand-built rows)."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import entropy_rl as er
from entropy_rl import regularizers
from entropy_rl.agents import _train as train
from entropy_rl.core import kl as kl_lib
from entropy_rl.core import ops
from entropy_rl.models import as_functions
from entropy_rl.models import Decoder
from entropy_rl.models import DecoderConfig
from entropy_rl.training import step as step_lib
from entropy_rl.training import types as train_types

CFG = DecoderConfig(vocab_size=16, hidden_size=16, num_layers=1, num_heads=2,
                    num_kv_heads=2, intermediate_size=32)
B, P, N = 8, 3, 4  # rows, prompt tokens, action tokens


def setUpModule():
  # Faster compiles; every test compares programs compiled in the same mode.
  global _OPT
  _OPT = jax.config.values["jax_disable_most_optimizations"]
  jax.config.update("jax_disable_most_optimizations", True)


def tearDownModule():
  jax.config.update("jax_disable_most_optimizations", _OPT)


def make_rollout(seed=0) -> train_types.Rollout:
  """Left-padded prompts, responses of 1..N tokens, two groups of four."""
  rng = np.random.default_rng(seed)
  pm = np.ones((B, P), bool)
  pm[::2, 0] = False
  lens = rng.integers(1, N + 1, size=(B, 1))
  return train_types.Rollout(
      prompt=jnp.asarray(rng.integers(1, 16, (B, P)), jnp.int32),
      prompt_mask=jnp.asarray(pm),
      response=jnp.asarray(rng.integers(1, 16, (B, N)), jnp.int32),
      response_mask=jnp.asarray(np.arange(N)[None] < lens, jnp.float32),
      logp=jnp.full((B, N), -2.5), entropy=jnp.full((B, N), 2.0),
      rewards=jnp.asarray([0, 1, 1, 0, 1, 0, 0, 0], jnp.float32),
      group_ids=jnp.repeat(jnp.arange(2, dtype=jnp.int32), 4))


def agent_inputs(ro: train_types.Rollout) -> train.AgentInputs:
  """The rollout in the agents' layout: one row of tokens per trajectory,
  the actions its last N tokens (layout L2 with a single turn)."""
  mask = ro.response_mask
  tokens = jnp.concatenate([ro.prompt, ro.response], 1)
  attn = jnp.concatenate([ro.prompt_mask, mask > 0], 1)
  pb = er.PolicyBatch(
      logp=ro.logp, old_logp=ro.logp, advantages=jnp.zeros_like(ro.logp),
      mask=mask, entropy=ro.entropy, old_entropy=ro.entropy,
      rewards=ro.rewards, group_ids=ro.group_ids,
      segment_ids=jnp.where(mask > 0, 0, -1).astype(jnp.int32), aux={})
  return train.AgentInputs(tokens, attn, pb)


def close(a, b, atol=0.0):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(
      np.asarray(x), np.asarray(y), atol=atol, rtol=0), a, b)


def max_change(s1, s0):
  return max(jax.tree.leaves(jax.tree.map(
      lambda a, b: float(jnp.abs(a - b).max()), s1.params, s0.params)))


class AgentTrainStepTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.fns, cls.params = as_functions(Decoder(CFG, rngs=nnx.Rngs(0)))
    cls.opt = optax.adam(1e-2)
    cls.ro = make_rollout()
    cls.inp = agent_inputs(cls.ro)

  def state(self, transform, **kw):
    return train_types.init_train_state(self.params, self.opt, transform, 0,
                                        **kw)

  def stats(self, params, **kw):
    return train.sequence_stats(self.fns, params, self.inp.tokens,
                                self.inp.attn_mask, N, **kw)

  @parameterized.parameters(True, False)
  def test_nonfinite_step_is_skipped_and_counted(self, fused):
    t = er.chain(train.episode_advantages())
    step = jax.jit(train.make_agent_train_step(
        self.fns, er.grpo(), t, self.opt, minibatches=1 if fused else 2))
    s0 = self.state(t)
    # One group: a NaN return makes every advantage (and loss) NaN.
    pb = self.inp.batch
    bad = self.inp._replace(batch=pb._replace(
        rewards=pb.rewards.at[0].set(jnp.nan),
        group_ids=jnp.zeros_like(pb.group_ids)))
    s1, m = step(s0, bad)
    close(s1.params, s0.params)
    close(s1.opt_state, s0.opt_state)
    self.assertEqual(int(s1.nonfinite_steps), 1 if fused else 2)
    self.assertEqual(float(m["nonfinite_steps"]), 1 if fused else 2)
    self.assertEqual(float(m["skipped_steps"]), 1 if fused else 2)
    self.assertEqual(int(s1.step), 1)
    # Training continues: a finite batch updates the params.
    s2, m2 = step(s1, self.inp)
    self.assertEqual(int(s2.nonfinite_steps), int(s1.nonfinite_steps))
    self.assertEqual(float(m2["skipped_steps"]), 0.0)
    self.assertGreater(max_change(s2, s1), 0.0)

  def test_kl_reads_the_reference_pass(self):
    t = er.named_chain(("advantages", train.episode_advantages()),
                       ("kl", regularizers.kl_penalty(0.1, "k3")))
    step = jax.jit(train.make_agent_train_step(self.fns, er.grpo(), t,
                                               self.opt))
    # Reference = policy: on-policy KL is exactly 0.
    _, m = step(self.state(t, ref_params=self.params), self.inp)
    self.assertAlmostEqual(float(m["kl/kl_mean"]), 0.0, places=6)
    # Another reference: the KL term reads its log-probs.
    other = jax.tree.map(lambda x: x * 1.1, self.params)
    _, m = step(self.state(t, ref_params=other), self.inp)
    k = kl_lib.kl_estimate(self.stats(self.params)["logp"],
                           self.stats(other)["logp"], "k3")
    want = ops.masked_mean(k, self.inp.batch.mask)
    self.assertGreater(float(want), 1e-4)
    np.testing.assert_allclose(m["kl/kl_mean"], want, rtol=1e-4)
    with self.assertRaisesRegex(ValueError, "ref_params"):
      step(self.state(t), self.inp)

  def test_compute_dtype(self):
    f32 = self.stats(self.params)
    bf16 = self.stats(self.params, compute_dtype=jnp.bfloat16)
    self.assertEqual(bf16["logp"].dtype, jnp.float32)
    m = np.asarray(self.inp.batch.mask) > 0
    diff = np.abs(np.asarray(bf16["logp"] - f32["logp"]))[m]
    self.assertGreater(diff.max(), 0.0)  # the products ran in bf16
    np.testing.assert_allclose(bf16["logp"], f32["logp"], atol=5e-2)
    np.testing.assert_allclose(bf16["entropy"], f32["entropy"], atol=5e-2)
    t = er.chain(train.episode_advantages())
    s0 = self.state(t)
    out = {}
    for name, cdt in (("f32", None), ("bf16", jnp.bfloat16)):
      step = jax.jit(train.make_agent_train_step(
          self.fns, er.grpo(), t, self.opt, compute_dtype=cdt))
      out[name] = step(s0, self.inp)
    (s_f, m_f), (s_b, m_b) = out["f32"], out["bf16"]
    self.assertEqual(float(m_b["skipped_steps"]), 0.0)
    self.assertGreater(max_change(s_b, s0), 0.0)
    self.assertNotEqual(float(m_b["entropy_before"]),
                        float(m_f["entropy_before"]))
    np.testing.assert_allclose(m_b["entropy_before"], m_f["entropy_before"],
                               atol=2e-2)
    np.testing.assert_allclose(m_b["loss"], m_f["loss"], atol=2e-2)

  @parameterized.named_parameters(
      ("fused", {}),
      ("epochs_minibatches", dict(epochs=2, minibatches=2)),
      ("sampler_logp", dict(recompute_old_logp=False)))
  def test_same_update_as_the_rlvr_layout(self, kw):
    """Prompt + response rows in either layout: the same statistics pass,
    hence the same update and metrics."""
    t = er.chain(regularizers.grpo_advantages(),
                 regularizers.entropy_bonus(0.01))
    obj = er.ppo_clip(0.2)
    s0 = self.state(t)
    s_rl, m_rl = jax.jit(step_lib.make_train_step(
        self.fns, obj, t, self.opt, **kw))(s0, self.ro)
    s_ag, m_ag = jax.jit(train.make_agent_train_step(
        self.fns, obj, t, self.opt, **kw))(s0, self.inp)
    self.assertEqual(set(m_ag), set(m_rl))
    close(s_ag.params, s_rl.params, atol=1e-6)
    close(s_ag.opt_state, s_rl.opt_state, atol=1e-6)
    for k in ("loss", "grad_norm", "entropy_change", "reward",
              "response_length", "sampler_logp"):
      np.testing.assert_allclose(m_ag[k], m_rl[k], atol=1e-6, err_msg=k)
    self.assertGreater(max_change(s_ag, s0), 0.0)

  def test_one_minibatch_is_not_shuffled(self):
    # epochs=2, minibatches=1: both epochs see the rows in order, whatever
    # `shuffle` says (the agent step used to permute them).
    t = er.chain(train.episode_advantages())
    s0 = self.state(t)
    outs = [jax.jit(train.make_agent_train_step(
        self.fns, er.ppo_clip(0.2), t, self.opt, epochs=2, shuffle=sh))(
            s0, self.inp) for sh in (True, False)]
    (s1, m1), (s2, m2) = outs
    close(s1.params, s2.params)
    np.testing.assert_array_equal(m1["loss"], m2["loss"])
    self.assertEqual(int(s1.opt_state[0].count), 2)


if __name__ == "__main__":
  absltest.main()
