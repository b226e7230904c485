"""Entrocraft (docs/specs/entrocraft.md): hand values and the contract."""

from absl.testing import absltest
import chex
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax

import entropy_rl as er
from entropy_rl import regularizers as regs
from tests import test_utils

OBJ = er.grpo(0.2, "token-mean")  # the reference run's surrogate
INF = float("inf")
MASK = [[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 0]]
A_ROW = [1.0, -1.0, 0.0, 0.5]


def _hand_batch():
  # Spec (f): 8 valid tokens, H̄ = 3.7 / 8 = 0.4625 (the 9.0s are padding).
  h = [[0.2, 0.4, 0.6], [0.3, 0.5, 9.0], [0.1, 9.0, 9.0], [0.7, 0.9, 9.0]]
  lp = np.full((4, 3), np.log(0.5))
  adv = np.asarray(A_ROW)[:, None] * np.asarray(MASK)
  return test_utils.make_batch(lp, lp, adv, MASK, old_entropy=h, entropy=h,
                               group_ids=[0, 0, 1, 1])


def _prep(t, b, step=0):
  return er.prepare_batch(b, t, t.init(None), step=step)


def _random(seed=0, rows=8, tokens=16):
  return test_utils.random_batch(seed, rows, tokens)


def _prep_loss(t, b):
  """prepare_batch, then policy_loss and its gradients w.r.t. (logp, H)."""
  state = t.init(None)
  pb, state, _ = er.prepare_batch(b, t, state, step=0)
  loss, grads, _ = test_utils.loss_and_grads(pb, t, OBJ, state=state)
  return pb.advantages, loss, grads


_PREP_LOSS = {k: jax.jit(lambda b, t=t: _prep_loss(t, b)) for k, t in {
    "neutral": regs.entrocraft(0.0, INF), "default": regs.entrocraft(),
    "plain": er.chain()}.items()}


class EntrocraftHandTest(absltest.TestCase):

  def test_entropy_too_low_keeps_non_positive_rows(self):
    out, _, m = _prep(regs.entrocraft(0.6, 0.7), _hand_batch())
    np.testing.assert_array_equal(
        out.advantages, [[0, 0, 0], [-1, -1, 0], [0, 0, 0], [0, 0, 0]])
    np.testing.assert_allclose(m["entrocraft_entropy"], 0.4625, rtol=1e-6)
    self.assertEqual(float(m["entrocraft_direction"]), -1.0)
    self.assertEqual(float(m["entrocraft_keep_frac"]), 0.5)

  def test_entropy_too_high_keeps_non_negative_rows(self):
    out, _, m = _prep(regs.entrocraft(0.2, 0.4), _hand_batch())
    np.testing.assert_array_equal(
        out.advantages, [[1, 1, 1], [0, 0, 0], [0, 0, 0], [0.5, 0.5, 0]])
    self.assertEqual(float(m["entrocraft_direction"]), 1.0)
    self.assertEqual(float(m["entrocraft_keep_frac"]), 0.75)

  def test_in_band_keeps_everything(self):
    b = _hand_batch()
    out, _, m = _prep(regs.entrocraft(0.4, 0.5), b)
    np.testing.assert_array_equal(out.advantages, b.advantages)
    self.assertEqual(float(m["entrocraft_direction"]), 0.0)
    self.assertEqual(float(m["entrocraft_keep_frac"]), 1.0)

  def test_hand_loss_and_gradient(self):
    # ρ = 1 (inside the clip): loss = −Σ A'·m / 8, ∂loss/∂ℓ = −A'·m / 8.
    for (lo, hi), want in (((0.4, 0.5), -0.25), ((0.6, 0.7), 0.25),
                           ((0.2, 0.4), -0.5)):
      t = regs.entrocraft(lo, hi)
      pb, _, _ = _prep(t, _hand_batch())
      loss, (g, _), _ = test_utils.loss_and_grads(pb, t, OBJ, state=())
      np.testing.assert_allclose(loss, want, rtol=1e-6, err_msg=str(lo))
      np.testing.assert_allclose(g, -np.asarray(pb.advantages) / 8,
                                 atol=1e-7, err_msg=str(lo))

  def test_linear_schedule(self):
    t = regs.entrocraft(optax.linear_schedule(0.6, 0.4, 10),
                        optax.linear_schedule(0.7, 0.5, 10))
    _, _, m = _prep(t, _hand_batch(), step=5)  # band (0.5, 0.6): too low
    np.testing.assert_allclose(m["entrocraft_h_low"], 0.5, rtol=1e-6)
    np.testing.assert_allclose(m["entrocraft_h_high"], 0.6, rtol=1e-6)
    self.assertEqual(float(m["entrocraft_direction"]), -1.0)
    _, _, m = _prep(t, _hand_batch(), step=9)  # band (0.42, 0.52): inside
    self.assertEqual(float(m["entrocraft_direction"]), 0.0)

  def test_token_advantages_use_the_row_mean(self):
    b = _hand_batch()
    b = b._replace(advantages=b.advantages.at[0].set([2.0, -1.0, -0.5]))
    out, _, _ = _prep(regs.entrocraft(0.6, 0.7), b)  # Ā_0 = 1/6 > 0
    np.testing.assert_array_equal(out.advantages[0], [0, 0, 0])
    out, _, _ = _prep(regs.entrocraft(0.2, 0.4), b)
    np.testing.assert_array_equal(out.advantages[0], [2.0, -1.0, -0.5])

  def test_advantages_carry_no_gradient(self):
    t = regs.entrocraft(0.6, 0.7)
    g = jax.grad(lambda h: jnp.sum(_prep(
        t, _hand_batch()._replace(old_entropy=h))[0].advantages))(
            _hand_batch().old_entropy)
    np.testing.assert_array_equal(g, np.zeros((4, 3)))

  def test_needs_old_entropy(self):
    t = regs.entrocraft()
    self.assertEqual(t.needs.fields, frozenset({"old_entropy"}))
    with self.assertRaisesRegex(ValueError, "old_entropy"):
      _prep(t, _hand_batch()._replace(old_entropy=None))

  def test_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, "h_low <= h_high"):
      regs.entrocraft(0.7, 0.6)
    with self.assertRaisesRegex(ValueError, "h_low <= h_high"):
      regs.entrocraft(float("nan"), 0.6)


class EntrocraftContractTest(absltest.TestCase):

  def test_neutral_is_identity_on_a_padded_batch(self):
    b = test_utils.pad_batch(_random(0), 3, 2)
    a0, l0, g0 = _PREP_LOSS["plain"](b)
    a1, l1, g1 = _PREP_LOSS["neutral"](b)
    np.testing.assert_array_equal(a1, a0)
    self.assertEqual(float(l1), float(l0))
    chex.assert_trees_all_equal(g1, g0)
    _, l2, _ = _PREP_LOSS["default"](b)  # H̄ ≈ 1.6 > 0.7: rows rejected
    self.assertGreater(abs(float(l2) - float(l0)), 1e-4)

  def test_jit_equals_no_jit(self):
    b, t = _random(1), regs.entrocraft()
    a, l, g = _prep_loss(t, b)
    aj, lj, gj = _PREP_LOSS["default"](b)
    np.testing.assert_array_equal(aj, a)
    np.testing.assert_allclose(lj, l, rtol=1e-6, atol=1e-7)
    for x, y in zip(gj, g):
      np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-8)

  def test_composes_in_a_chain(self):
    # GRPO advantages -> Entrocraft (prepare) -> STEER + entropy bonus (loss)
    # equals the same pieces applied one after the other.
    b = _random(2)
    adv, ec = regs.grpo_advantages(), regs.entrocraft(0.6, 0.7)
    loss_side = er.chain(regs.steer(0.8, 1.2), regs.entropy_bonus(0.01))
    t = er.chain(adv, ec, loss_side)
    pb, state, m = er.prepare_batch(b, t, t.init(None))
    loss, grads, _ = test_utils.loss_and_grads(pb, t, OBJ, state=state)
    p1, _, _ = er.prepare_batch(b, adv, ())
    p2, _, m2 = er.prepare_batch(p1, ec, ())
    np.testing.assert_array_equal(pb.advantages, p2.advantages)
    self.assertEqual(float(m["entrocraft_direction"]), 1.0)
    np.testing.assert_array_equal(m["entrocraft_keep_frac"],
                                  m2["entrocraft_keep_frac"])
    loss2, grads2, _ = test_utils.loss_and_grads(p2, loss_side, OBJ)
    np.testing.assert_allclose(loss, loss2, rtol=1e-6)
    for x, y in zip(grads, grads2):
      np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-9)

  def test_gradient_of_rejected_rows_is_zero(self):
    b = _random(3)
    a, _, (g, _) = _PREP_LOSS["default"](b)
    _, _, (g0, _) = _PREP_LOSS["plain"](b)
    rejected = np.asarray(jnp.all(a == 0, -1) & jnp.any(b.advantages != 0, -1))
    self.assertTrue(rejected.any())
    np.testing.assert_array_equal(g[rejected], 0.0)
    # Kept rows: same gradient as without the filter (same denominator).
    np.testing.assert_allclose(g[~rejected], g0[~rejected], rtol=1e-6,
                               atol=1e-9)

  @settings(max_examples=8, deadline=None)
  @given(st.sampled_from([(3, 0), (0, 2), (3, 2)]), st.integers(0, 10**6))
  def test_padding_invariance(self, pads, seed):
    b = _random(seed, rows=4, tokens=8)
    a, l, (g, _) = _PREP_LOSS["default"](b)
    ap, lp, (gp, _) = _PREP_LOSS["default"](test_utils.pad_batch(b, *pads))
    np.testing.assert_array_equal(ap[:4, :8], a)
    np.testing.assert_allclose(lp, l, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gp[:4, :8], g, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(gp[:, 8:], 0.0)
    np.testing.assert_array_equal(gp[4:], 0.0)

  def test_traces_once(self):
    t = regs.entrocraft(optax.linear_schedule(0.6, 0.4, 10), 0.7)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def f(b, step):
      pb, _, m = er.prepare_batch(b, t, (), step=step)
      return er.policy_loss(pb, t, (), objective=OBJ)[0], m

    chex.clear_trace_counter()
    for seed in range(3):
      loss, m = f(_random(seed), jnp.asarray(seed, jnp.int32))
      self.assertTrue(np.isfinite(loss))
      self.assertTrue(all(np.isfinite(v) for v in m.values()))


if __name__ == "__main__":
  absltest.main()
