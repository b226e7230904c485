"""Objectives and aggregation: spec §0 and §1 hand-computed cases."""

import math

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

import entropy_rl as er
from tests import test_utils

INF = math.inf


def _token_loss_and_grad(objective, batch):
  def f(logp):
    b = er.core.loss.fill_batch(batch._replace(logp=logp), objective)
    tok, _ = objective.token_loss(b)
    return tok.sum(), tok

  (_, tok), g = jax.value_and_grad(f, has_aux=True)(batch.logp)
  return np.asarray(tok), np.asarray(g)


class AggregateTest(parameterized.TestCase):
  # X=[[1,2,3],[4,5,·]], M=[[1,1,1],[1,1,0]], L_max=3 (spec §0).
  X = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 99.0]])
  M = jnp.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])

  @parameterized.named_parameters(
      ("token_mean", "token-mean", "verl", 3.0),  # 15 / 5
      ("seq_mean_token_mean", "seq-mean-token-mean", "verl", 3.25),  # (2+4.5)/2
      ("seq_mean_token_sum", "seq-mean-token-sum", "verl", 7.5),  # (6+9)/2
      ("smtsn_verl", "seq-mean-token-sum-norm", "verl", 5.0),  # 15 / 3
      ("smtsn_mean", "seq-mean-token-sum-norm", "mean", 2.5),  # 7.5 / 3
  )
  def test_spec_values(self, mode, variant, expected):
    got = er.aggregate(self.X, self.M, mode, l_max=3, smtsn=variant)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    got_jit = jax.jit(lambda x, m: er.aggregate(x, m, mode, 3, variant))(
        self.X, self.M)
    np.testing.assert_allclose(got_jit, expected, rtol=1e-6)

  def test_empty_row_counts_zero_in_seq_mean(self):
    m = self.M.at[1].set(0.0)
    np.testing.assert_allclose(
        er.aggregate(self.X, m, "seq-mean-token-mean"), 1.0)  # (2 + 0) / 2

  def test_unknown_mode_lists_valid(self):
    with self.assertRaisesRegex(ValueError, "token-mean.*seq-mean-token-sum"):
      er.aggregate(self.X, self.M, "sum")
    with self.assertRaisesRegex(ValueError, "unknown aggregation mode"):
      er.ppo_clip(agg="mean")


class PPOTableTest(absltest.TestCase):
  """Spec §1.3 with ε_l=0.2, ε_h=0.28, c=3."""

  def test_table(self):
    adv = [1, 1, -1, -1, -1, 1]
    rho = [1.5, 0.5, 0.5, 1.5, 5.0, 1.1]
    b = test_utils.make_batch(np.log(rho)[None], np.zeros((1, 6)), [adv],
                              np.ones((1, 6)))
    tok, g = _token_loss_and_grad(er.ppo_clip(0.2, 0.28, dual_c=3.0), b)
    np.testing.assert_allclose(tok[0], [-1.28, -0.5, 0.8, 1.5, 3.0, -1.1],
                               atol=1e-5)
    # Gradient zero where the clipped branch or the dual-clip bound is active.
    self.assertEqual(list(np.abs(g[0]) > 0),
                     [False, True, False, True, False, True])
    # Active rows: d(-A rho)/dlogp = -A rho.
    np.testing.assert_allclose(g[0][[1, 3, 5]], [-0.5, 1.5, -1.1], atol=1e-5)

  def test_unclipped_is_nan_free(self):
    # eps=inf in a where-branch must not leak inf*0 = NaN into gradients.
    b = test_utils.make_batch([[-0.5, -0.7]], [[-0.6, -0.6]], [[1.0, -1.0]],
                              [[1.0, 1.0]])
    tok, g = _token_loss_and_grad(er.ppo_clip(INF, INF), b)
    self.assertTrue(np.all(np.isfinite(g)))
    np.testing.assert_allclose(g[0], -np.array([1.0, -1.0]) *
                               np.exp([0.1, -0.1]), rtol=1e-6)
    np.testing.assert_allclose(tok[0], [-np.exp(0.1), np.exp(-0.1)],
                               rtol=1e-6)

  def test_dual_clip_off_by_default(self):
    b = test_utils.make_batch([[np.log(5.0)]], [[0.0]], [[-1.0]], [[1.0]])
    tok, _ = _token_loss_and_grad(er.ppo_clip(0.2), b)
    np.testing.assert_allclose(tok, [[5.0]], rtol=1e-6)


class PresetTest(absltest.TestCase):

  def test_presets(self):
    d = er.dapo()
    self.assertEqual((d.clip.eps_low, d.clip.eps_high, d.clip.dual_c, d.agg),
                     (0.2, 0.28, 10.0, "token-mean"))
    g = er.grpo()
    self.assertEqual(g.agg, "seq-mean-token-mean")
    dr = er.dr_grpo(l_max=16)
    self.assertEqual((dr.agg, dr.l_max, dr.smtsn),
                     ("seq-mean-token-sum-norm", 16, "mean"))

  def test_gspo_sequence_ratio(self):
    # Row log-ratios (0.2, 0.0) over 2 valid tokens -> s = exp(0.1), A = +1.
    b = test_utils.make_batch([[0.2, 0.0, 5.0]], [[0.0, 0.0, 0.0]],
                              [[1.0, 1.0, 1.0]], [[1.0, 1.0, 0.0]])
    obj = er.gspo(eps_low=0.2, eps_high=0.2)
    tok, g = _token_loss_and_grad(obj, b)
    np.testing.assert_allclose(tok[0, :2], [-np.exp(0.1)] * 2, rtol=1e-6)
    # Clipped when the sequence ratio leaves [1-eps, 1+eps]: zero gradient.
    obj = er.gspo(eps_low=0.01, eps_high=0.01)
    tok, g = _token_loss_and_grad(obj, b)
    np.testing.assert_allclose(tok[0, :2], [-1.01] * 2, rtol=1e-6)
    np.testing.assert_allclose(g[0, :2], [0.0, 0.0], atol=1e-7)

  def test_reinforce_gradient(self):
    b = test_utils.make_batch([[-1.0, -2.0]], [[-1.0, -2.0]], [[2.0, -1.0]],
                              [[1.0, 1.0]])
    tok, g = _token_loss_and_grad(er.reinforce(), b)
    np.testing.assert_allclose(g[0], [-2.0, 1.0], rtol=1e-6)

  def test_objective_knob_check(self):
    from entropy_rl import regularizers
    del regularizers
    b = test_utils.random_batch()

    def set_clip(batch, state, *, rng=None, step=None, **kw):
      return batch._replace(clip=batch.clip._replace(
          grad_low=batch.clip.grad_low + 1.0)), state

    t = er.EntropyTransform(er.init_empty_state, set_clip)
    with self.assertRaisesRegex(ValueError, "gspo objective does not honour"):
      er.policy_loss(b, t, (), objective=er.gspo())
    er.policy_loss(b, t, (), objective=er.ppo_clip())  # honoured: fine


if __name__ == "__main__":
  absltest.main()
