"""EGSW, RENT, EM-FT/EM-RL, HAEPO, GRPO-λ, RiskPO, H-DPO (spec §12-17)."""

import math

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

import entropy_rl as er
from tests import test_utils

from entropy_rl.regularizers import _egsw as egsw
from entropy_rl.regularizers import _entropy_min as entropy_min
from entropy_rl.regularizers import _grpo_lambda as grpo_lambda
from entropy_rl.regularizers import _haepo as haepo
from entropy_rl.regularizers import _hdpo as hdpo
from entropy_rl.regularizers import _riskpo as riskpo


def _prep(t, b):
  return er.prepare_batch(b, t, t.init(None))


class EgswTest(absltest.TestCase):

  def test_spec_case(self):
    # A = (1, −1), H = (2, 1), α = 0.5, P = 1 -> softmax(2, −0.5).
    w = egsw.egsw_weights(jnp.array([[1.0], [-1.0]]), jnp.array([[2.0], [1.0]]),
                          jnp.ones((2, 1)), jnp.array([0, 0]), alpha=0.5,
                          temperature=1.0, rescale=False)
    np.testing.assert_allclose(w[:, 0], [0.924142, 0.075858], atol=1e-6)
    w2 = egsw.egsw_weights(jnp.array([[1.0], [-1.0]]),
                           jnp.array([[2.0], [1.0]]), jnp.ones((2, 1)),
                           jnp.array([0, 0]), alpha=0.5, temperature=1.0)
    np.testing.assert_allclose(w2[:, 0], [1.848284, 0.151716], atol=1e-5)

  def test_uniform_limit_and_identity(self):
    b = test_utils.random_batch(0)
    w = egsw.egsw_weights(b.advantages, b.old_entropy, b.mask, b.group_ids,
                          alpha=0.0, temperature=1e9)
    np.testing.assert_allclose(w, b.mask, atol=1e-5)
    l0, g0, _ = test_utils.loss_and_grads(b, er.chain(), er.ppo_clip())
    l1, g1, _ = test_utils.loss_and_grads(b, egsw.egsw(0.0, math.inf),
                                          er.ppo_clip())
    self.assertEqual(float(l0), float(l1))
    np.testing.assert_array_equal(g0[0], g1[0])

  def test_padding_does_not_change_weights(self):
    b = test_utils.random_batch(1, rows=4, tokens=5)
    t = egsw.egsw(0.5, 1.0)
    l0, _, _ = test_utils.loss_and_grads(b, t, er.ppo_clip())
    l1, _, _ = test_utils.loss_and_grads(test_utils.pad_batch(b, 3), t,
                                         er.ppo_clip())
    np.testing.assert_allclose(l0, l1, rtol=1e-5)

  def test_trajectory_mode_is_constant_per_row(self):
    b = test_utils.random_batch(2, rows=4, tokens=6, min_len=6)
    w = egsw.egsw_weights(b.advantages, b.old_entropy, b.mask, b.group_ids,
                          alpha=1.0, temperature=1.0, mode="trajectory")
    np.testing.assert_allclose(w, w[:, :1] * jnp.ones_like(w), rtol=1e-6)
    with self.assertRaisesRegex(ValueError, "step"):
      egsw.egsw(mode="sequence")

  def test_trajectory_weight_is_one_per_sequence_across_lengths(self):
    # One group, rows of 3 and 1 tokens; per-sequence A = (1, −1) and mean
    # H = (2, 1), α = 0.5, P = 1: w = softmax(2, −0.5) = (0.924142,
    # 0.075858) over the two sequences, ×2 rescaled, on every token of the
    # row, also after the short row has ended.
    mask = jnp.array([[1.0, 1, 1], [1, 0, 0]])
    adv = jnp.array([[1.0, 1, 1], [-1, 0, 0]])
    ent = jnp.array([[1.0, 2, 3], [1, 0, 0]])
    for rescale, scale in ((False, 1.0), (True, 2.0)):
      w = egsw.egsw_weights(adv, ent, mask, jnp.array([0, 0]), alpha=0.5,
                            temperature=1.0, mode="trajectory",
                            rescale=rescale)
      np.testing.assert_allclose(
          w, scale * np.array([[0.924142] * 3, [0.075858, 0, 0]]),
          atol=1e-5)


class EntropyMinTest(absltest.TestCase):

  def test_rent_spec_case(self):
    # Rows: entropies (0.5, 1, 1.5) -> −1; (0.2, 0.2) -> −0.2; no answer -> −7.
    ent = jnp.array([[0.5, 1.0, 1.5], [0.2, 0.2, 0.0], [3.0, 3.0, 3.0]])
    mask = jnp.array([[1, 1, 1], [1, 1, 0], [1, 1, 1]], jnp.float32)
    b = test_utils.make_batch(jnp.zeros((3, 3)), jnp.zeros((3, 3)),
                              jnp.zeros((3, 3)), mask, old_entropy=ent,
                              group_ids=[0, 0, 0],
                              aux={"answer_found": jnp.array([1, 1, 0])})
    b2, _, _ = _prep(entropy_min.rent(entropy_base=7.0), b)
    np.testing.assert_allclose(b2.rewards, [-1.0, -0.2, -7.0], atol=1e-6)
    np.testing.assert_allclose(b2.advantages[:, 0],
                               [0.466372, 0.681621, -1.147993], atol=1e-5)

  def test_em_rl_variants(self):
    mask = jnp.array([[1, 1, 1], [1, 1, 0]], jnp.float32)
    r = entropy_min.entropy_rewards(
        jnp.array([[0.5, 1.0, 1.5], [0.0, 0.0, 0.0]]),
        jnp.array([[-0.2, -0.4, -0.3], [0.0, 0.0, 9.0]]), mask)
    np.testing.assert_allclose(r[0], -1.0, atol=1e-6)
    r = entropy_min.entropy_rewards(
        jnp.zeros((2, 3)), jnp.array([[-0.2, -0.4, 0.0], [0.0, 0.0, 0.0]]),
        jnp.array([[1, 1, 0], [1, 1, 1]], jnp.float32), variant="sequence")
    np.testing.assert_allclose(r[0], -0.3, atol=1e-6)
    b = test_utils.random_batch(0, rows=4, groups=1)
    b2, _, _ = _prep(entropy_min.em_rl(), b)
    expected = er.core.advantages.rloo(b2.rewards, b.group_ids)
    np.testing.assert_allclose(b2.advantages[:, 0] * b.mask[:, 0],
                               expected * b.mask[:, 0], rtol=1e-5)

  def test_em_ft_term(self):
    b = test_utils.random_batch(3)
    obj = entropy_min.em_ft_objective()
    loss, (_, h), _ = test_utils.loss_and_grads(b, entropy_min.em_ft(1.0), obj)
    np.testing.assert_allclose(loss, er.aggregate(b.entropy, b.mask,
                                                  "seq-mean-token-mean"),
                               rtol=1e-5)
    self.assertTrue(np.all(np.asarray(h)[np.asarray(b.mask) > 0] > 0))
    l0, _, _ = test_utils.loss_and_grads(b, entropy_min.em_ft(0.0), obj)
    self.assertEqual(float(l0), 0.0)


class HaepoTest(absltest.TestCase):

  def test_spec_case(self):
    s = jnp.array([-1.0, -2.0])
    r = jnp.array([1.0, -1.0])
    j, g = jax.value_and_grad(haepo.plackett_luce_objective)(
        s, r, jnp.array([0, 0]))
    np.testing.assert_allclose(j, 0.462117, atol=1e-6)
    np.testing.assert_allclose(g, [0.393224, -0.393224], atol=1e-6)

  def test_transform_gradient_through_row_sums(self):
    b = test_utils.make_batch([[-0.5, -0.5], [-2.0, 0.0]], jnp.zeros((2, 2)),
                              jnp.zeros((2, 2)), [[1, 1], [1, 0]],
                              rewards=[1.0, -1.0], group_ids=[0, 0])
    t = haepo.haepo(1.0, normalize="none")
    loss, (g, _), _ = test_utils.loss_and_grads(b, t, haepo.haepo_objective())
    np.testing.assert_allclose(loss, -0.462117, atol=1e-6)
    np.testing.assert_allclose(g, [[-0.393224, -0.393224], [0.393224, 0.0]],
                               atol=1e-6)
    l0, _, _ = test_utils.loss_and_grads(b, haepo.haepo(0.0),
                                         haepo.haepo_objective())
    self.assertEqual(float(l0), 0.0)

  def test_kl_and_entropy_terms(self):
    b = test_utils.random_batch(4)
    t = haepo.haepo(1.0, entropy_coef=0.1, kl_coef=0.5)
    _, (_, m) = er.policy_loss(b, t, t.init(None),
                               objective=haepo.haepo_objective())
    k3 = er.core.kl.kl_estimate(b.old_logp, b.logp, "k3")
    np.testing.assert_allclose(m["terms/haepo_kl"],
                               0.5 * er.aggregate(k3, b.mask), rtol=1e-5)


class GrpoLambdaTest(absltest.TestCase):

  def test_spec_case(self):
    # Top group: correct lengths (100, 200), one incorrect.
    r = grpo_lambda.grpo_lambda_rewards(
        jnp.array([1, 1, 0]), jnp.array([100, 200, 150]), jnp.array([0, 0, 0]),
        lam=0.2, alpha=0.6)
    np.testing.assert_allclose(r, [0.838635, 0.561365, 0.0], atol=1e-6)
    np.testing.assert_allclose(er.core.advantages.grpo(r, jnp.zeros(3, int)),
                               [0.870584, 0.221639, -1.092223], atol=1e-5)

  def test_only_top_groups_penalised_and_lambda_zero_is_grpo(self):
    correct = jnp.array([1, 1, 1, 0, 1, 0])
    lengths = jnp.array([10, 20, 30, 5, 7, 9])
    ids = jnp.array([0, 0, 0, 1, 1, 1])
    r = grpo_lambda.grpo_lambda_rewards(correct, lengths, ids, lam=0.5)
    np.testing.assert_allclose(r[3:], [0, 1, 0])  # group 1 not in the top
    self.assertLess(float(r[2]), 1.0)
    r0 = grpo_lambda.grpo_lambda_rewards(correct, lengths, ids, lam=0.0)
    np.testing.assert_array_equal(r0, correct.astype(jnp.float32))


class RiskPOTest(absltest.TestCase):

  def test_spec_case(self):
    rewards = jnp.array([1, 0, 1, 0, 1, 1, 0, 0], jnp.float32)
    adv, scores = riskpo.riskpo_advantages(rewards, group_size=4,
                                           bundle_size=2)
    np.testing.assert_allclose(scores, [[2, 1, 1, 0]])
    expected_q1 = [0.326598, 0.163299, 0.163299, -1.102264]
    np.testing.assert_allclose(adv[:4], expected_q1, atol=1e-5)
    np.testing.assert_allclose(adv[4:], expected_q1, atol=1e-5)
    a = riskpo.riskpo_paper_advantages(
        scores, jnp.array([0.6]), jnp.array([1.4]), alpha=0.2, beta=0.8,
        w_mix=1.5)
    np.testing.assert_allclose(a, [[0.653195, 0.326598, 0.326598, -2.204527]],
                               atol=1e-5)

  def test_transform_modes_and_tracker(self):
    b = test_utils.random_batch(5, rows=8, groups=2)
    b = b._replace(group_ids=jnp.repeat(jnp.arange(2), 4))
    for mode in ("batch", "track", "mix"):
      t = riskpo.riskpo(4, 2, q_mode=mode)
      b2, s, _ = _prep(t, b)
      self.assertTrue(bool(s.ready))
      if mode != "mix":  # first step: tracked == empirical == batch quantiles
        adv, _ = riskpo.riskpo_advantages(b.rewards, group_size=4,
                                          bundle_size=2)
        np.testing.assert_allclose(b2.advantages[:, 0] * b.mask[:, 0],
                                   adv * b.mask[:, 0], atol=1e-5)
    with self.assertRaisesRegex(ValueError, "multiple of bundle_size"):
      riskpo.riskpo_advantages(jnp.zeros(12), group_size=4, bundle_size=2)
    with self.assertRaisesRegex(ValueError, "batch, track, mix"):
      riskpo.riskpo(4, q_mode="ema")


class HdpoTest(parameterized.TestCase):

  @parameterized.named_parameters(("dpo", 1.0, 0.598139),
                                  ("sharper", 0.9, 0.607192))
  def test_spec_case(self, alpha, expected):
    loss, n = hdpo.hdpo_loss(jnp.array([-10.0, -12.0]),
                             jnp.array([-11.0, -11.0]), jnp.array([1, 0]),
                             jnp.array([0, 0]), beta=0.1, alpha=alpha)
    np.testing.assert_allclose(loss, expected, atol=1e-6)
    self.assertEqual(int(n), 1)

  def test_transform_uses_row_sums_and_skips_malformed_pairs(self):
    b = test_utils.make_batch(
        [[-4.0, -6.0], [-12.0, 0.0], [-1.0, -1.0]], jnp.zeros((3, 2)),
        jnp.zeros((3, 2)), [[1, 1], [1, 0], [1, 1]],
        ref_logp=[[-5.0, -6.0], [-11.0, 0.0], [0.0, 0.0]], group_ids=[0, 0, 1],
        aux={"chosen": jnp.array([1, 0, 1])})
    t = hdpo.hdpo(0.1, 1.0)
    _, (_, m) = er.policy_loss(b, t, t.init(None),
                               objective=hdpo.hdpo_objective())
    np.testing.assert_allclose(m["terms/hdpo"], 0.598139, atol=1e-6)
    self.assertEqual(float(m["hdpo_pairs"]), 1.0)


class ComposeTest(absltest.TestCase):

  def test_part2_chain_with_core_transforms_under_jit(self):
    b = test_utils.random_batch(6, rows=8, groups=2)
    b = b._replace(aux={"correct": b.rewards > 0})
    t = er.named_chain(
        ("lam", grpo_lambda.grpo_lambda(0.5)),
        ("egsw", egsw.egsw(0.5, 2.0)),
        ("bonus", er.regularizers.entropy_bonus(0.01)),
        ("kl", er.regularizers.kl_penalty(0.01)))
    b2, s, _ = jax.jit(lambda b, s: er.prepare_batch(b, t, s))(b, t.init(None))
    loss, (_, m) = jax.jit(lambda b, s: er.policy_loss(
        b, t, s, objective=er.dapo()))(b2, s)
    self.assertTrue(np.isfinite(float(loss)))
    self.assertIn("egsw/egsw_w_mean", m)


if __name__ == "__main__":
  absltest.main()
