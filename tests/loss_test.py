"""policy_loss / prepare_batch: padding, jit, scopes, bad input, non-finite."""

import math

from absl.testing import absltest
from absl.testing import parameterized
import chex
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np

import entropy_rl as er
from entropy_rl import regularizers
from tests import test_utils

OBJECTIVES = {
    "ppo": er.ppo_clip(0.2, 0.28, dual_c=3.0),
    "grpo": er.grpo(),
    "dr_grpo": er.dr_grpo(l_max=16),
    "gspo": er.gspo(0.1, 0.1),
    "reinforce": er.reinforce(),
}


def _chain():
  return er.chain(regularizers.entropy_bonus(0.01),
                  regularizers.kl_penalty(0.05, "k3"))


class PaddingTest(parameterized.TestCase):

  @settings(deadline=None, max_examples=12)
  @given(seed=st.integers(0, 1000), extra=st.integers(1, 5),
         name=st.sampled_from(sorted(OBJECTIVES)),
         all_zero_row=st.booleans())
  def test_padded_tokens_change_nothing(self, seed, extra, name, all_zero_row):
    b = test_utils.random_batch(seed, rows=4, tokens=6, groups=2)
    if all_zero_row:
      b = b._replace(mask=b.mask.at[0].set(0.0),
                     advantages=b.advantages.at[0].set(0.0))
    obj = OBJECTIVES[name]
    if name == "dr_grpo":
      obj = er.dr_grpo(l_max=6)
    t = _chain()
    l0, (g0, h0), _ = test_utils.loss_and_grads(b, t, obj)
    padded = test_utils.pad_batch(b, extra)
    l1, (g1, h1), _ = test_utils.loss_and_grads(padded, t, obj)
    np.testing.assert_allclose(l1, l0, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(g1[:, :6], g0, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(h1[:, :6], h0, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(g1[:, 6:], 0.0)
    np.testing.assert_array_equal(h1[:, 6:], 0.0)

  @settings(deadline=None, max_examples=8)
  @given(seed=st.integers(0, 1000), rows=st.integers(1, 3))
  def test_padded_rows_change_nothing_under_token_mean(self, seed, rows):
    b = test_utils.random_batch(seed, rows=4, tokens=5)
    obj = er.ppo_clip(0.2, 0.28, dual_c=3.0)
    l0, _, _ = test_utils.loss_and_grads(b, _chain(), obj)
    l1, _, _ = test_utils.loss_and_grads(test_utils.pad_batch(b, 0, rows),
                                         _chain(), obj)
    # atol: the loss can sit near 0 (seed=150: -8.4e-5, the padded sum
    # differing by 4.7e-9 in float32).
    np.testing.assert_allclose(l1, l0, rtol=1e-5, atol=1e-7)


class JitTest(parameterized.TestCase):

  @parameterized.named_parameters(*[(k, k) for k in sorted(OBJECTIVES)])
  def test_jit_equals_eager(self, name):
    b = test_utils.random_batch(5)
    obj, t = OBJECTIVES[name], _chain()
    f = lambda b: er.policy_loss(b, t, t.init(None), objective=obj)
    l0, (_, m0) = f(b)
    l1, (_, m1) = jax.jit(f)(b)
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    for k in m0:
      np.testing.assert_allclose(m1[k], m0[k], rtol=1e-5, atol=1e-6,
                                 err_msg=k)

  def test_single_trace_for_same_shapes(self):
    t = _chain()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def f(b):
      return er.policy_loss(b, t, t.init(None), objective=er.dapo())[0]

    for seed in range(3):
      f(test_utils.random_batch(seed))


class ScopeTest(absltest.TestCase):

  def test_scope_equals_manual_microbatches(self):
    b = test_utils.random_batch(7, rows=8, tokens=10, groups=4)
    obj, t = er.ppo_clip(0.2, 0.28), _chain()
    loss, (_, m) = er.policy_loss(b, t, t.init(None), objective=obj,
                                  stat_scope=2)
    manual = [er.policy_loss(jax.tree.map(lambda x: x[i:i + 2], b), t,
                             t.init(None), objective=obj)
              for i in range(0, 8, 2)]
    np.testing.assert_allclose(loss, np.mean([x[0] for x in manual]),
                               rtol=1e-6)
    np.testing.assert_allclose(
        m["entropy"], np.mean([x[1][1]["entropy"] for x in manual]), rtol=1e-6)
    whole, _ = er.policy_loss(b, t, t.init(None), objective=obj)
    self.assertGreater(abs(float(whole) - float(loss)), 1e-6)

  def test_scope_must_divide(self):
    b = test_utils.random_batch(0, rows=6)
    with self.assertRaisesRegex(ValueError, "divisor of the batch size 6"):
      er.policy_loss(b, er.chain(), (), objective=er.ppo_clip(), stat_scope=4)


class BadInputTest(absltest.TestCase):

  def test_wrong_rank(self):
    b = test_utils.random_batch(0)
    with self.assertRaisesRegex(ValueError, r"logp must have rank 2 \[B, T\], "
                                r"got shape \(8, 16, 1\)"):
      er.policy_loss(b._replace(logp=b.logp[..., None]), er.chain(), (),
                     objective=er.ppo_clip())

  def test_mismatched_token_field(self):
    b = test_utils.random_batch(0)
    with self.assertRaisesRegex(ValueError, r"old_logp has shape \(8, 15\), "
                                r"expected \(8, 16\)"):
      er.policy_loss(b._replace(old_logp=b.old_logp[:, 1:]), er.chain(), (),
                     objective=er.ppo_clip())

  def test_mismatched_row_field(self):
    b = test_utils.random_batch(0)
    with self.assertRaisesRegex(ValueError, r"rewards has shape \(7,\)"):
      er.policy_loss(b._replace(rewards=b.rewards[1:]), er.chain(), (),
                     objective=er.ppo_clip())

  def test_missing_needed_field(self):
    b = test_utils.random_batch(0)._replace(entropy=None)
    t = er.chain(regularizers.entropy_bonus(0.1))
    with self.assertRaisesRegex(ValueError, r"needs PolicyBatch fields "
                                r"\['entropy'\]"):
      er.policy_loss(b, t, t.init(None), objective=er.ppo_clip())

  def test_per_row_advantages_are_broadcast(self):
    b = test_utils.random_batch(0)
    row_adv = b.advantages[:, 0]
    l0, _ = er.policy_loss(b._replace(advantages=row_adv[:, None] * b.mask),
                           er.chain(), (), objective=er.ppo_clip())
    l1, _ = er.policy_loss(b._replace(advantages=row_adv), er.chain(), (),
                           objective=er.ppo_clip())
    np.testing.assert_allclose(l0, l1, rtol=1e-6)


class NonFiniteTest(absltest.TestCase):

  def test_nonfinite_loss_is_reported(self):
    b = test_utils.random_batch(0)
    _, (_, m) = er.policy_loss(b, er.chain(), (), objective=er.ppo_clip())
    self.assertEqual(float(m["nonfinite"]), 0.0)
    bad = b._replace(advantages=b.advantages.at[0, 0].set(jnp.nan))
    _, (_, m) = er.policy_loss(bad, er.chain(), (), objective=er.ppo_clip())
    self.assertEqual(float(m["nonfinite"]), 1.0)
    _, (_, m) = er.policy_loss(bad, er.chain(), (), objective=er.ppo_clip(),
                               stat_scope=4)
    self.assertEqual(float(m["nonfinite"]), 1.0)


class ObservabilityTest(absltest.TestCase):

  def test_entropy_metrics_by_hand(self):
    # Valid tokens: logp (-1, -2, -3), A (1, 1, -1), H (0.5, 1.0, 2.0).
    b = test_utils.make_batch([[-1.0, -2.0], [-3.0, 0.0]],
                              [[-1.0, -2.0], [-3.0, 0.0]],
                              [[1.0, 1.0], [-1.0, 0.0]],
                              [[1.0, 1.0], [1.0, 0.0]],
                              entropy=[[0.5, 1.0], [2.0, 9.0]])
    _, (_, m) = er.policy_loss(b, er.chain(), (), objective=er.ppo_clip())
    # mean logp -2, mean A 1/3: cov = mean((1)(2/3), (0)(2/3), (-1)(-4/3)) = 2/3.
    np.testing.assert_allclose(m["cov_logp_adv"], 2.0 / 3.0, rtol=1e-6)
    np.testing.assert_allclose(m["pred_entropy_change"], -2.0 / 3.0,
                               rtol=1e-6)
    np.testing.assert_allclose(m["entropy"], 3.5 / 3.0, rtol=1e-6)
    np.testing.assert_allclose(m["entropy_q50"], 1.0, rtol=1e-6)
    np.testing.assert_allclose(m["nll"], 2.0, rtol=1e-6)


class PrepareTest(absltest.TestCase):

  def test_prepare_runs_under_jit_and_updates_state(self):
    t = er.named_chain(("adapt", regularizers.adaptive_entropy(
        2.0, init_coef=0.01, lr=0.1, max_coef=1.0)))
    b = test_utils.random_batch(0)

    @jax.jit
    def prep(b, s):
      return er.prepare_batch(b, t, s, step=0)

    _, s1, m = prep(b, t.init(None))
    h = er.core.ops.masked_mean(b.old_entropy, b.mask)
    np.testing.assert_allclose(s1["adapt"].coef, 0.01 + 0.1 * (2.0 - h),
                               rtol=1e-5)
    self.assertIn("adapt/entropy_coef", m)


if __name__ == "__main__":
  absltest.main()
