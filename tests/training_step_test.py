"""Train steps: fused old pass, epochs/mini-batches, non-finite skip, SFT.

A tiny pure-JAX causal LM (``fake_lm``) keeps compiles short; the sharded
and end-to-end tests use the real decoder.
"""

from typing import Any, NamedTuple

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import optax

import entropy_rl as er
from entropy_rl import regularizers
from entropy_rl.core import ops
from entropy_rl.training import stats_pass
from entropy_rl.training import step as step_lib
from entropy_rl.training import types


def setUpModule():
  # Faster compiles; every test compares programs compiled in the same mode.
  global _OPT
  _OPT = jax.config.values["jax_disable_most_optimizations"]
  jax.config.update("jax_disable_most_optimizations", True)


def tearDownModule():
  jax.config.update("jax_disable_most_optimizations", _OPT)


V, D = 24, 16


class FakeFns(NamedTuple):
  hidden: Any
  head: Any


def fake_lm(seed: int = 0):
  """A causal LM: h_t = tanh(mean_{s<=t, mask}(e_s) W + e_t + p_t)."""
  k = jax.random.split(jax.random.PRNGKey(seed), 4)
  params = {"emb": 0.5 * jax.random.normal(k[0], (V, D)),
            "pos": 0.1 * jax.random.normal(k[1], (32, D)),
            "w": 0.5 * jax.random.normal(k[2], (D, D)),
            "head": 0.5 * jax.random.normal(k[3], (D, V))}

  def hidden(p, tokens, positions, mask, cache=None):
    x = p["emb"][tokens] + p["pos"][positions]
    m = mask[..., None].astype(x.dtype)
    c = jnp.cumsum(x * m, 1) / jnp.maximum(jnp.cumsum(m, 1), 1.0)
    return jnp.tanh(c @ p["w"] + x), cache

  return FakeFns(hidden, lambda p: p["head"]), params


def make_rollout(rows=8, p=3, n=4, seed=0, group=4) -> types.Rollout:
  rng = np.random.default_rng(seed)
  pm = np.ones((rows, p), bool)
  pm[::2, 0] = False
  lens = rng.integers(1, n + 1, size=(rows, 1))
  return types.Rollout(
      prompt=jnp.asarray(rng.integers(4, V, (rows, p)), jnp.int32),
      prompt_mask=jnp.asarray(pm),
      response=jnp.asarray(rng.integers(4, V, (rows, n)), jnp.int32),
      response_mask=jnp.asarray(np.arange(n)[None] < lens, jnp.float32),
      logp=jnp.full((rows, n), -3.0), entropy=jnp.full((rows, n), 2.5),
      rewards=jnp.asarray(rng.integers(0, 2, rows), jnp.float32),
      group_ids=jnp.repeat(jnp.arange(rows // group, dtype=jnp.int32), group))


def chain(*extra):
  return er.named_chain(("advantages", regularizers.grpo_advantages()),
                        *extra)


def close(a, b, atol=1e-6):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(
      np.asarray(x), np.asarray(y), atol=atol, rtol=atol), a, b)


class TrainStepTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.fns, cls.params = fake_lm()
    cls.opt = optax.adam(1e-2)
    cls.ro = make_rollout()

  def state(self, transform, **kw):
    return types.init_train_state(self.params, self.opt, transform, 0, **kw)

  def test_response_stats_match_naive_log_softmax(self):
    st = stats_pass.response_stats(self.fns, self.params, self.ro,
                                   token_chunk=8, vocab_chunk=8)
    tokens, pos, mask = stats_pass.sequence(
        self.ro.prompt, self.ro.prompt_mask, self.ro.response,
        self.ro.response_mask)
    h, _ = self.fns.hidden(self.params, tokens, pos, mask)
    logits = h[:, 2:-1] @ self.params["head"]  # predicts response tokens
    lp = jax.nn.log_softmax(logits)
    want = jnp.take_along_axis(lp, self.ro.response[..., None], -1)[..., 0]
    np.testing.assert_allclose(st["logp"], want, atol=1e-5)
    np.testing.assert_allclose(st["entropy"],
                               -(jnp.exp(lp) * lp).sum(-1), atol=1e-5)

  def test_fused_old_pass_equals_separate_old_pass(self):
    # STEER reads the old entropy; fused: old = sg(current) in one pass.
    t = chain(("steer", regularizers.steer(0.8, 1.2)),
              ("bonus", regularizers.entropy_bonus(0.01)))
    outs = []
    for fuse in (True, False):
      step = jax.jit(step_lib.make_train_step(
          self.fns, er.grpo(), t, self.opt, fuse_old_pass=fuse,
          token_chunk=8, vocab_chunk=8))
      outs.append(step(self.state(t), self.ro))
    (s1, m1), (s2, m2) = outs
    close(s1.params, s2.params)
    for k in ("loss", "entropy_change", "pred_entropy_change",
              "steer/steer_weight_mean", "grad_norm"):
      np.testing.assert_allclose(m1[k], m2[k], atol=1e-6)
    self.assertEqual(int(s1.step), 1)

  def test_realised_entropy_change(self):
    t = chain()
    s0 = self.state(t)
    s1, m = jax.jit(step_lib.make_train_step(
        self.fns, er.grpo(), t, self.opt))(s0, self.ro)
    before = stats_pass.response_stats(self.fns, s0.params, self.ro)["entropy"]
    after = stats_pass.response_stats(self.fns, s1.params, self.ro)["entropy"]
    mean = lambda x: ops.masked_mean(x, self.ro.response_mask)  # noqa
    np.testing.assert_allclose(m["entropy_change"],
                               mean(after) - mean(before), atol=1e-6)
    self.assertIn("pred_entropy_change", m)
    self.assertNotEqual(float(m["entropy_change"]), 0.0)

  def test_epochs_and_minibatches(self):
    t = chain()
    step = jax.jit(step_lib.make_train_step(
        self.fns, er.ppo_clip(0.2), t, self.opt, epochs=2, minibatches=2))
    s, m = step(self.state(t), self.ro)
    self.assertEqual(int(s.step), 1)
    self.assertEqual(int(s.opt_state[0].count), 4)  # 2 x 2 optimizer steps
    # Later mini-batches see the updated policy: the ratio moved off 1.
    self.assertGreater(float(m["approx_kl_old"]) ** 2, 0.0)
    with self.assertRaises(ValueError):
      step_lib.make_train_step(self.fns, er.grpo(), t, self.opt,
                               minibatches=3)(self.state(t), self.ro)

  def test_sampler_logp_as_old_logp(self):
    # recompute_old_logp=False: the ratio is against the sampler's logp.
    t = chain()
    step = jax.jit(step_lib.make_train_step(
        self.fns, er.ppo_clip(0.2), t, self.opt, recompute_old_logp=False))
    _, m = step(self.state(t), self.ro)
    cur = stats_pass.response_stats(self.fns, self.params, self.ro)["logp"]
    want = ops.masked_mean(self.ro.logp - cur, self.ro.response_mask)
    np.testing.assert_allclose(m["approx_kl_old"], want, atol=1e-5)

  def test_kl_reads_reference(self):
    t = chain(("kl", regularizers.kl_penalty(0.1, "k3")))
    step = jax.jit(step_lib.make_train_step(self.fns, er.grpo(), t,
                                            self.opt, minibatches=2))
    other = jax.tree.map(lambda x: x * 1.1, self.params)
    _, m = step(self.state(t, ref_params=self.params), self.ro)
    _, m2 = step(self.state(t, ref_params=other), self.ro)
    # First mini-batch on-policy with ref = params: KL 0; the second moved.
    self.assertGreater(float(m2["kl/kl_mean"]), float(m["kl/kl_mean"]))
    with self.assertRaisesRegex(ValueError, "ref_params"):
      step(self.state(t), self.ro)

  @parameterized.parameters(True, False)
  def test_nonfinite_step_is_skipped_and_counted(self, fused):
    t = chain()
    step = jax.jit(step_lib.make_train_step(
        self.fns, er.grpo(), t, self.opt, fuse_old_pass=fused,
        minibatches=1 if fused else 2))
    s0 = self.state(t)
    bad = self.ro._replace(rewards=self.ro.rewards.at[0].set(jnp.nan))
    s1, m = step(s0, bad)
    close(s1.params, s0.params, atol=0)
    close(s1.opt_state, s0.opt_state, atol=0)
    self.assertEqual(int(s1.nonfinite_steps), 1 if fused else 2)
    self.assertEqual(float(m["nonfinite_steps"]), 1 if fused else 2)
    self.assertEqual(int(s1.step), 1)
    # Training continues: a finite batch updates the params.
    s2, _ = step(s1, self.ro)
    self.assertEqual(int(s2.nonfinite_steps), int(s1.nonfinite_steps))
    diff = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), s2.params,
                        s1.params)
    self.assertGreater(max(jax.tree.leaves(diff)), 0.0)

  def test_apply_gradients_clips(self):
    params = {"w": jnp.zeros(3)}
    grads = {"w": jnp.array([3.0, 4.0, 0.0])}  # norm 5
    opt = optax.sgd(1.0)
    p, _, ok, norm = step_lib.apply_gradients(
        opt, params, opt.init(params), grads, jnp.float32(0.0), 1.0)
    self.assertTrue(bool(ok))
    np.testing.assert_allclose(norm, 5.0)
    np.testing.assert_allclose(p["w"], [-0.6, -0.8, 0.0], atol=1e-6)
    grads = {"w": jnp.array([jnp.inf, 0.0, 0.0])}
    p, _, ok, _ = step_lib.apply_gradients(
        opt, params, opt.init(params), grads, jnp.float32(0.0), 1.0)
    self.assertFalse(bool(ok))
    np.testing.assert_array_equal(p["w"], 0.0)

  def test_step_keys_are_per_step(self):
    s = self.state(chain())
    k0 = types.step_key(s, "rollout")
    self.assertFalse(np.array_equal(k0, types.step_key(s, "loss")))
    s1 = s._replace(step=s.step + 1)
    self.assertFalse(np.array_equal(k0, types.step_key(s1, "rollout")))
    np.testing.assert_array_equal(k0, types.step_key(s, "rollout"))


class PolicyGradientDirectionTest(absltest.TestCase):

  def test_one_step_moves_logp_along_the_advantages(self):
    """The whole path (real decoder, left-padded prompts, masked responses,
    GRPO advantages, GRPO loss, SGD) raises the log-prob of every
    positive-advantage response and lowers every negative one."""
    from flax import nnx  # pylint: disable=g-import-not-at-top
    from entropy_rl import models  # pylint: disable=g-import-not-at-top
    v, b, p, n = 16, 16, 4, 6
    cfg = models.DecoderConfig.tiny(
        vocab_size=v, hidden_size=32, num_layers=2, num_heads=2,
        num_kv_heads=2, intermediate_size=64, tie_word_embeddings=True,
        dtype=jnp.float32, param_dtype=jnp.float32)
    fns, params = models.as_functions(models.Decoder(cfg, rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(0)
    pm = np.ones((b, p), bool)
    pm[:4, :2] = False
    rm = np.ones((b, n), np.float32)
    rm[::3, 4:] = 0.0
    rewards = np.array([1, 1, 0, 0, 0, 1, 0, 1, 0, 0, 0, 1, 1, 1, 1, 1],
                       np.float32)  # The last group ties: advantages 0.
    ro = types.Rollout(
        prompt=jnp.asarray(rng.integers(0, v, (b, p)), jnp.int32),
        prompt_mask=jnp.asarray(pm),
        response=jnp.asarray(rng.integers(0, v, (b, n)), jnp.int32),
        response_mask=jnp.asarray(rm), logp=jnp.zeros((b, n)),
        rewards=jnp.asarray(rewards),
        group_ids=jnp.asarray(np.arange(b) // 4, jnp.int32))
    before = stats_pass.response_stats(fns, params, ro)["logp"]
    ro = ro._replace(logp=before)  # On-policy: ratios start at 1.
    transform = chain()
    opt = optax.sgd(0.05)
    step = jax.jit(step_lib.make_train_step(
        fns, er.grpo(0.2), transform, opt, measure_entropy_change=False))
    state, _ = step(types.init_train_state(params, opt, transform, 0), ro)
    after = stats_pass.response_stats(fns, state.params, ro)["logp"]
    change = np.asarray(((after - before) * rm).sum(1))  # [B]
    group_mean = rewards.reshape(4, 4).mean(1).repeat(4)
    adv = rewards - group_mean
    moved = adv != 0
    np.testing.assert_array_equal(np.sign(change[moved]), np.sign(adv[moved]))
    self.assertGreater(np.corrcoef(adv, change)[0, 1], 0.8)


class SFTStepTest(absltest.TestCase):

  def test_sft_learns_and_skips_nonfinite(self):
    fns, params = fake_lm(1)
    opt = optax.adam(3e-2)
    tokens = jnp.tile(jnp.arange(4, 12, dtype=jnp.int32), (4, 1))
    mask = jnp.ones_like(tokens, bool)
    lm = jnp.zeros(tokens.shape).at[:, 4:].set(1.0)
    batch = types.SFTBatch(tokens, mask, lm)
    step = jax.jit(step_lib.make_sft_step(fns, opt))
    s = types.init_train_state(params, opt)
    _, m0 = step(s, batch)
    for _ in range(30):
      s, m = step(s, batch)
    self.assertLess(float(m["sft_nll"]), 0.3 * float(m0["sft_nll"]))
    self.assertGreater(float(m["sft_token_acc"]), 0.9)
    bad = jax.tree.map(lambda x: x * jnp.nan, s.params)
    s_bad = s._replace(params=bad)
    s2, m2 = step(s_bad, batch)
    self.assertEqual(int(s2.nonfinite_steps), 1)
    self.assertEqual(float(m2["nonfinite_steps"]), 1.0)


if __name__ == "__main__":
  absltest.main()
