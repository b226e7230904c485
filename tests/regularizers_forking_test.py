"""Forking-token filter (Wang et al. 2025): hand case and the contract."""

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
from entropy_rl import regularizers as regs
from entropy_rl.core import loss as loss_lib
from tests import test_utils

OBJ = er.dapo()  # the paper's recipe: DAPO, token-mean
H = [[0.1, 2.0, 0.5, 3.0, 0.2], [1.5, 0.3, 0.05, 9.0, 9.0]]
MASK = [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]  # N_valid = 8


def _hand_batch():
  rng = np.random.default_rng(0)
  logp = -rng.random((2, 5))
  return test_utils.make_batch(logp, logp - 0.3 * rng.random((2, 5)),
                               [[1.0] * 5, [-0.5] * 5], MASK, old_entropy=H,
                               entropy=np.zeros((2, 5)))


def _update(transform, batch):
  b = loss_lib.fill_batch(batch, OBJ)
  return transform.update(b, transform.init(None), rng=None,
                          step=jnp.zeros((), jnp.int32))[0]


def _batch(seed=0, rows=8, tokens=16):
  b = test_utils.random_batch(seed, rows, tokens)
  noise = np.random.default_rng(seed + 100).normal(size=b.logp.shape)
  return b._replace(old_logp=b.logp + jnp.asarray(0.4 * noise, jnp.float32))


def _value_and_grad(transform, objective, batch, **kwargs):
  def f(logp, entropy):
    b = batch._replace(logp=logp, entropy=entropy)
    return er.policy_loss(b, transform, transform.init(None),
                          objective=objective, **kwargs)[0]
  return jax.value_and_grad(f, argnums=(0, 1))(batch.logp, batch.entropy)


def _jit_vg(transform, objective, **kwargs):
  return jax.jit(lambda b: _value_and_grad(transform, objective, b, **kwargs))


_PAD_VG = _jit_vg(regs.forking_tokens(0.2), OBJ)


class ForkingHandTest(parameterized.TestCase):

  @parameterized.parameters(
      (0.2, [[0, 1, 0, 1, 0], [0, 0, 0, 0, 0]]),  # k = ⌈1.6⌉ = 2
      (0.25, [[0, 1, 0, 1, 0], [0, 0, 0, 0, 0]]),  # k = ⌈2.0⌉ = 2, not 3
      (0.3, [[0, 1, 0, 1, 0], [1, 0, 0, 0, 0]]),  # k = ⌈2.4⌉ = 3
      (0.05, [[0, 0, 0, 1, 0], [0, 0, 0, 0, 0]]),  # k = max(1, ⌈0.4⌉) = 1
  )
  def test_selection(self, frac, expected):
    out = _update(regs.forking_tokens(frac), _hand_batch())
    np.testing.assert_array_equal(out.weights, expected)
    k = int(np.sum(expected))
    self.assertAlmostEqual(float(out.metrics["forking_frac"]), k / 8)
    self.assertAlmostEqual(float(out.metrics["forking_entropy_threshold"]),
                           sorted([0.1, 2.0, 0.5, 3.0, 0.2, 1.5, 0.3, 0.05],
                                  reverse=True)[k - 1], places=6)

  def test_reference_normalisation(self):
    # The reference drops unselected tokens from the loss mask: token-mean
    # over the k kept tokens. renormalize=True reproduces it exactly.
    b = _hand_batch()
    sel = jnp.asarray([[0, 1, 0, 1, 0], [0, 0, 0, 0, 0]], jnp.float32)
    ref, _ = er.policy_loss(b._replace(mask=sel), er.chain(), (),
                            objective=OBJ)
    got, _ = er.policy_loss(b, regs.forking_tokens(0.2, renormalize=True), (),
                            objective=OBJ)
    np.testing.assert_allclose(got, ref, rtol=1e-6)
    ours, _ = er.policy_loss(b, regs.forking_tokens(0.2), (), objective=OBJ)
    np.testing.assert_allclose(ours, ref * 2 / 8, rtol=1e-6)  # k / N_valid

  def test_current_entropy_flag(self):
    b = _hand_batch()
    b = b._replace(entropy=b.old_entropy, old_entropy=None)
    with self.assertRaisesRegex(ValueError, "old_entropy"):
      er.policy_loss(b, regs.forking_tokens(), (), objective=OBJ)
    out = _update(regs.forking_tokens(0.2, use_current_entropy=True), b)
    np.testing.assert_array_equal(out.weights,
                                  [[0, 1, 0, 1, 0], [0, 0, 0, 0, 0]])

  def test_no_valid_token(self):
    b = _hand_batch()
    out = _update(regs.forking_tokens(0.2),
                  b._replace(mask=jnp.zeros_like(b.mask)))
    np.testing.assert_array_equal(out.weights, 0.0)
    self.assertTrue(all(np.isfinite(v) for v in out.metrics.values()))

  def test_bad_arguments(self):
    for frac in (0.0, 1.5):
      with self.assertRaisesRegex(ValueError, "top_fraction"):
        regs.forking_tokens(frac)


class ForkingContractTest(absltest.TestCase):

  def test_neutral_is_identity(self):
    b = _batch()
    base_l, base_g = _jit_vg(er.chain(), OBJ)(b)
    for t in (regs.forking_tokens(1.0),
              regs.forking_tokens(1.0, renormalize=True)):
      l, g = _jit_vg(t, OBJ)(b)
      self.assertEqual(float(l), float(base_l))
      for x, y in zip(g, base_g):
        np.testing.assert_array_equal(x, y)

  def test_jit_equals_no_jit(self):
    b, t = _batch(2), regs.forking_tokens(0.2, renormalize=True)
    l, g = _value_and_grad(t, OBJ, b)
    lj, gj = _jit_vg(t, OBJ)(b)
    np.testing.assert_allclose(lj, l, rtol=1e-6, atol=1e-7)
    for x, y in zip(gj, g):
      np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-8)
    base, _ = _jit_vg(er.chain(), OBJ)(b)
    self.assertGreater(abs(float(l) - float(base)), 1e-4)

  def test_static_shapes(self):
    t = regs.forking_tokens(0.2)
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def f(b):
      return _value_and_grad(t, OBJ, b)

    self.assertEqual(jax.eval_shape(f, _batch(0))[0].shape, ())
    for seed in range(3):
      l, _ = f(_batch(seed))
      self.assertTrue(np.isfinite(l))

  @settings(max_examples=6, deadline=None)
  @given(st.sampled_from([(3, 0), (0, 2), (3, 2)]), st.integers(0, 10**6))
  def test_padding_invariance(self, pads, seed):
    b = _batch(seed, rows=4, tokens=8)
    l, (g, _) = _PAD_VG(b)
    lp, (gp, _) = _PAD_VG(test_utils.pad_batch(b, *pads))
    np.testing.assert_allclose(lp, l, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gp[:4, :8], g, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(gp[:, 8:], 0.0)
    np.testing.assert_array_equal(gp[4:], 0.0)

  def test_stat_scope_equals_manual_micro_batches(self):
    b, t = _batch(3), regs.forking_tokens(0.2)
    scoped, (g, _) = _jit_vg(t, OBJ, stat_scope=4)(b)
    vg = _jit_vg(t, OBJ)
    parts = [vg(jax.tree.map(lambda x, i=i: x[4 * i:4 * i + 4], b))
             for i in range(2)]
    np.testing.assert_allclose(scoped, np.mean([p[0] for p in parts]),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        g, np.concatenate([p[1][0] for p in parts]) / 2, rtol=1e-5, atol=1e-9)


if __name__ == "__main__":
  absltest.main()
