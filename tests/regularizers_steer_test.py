"""STEER (spec §2): hand-computed weights and the transform contract."""

from absl.testing import absltest
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

OBJ = er.dapo()  # the STEER recipe: 0.2/0.28, dual clip 10, token-mean


def _hand_batch():
  # Seq 1: A=+1, 3 tokens; seq 2: A=-1, 2 valid tokens; ℓ = ℓ° (spec §2 (f)).
  pi = np.array([[0.9, 0.5, 0.2], [0.8, 0.1, 0.5]])
  h = np.array([[0.4, 1.2, 2.0], [0.6, 2.5, 0.0]])
  return test_utils.make_batch(np.log(pi), np.log(pi), [[1, 1, 1], [-1] * 3],
                               [[1, 1, 1], [1, 1, 0]], old_entropy=h,
                               entropy=h)


def _update(transform, batch, rng=None):
  b = loss_lib.fill_batch(batch, OBJ)
  return transform.update(b, transform.init(None), rng=rng,
                          step=jnp.zeros((), jnp.int32))[0]


def _batch(seed=0, rows=8, tokens=16):
  """A random batch with a wide log-ratio spread (some tokens clipped)."""
  b = test_utils.random_batch(seed, rows, tokens)
  noise = np.random.default_rng(seed + 100).normal(size=b.logp.shape)
  return b._replace(old_logp=b.logp + jnp.asarray(0.4 * noise, jnp.float32))


def _value_and_grad(transform, objective, batch, rng=None, **kwargs):
  """policy_loss and its gradients w.r.t. (logp, entropy)."""
  def f(logp, entropy):
    b = batch._replace(logp=logp, entropy=entropy)
    return er.policy_loss(b, transform, transform.init(None),
                          objective=objective, rng=rng, **kwargs)[0]
  return jax.value_and_grad(f, argnums=(0, 1))(batch.logp, batch.entropy)


def _jit_vg(transform, objective, **kwargs):
  """A jitted ``batch -> (loss, grads)`` (one compile per batch shape)."""
  return jax.jit(lambda b: _value_and_grad(transform, objective, b, **kwargs))


_PAD_VG = _jit_vg(regs.steer(0.8, 1.2), OBJ)


class SteerHandTest(absltest.TestCase):

  def test_omega(self):
    omega = regs.token_entropy_change(loss_lib.fill_batch(_hand_batch(), OBJ),
                                      _hand_batch().old_entropy)
    np.testing.assert_allclose(
        omega, [[0.029464, 0.253426, 0.312450], [0.075371, 0.177673, 0]],
        atol=1e-6)

  def test_linear_weights(self):
    b = _update(regs.steer(0.8, 1.2), _hand_batch())
    np.testing.assert_allclose(
        b.weights, [[1.2, 0.883429, 0.8], [1.135110, 0.990506, 0]], atol=1e-6)
    np.testing.assert_allclose(b.metrics["steer_weight_min"], 0.8, atol=1e-6)
    np.testing.assert_allclose(b.metrics["steer_weight_max"], 1.2, atol=1e-6)
    np.testing.assert_allclose(b.metrics["steer_omega_max"], 0.312450,
                               atol=1e-6)

  def test_exp_weights(self):
    b = _update(regs.steer(0.8, mode="exp"), _hand_batch())
    np.testing.assert_allclose(
        b.weights, [[0.979177, 0.834443, 0.8], [0.947595, 0.880831, 0]],
        atol=1e-6)

  def test_zero_advantage_gets_max_weight(self):
    b = _hand_batch()
    b = b._replace(advantages=b.advantages.at[0, 1].set(0.0))
    w = _update(regs.steer(0.8, 1.2), b).weights
    self.assertAlmostEqual(float(w[0, 1]), 1.2, places=6)
    w = _update(regs.steer(0.8, mode="exp"), b).weights
    self.assertAlmostEqual(float(w[0, 1]), 1.0, places=6)

  def test_constant_omega_gives_mid_weight(self):
    b = _hand_batch()
    b = b._replace(advantages=jnp.zeros_like(b.advantages))
    np.testing.assert_allclose(_update(regs.steer(0.8, 1.2), b).weights,
                               [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])

  def test_no_valid_token_gives_zero_weights(self):
    b = _hand_batch()
    b = b._replace(mask=jnp.zeros_like(b.mask))
    out = _update(regs.steer(0.8, 1.2), b)
    np.testing.assert_array_equal(out.weights, np.zeros((2, 3)))
    self.assertTrue(all(np.isfinite(v) for v in out.metrics.values()))

  def test_weights_carry_no_gradient(self):
    b = _hand_batch()
    g = jax.grad(lambda lp: jnp.sum(
        _update(regs.steer(0.8, 1.2), b._replace(logp=lp)).weights))(b.logp)
    np.testing.assert_array_equal(g, np.zeros((2, 3)))

  def test_current_entropy_flag(self):
    b = _hand_batch()
    b = b._replace(old_entropy=None)
    with self.assertRaisesRegex(ValueError, "old_entropy"):
      er.policy_loss(b, regs.steer(), (), objective=OBJ)
    w = _update(regs.steer(0.8, 1.2, use_current_entropy=True), b).weights
    np.testing.assert_allclose(
        w, [[1.2, 0.883429, 0.8], [1.135110, 0.990506, 0]], atol=1e-6)

  def test_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, "linear, exp"):
      regs.steer(mode="cosine")
    with self.assertRaisesRegex(ValueError, "w_min"):
      regs.steer(1.2, 0.8)
    with self.assertRaisesRegex(ValueError, "w_min"):
      regs.steer(0.0, mode="exp")


class SteerContractTest(absltest.TestCase):

  def test_neutral_is_identity(self):
    b = _batch()
    base_l, base_g = _jit_vg(er.chain(), OBJ)(b)
    for t in (regs.steer(1.0, 1.0), regs.steer(1.0, mode="exp")):
      l, g = _jit_vg(t, OBJ)(b)
      self.assertEqual(float(l), float(base_l))
      for x, y in zip(g, base_g):
        np.testing.assert_array_equal(x, y)
    l, _ = _jit_vg(regs.steer(), OBJ)(b)  # the default does change it
    self.assertGreater(abs(float(l) - float(base_l)), 1e-4)

  def test_jit_equals_no_jit(self):
    b, t = _batch(), regs.steer(0.8, mode="exp")
    l, g = _value_and_grad(t, OBJ, b)
    lj, gj = jax.jit(lambda b: _value_and_grad(t, OBJ, b))(b)
    np.testing.assert_allclose(lj, l, rtol=1e-6, atol=1e-7)
    for x, y in zip(gj, g):
      np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-8)

  def test_static_shapes(self):
    t = regs.steer()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def f(b):
      return _value_and_grad(t, OBJ, b)

    out = jax.eval_shape(f, _batch(0))
    self.assertEqual(out[0].shape, ())
    chex.clear_trace_counter()
    for seed in range(3):
      l, _ = f(_batch(seed))
      self.assertTrue(np.isfinite(l))

  @settings(max_examples=8, deadline=None)
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
    b, t = _batch(3), regs.steer(0.8, 1.2)
    scoped, (g, _) = _jit_vg(t, OBJ, stat_scope=2)(b)
    vg = _jit_vg(t, OBJ)
    parts = [vg(jax.tree.map(lambda x, i=i: x[2 * i:2 * i + 2], b))
             for i in range(4)]
    np.testing.assert_allclose(scoped, np.mean([p[0] for p in parts]),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        g, np.concatenate([p[1][0] for p in parts]) / 4, rtol=1e-5, atol=1e-9)
    whole, _ = _jit_vg(t, OBJ)(b)
    self.assertGreater(abs(float(whole) - float(scoped)), 1e-6)


if __name__ == "__main__":
  absltest.main()
