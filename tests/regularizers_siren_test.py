"""SIREN: spec §4 hand values, anchor, neutrality, scopes, shapes, chains."""


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
from entropy_rl.core import reductions
from tests import test_utils

# The package re-exports the constructor under the module's name.
from entropy_rl.regularizers import _siren as siren_lib

STAT = siren_lib.STAT
T = 6


def _batch(seed, rows=4, tokens=T):
  """A random batch with current and old nucleus entropies (some exact 0)."""
  b = test_utils.random_batch(seed, rows=rows, tokens=tokens, groups=2,
                              min_len=2)
  rng = np.random.default_rng(seed + 100)
  h = rng.uniform(0.0, 2.0, size=(rows, tokens))
  h = np.where(rng.uniform(size=h.shape) < 0.25, 0.0, h)
  f = lambda x: jnp.asarray(x, jnp.float32)
  return b._replace(vocab_stats={STAT: f(h)},
                    old_vocab_stats={STAT: f(h + 0.1)})


def _pad(b, extra):
  """Pads tokens (mask 0, garbage values) including the vocabulary stats."""
  pad = lambda x: jnp.pad(x, ((0, 0), (0, extra)), constant_values=7.0)
  p = test_utils.pad_batch(b, extra)
  return p._replace(
      vocab_stats={k: pad(v) for k, v in b.vocab_stats.items()},
      old_vocab_stats={k: pad(v) for k, v in b.old_vocab_stats.items()})


def _loss_grads(batch, t, state, obj, **kw):
  """policy_loss and its gradients w.r.t. logp and the nucleus entropy."""

  def f(logp, h):
    b = batch._replace(logp=logp, vocab_stats={STAT: h})
    return er.policy_loss(b, t, state, objective=obj, **kw)

  (loss, aux), grads = jax.value_and_grad(f, (0, 1), has_aux=True)(
      batch.logp, batch.vocab_stats[STAT])
  return loss, grads, aux


def _jit_loss_grads(t, obj, **kw):
  return jax.jit(lambda b, s: _loss_grads(b, t, s, obj, **kw))


def _prepared(t, b):
  b2, s, _ = er.prepare_batch(b, t, t.init(None))
  return b2, s


class NucleusEntropyTest(absltest.TestCase):

  def test_spec_hand_values(self):
    # p = (.5, .25, .15, .1): C = (.5, .75, .9, 1), J = 2, keep {.5, .25}.
    fn = reductions.nucleus_entropy(0.8).fn
    z = jnp.log(jnp.array([[0.5, 0.25, 0.15, 0.1],
                           [0.85, 0.1, 0.05, 1e-9]], jnp.float32))
    h = fn(z, jnp.zeros(2, jnp.int32), None)
    np.testing.assert_allclose(h, [0.636514, 0.0], atol=1e-6)


@jax.jit
def _both_masks(h, m, ratio):
  single, _ = siren_lib.peak_entropy_mask(h, m, ratio)
  double, _ = siren_lib.peak_entropy_mask(h, m, ratio, double_mask=True)
  return single, double


class PeakMaskTest(parameterized.TestCase):

  def test_spec_hand_values(self):
    h = jnp.array([[0.1, 0.9, 0.3, 0.0, 0.6]])
    m = jnp.ones_like(h)
    sel, tau = siren_lib.peak_entropy_mask(h, m, 0.8)
    np.testing.assert_allclose(tau, [0.66], atol=1e-6)
    np.testing.assert_array_equal(sel, [[0, 1, 0, 0, 0]])
    h_bar, _ = siren_lib.peak_entropy(h, m, 0.8)
    np.testing.assert_allclose(h_bar, 0.9, atol=1e-7)

  def test_quantile_is_per_row_over_valid_tokens(self):
    h = jnp.array([[0.1, 0.9, 0.3, 0.0, 0.6, 5.0],
                   [0.2, 0.4, 0.0, 0.0, 0.0, 0.0]])
    m = jnp.array([[1, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0]], jnp.float32)
    sel, tau = siren_lib.peak_entropy_mask(h, m, 0.8)
    # Row 2: quantile of (0.2, 0.4) = 0.36.
    np.testing.assert_allclose(tau, [0.66, 0.36], atol=1e-6)
    np.testing.assert_array_equal(sel, [[0, 1, 0, 0, 0, 0],
                                        [0, 1, 0, 0, 0, 0]])

  def test_empty_rows_count_as_zero(self):
    h = jnp.array([[0.1, 0.9, 0.3, 0.0, 0.6], [1.0, 2.0, 3.0, 4.0, 5.0]])
    m = jnp.array([[1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], jnp.float32)
    h_bar, sel = siren_lib.peak_entropy(h, m, 0.8)
    np.testing.assert_allclose(h_bar, 0.45, atol=1e-7)
    np.testing.assert_array_equal(sel[1], 0.0)

  @settings(deadline=None, max_examples=40)
  @given(vals=st.lists(st.integers(0, 3), min_size=1, max_size=9),
         ratio=st.sampled_from([0.0, 0.2, 0.5, 0.8, 0.9, 1.0]),
         scale=st.sampled_from([1.0, 0.1, 0.3]))
  def test_double_mask_agrees_on_entropies_with_ties(self, vals, ratio,
                                                     scale):
    # For h >= 0 every kept value is > 0 and above the second quantile, which
    # interpolates between 0 and the smallest kept value: same mask, ties
    # included.
    n = len(vals)
    h = jnp.asarray([vals + [9] * (9 - n)], jnp.float32) * scale
    m = (jnp.arange(9) < n).astype(jnp.float32)[None]
    single, double = _both_masks(h, m, ratio)
    np.testing.assert_array_equal(single, double)

  def test_double_mask_differs_on_a_signed_statistic(self):
    # Tied negative values: the first pass keeps -0.5 (τ = -0.9); zeroing the
    # rest makes 0 the new quantile and -0.5 drops out of the second pass.
    h = jnp.array([[-1.0, -1.0, -1.0, -1.0, -0.5]])
    m = jnp.ones_like(h)
    single, _ = siren_lib.peak_entropy_mask(h, m, 0.8)
    double, _ = siren_lib.peak_entropy_mask(h, m, 0.8, double_mask=True)
    np.testing.assert_array_equal(single, [[0, 0, 0, 0, 1]])
    np.testing.assert_array_equal(double, [[0, 0, 0, 0, 0]])


class RegulariserTest(absltest.TestCase):

  def test_spec_hand_values(self):
    # Hᵖ = (0.1, 0.9, 0.3, 0.0, 0.6): H̄ = 0.9; anchor 0.5, λ = 0.005.
    h = [[0.1, 0.9, 0.3, 0.0, 0.6]]
    b = test_utils.make_batch(
        np.zeros((1, 5)), np.zeros((1, 5)), np.zeros((1, 5)), np.ones((1, 5)),
        vocab_stats={STAT: jnp.asarray(h, jnp.float32)},
        old_vocab_stats={STAT: jnp.asarray(h, jnp.float32)})
    t = regularizers.siren(0.005)
    state = siren_lib.SirenState(jnp.asarray(0.5), jnp.asarray(True))
    loss, (_, gh), (_, m) = _loss_grads(b, t, state, er.none())
    np.testing.assert_allclose(loss, 0.0008, atol=1e-9)
    np.testing.assert_allclose(m["terms/siren"], 0.0008, atol=1e-9)
    np.testing.assert_allclose(gh, [[0, 0.004, 0, 0, 0]], atol=1e-8)
    np.testing.assert_allclose(m["siren_entropy"], 0.9, atol=1e-7)
    np.testing.assert_allclose(m["siren_selected_frac"], 0.2, atol=1e-7)

  def test_anchor_is_set_once_from_the_whole_batch(self):
    b = _batch(0, rows=4)
    t = regularizers.siren(0.005)
    _, s = _prepared(t, b)
    whole, _ = siren_lib.peak_entropy(b.old_vocab_stats[STAT], b.mask, 0.8)
    np.testing.assert_allclose(s.anchor, whole, rtol=1e-6)
    self.assertTrue(bool(s.ready))
    # The mask is per row and SMTM a mean over rows, so the whole-batch
    # anchor also equals the mean over equal micro-batches (the reference
    # re-reads it from the actor's per-micro-batch metric).
    halves = [siren_lib.peak_entropy(b.old_vocab_stats[STAT][i:i + 2],
                                     b.mask[i:i + 2], 0.8)[0] for i in (0, 2)]
    np.testing.assert_allclose(np.mean(halves), whole, rtol=1e-6)
    # A second prepare keeps the anchor.
    b2 = b._replace(old_vocab_stats={STAT: b.old_vocab_stats[STAT] * 3.0})
    _, s2, _ = er.prepare_batch(b2, t, s)
    self.assertEqual(float(s2.anchor), float(s.anchor))

  def test_no_anchor_no_term(self):
    b = _batch(1)
    t = regularizers.siren(0.005)
    _, (gl, gh), (_, m) = _loss_grads(b, t, t.init(None),
                                      siren_lib.siren_objective(T))
    self.assertEqual(float(m["terms/siren"]), 0.0)
    np.testing.assert_array_equal(gh, 0.0)

  def test_gradient_vanishes_at_the_anchor(self):
    b = _batch(2)
    t = regularizers.siren(0.005)
    h_bar, _ = siren_lib.peak_entropy(b.vocab_stats[STAT], b.mask, 0.8)
    state = siren_lib.SirenState(h_bar, jnp.asarray(True))
    _, (_, gh), _ = _jit_loss_grads(t, siren_lib.siren_objective(T))(b, state)
    np.testing.assert_allclose(gh, 0.0, atol=1e-9)

  def test_siren_objective_is_dr_grpo_mean_variant(self):
    # §0: X = [[1,2,3],[4,5,·]], L_max = 3 -> SMTSN (SIREN) = 2.5.
    obj = siren_lib.siren_objective(l_max=3)
    x = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 9.0]])
    m = jnp.array([[1, 1, 1], [1, 1, 0]], jnp.float32)
    np.testing.assert_allclose(
        er.aggregate(x, m, obj.agg, obj.l_max, obj.smtsn), 2.5)
    self.assertEqual((obj.clip.eps_low, obj.clip.eps_high), (0.2, 0.2))

  def test_missing_stat_raises(self):
    b = _batch(0)._replace(vocab_stats=None)
    t = regularizers.siren()
    with self.assertRaisesRegex(ValueError, "vocab_stats"):
      er.policy_loss(b, t, t.init(None), objective=er.ppo_clip())


class NeutralTest(absltest.TestCase):

  def test_coef_zero_is_the_base_objective(self):
    b = _batch(3)
    obj = siren_lib.siren_objective(T)
    t = regularizers.siren(0.0)
    b2, s = _prepared(t, b)
    l1, (g1, h1), _ = _loss_grads(b2, t, s, obj)
    l0, (g0, h0), _ = _loss_grads(b, er.chain(), (), obj)
    self.assertEqual(float(l1), float(l0))
    np.testing.assert_array_equal(g1, g0)
    np.testing.assert_array_equal(h1, h0)


class JitTest(absltest.TestCase):

  def test_jit_equals_eager(self):
    b = _batch(4)
    t = regularizers.siren(0.05)
    b2, s = _prepared(t, b)
    f = lambda b: _loss_grads(b, t, s, siren_lib.siren_objective(T))
    l0, g0, (_, m0) = f(b2)
    l1, g1, (_, m1) = jax.jit(f)(b2)
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    chex.assert_trees_all_close(g1, g0, rtol=1e-5, atol=1e-8)
    for k in m0:
      np.testing.assert_allclose(m1[k], m0[k], rtol=1e-5, atol=1e-6,
                                 err_msg=k)
    # prepare too.
    _, s_jit, _ = jax.jit(lambda b: er.prepare_batch(b, t, t.init(None)))(b)
    np.testing.assert_allclose(s_jit.anchor, s.anchor, rtol=1e-6)


_PAD_SIREN = regularizers.siren(0.5)
_PAD_LOSS = _jit_loss_grads(_PAD_SIREN, siren_lib.siren_objective(T))
_PAD_PREPARE = jax.jit(
    lambda b: er.prepare_batch(b, _PAD_SIREN, _PAD_SIREN.init(None)))


class PaddingTest(absltest.TestCase):

  @settings(deadline=None, max_examples=8)
  @given(seed=st.integers(0, 1000), extra=st.sampled_from([1, 3]))
  def test_padded_tokens_change_nothing(self, seed, extra):
    b = _batch(seed)
    f = _PAD_LOSS
    b2, s, _ = _PAD_PREPARE(b)
    p2, sp, _ = _PAD_PREPARE(_pad(b, extra))
    np.testing.assert_allclose(sp.anchor, s.anchor, rtol=1e-6)
    l0, (g0, h0), _ = f(b2, s)
    l1, (g1, h1), _ = f(p2, sp)
    np.testing.assert_allclose(l1, l0, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(g1[:, :T], g0, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(h1[:, :T], h0, rtol=1e-5, atol=1e-8)
    np.testing.assert_array_equal(g1[:, T:], 0.0)
    np.testing.assert_array_equal(h1[:, T:], 0.0)


class StaticShapeTest(absltest.TestCase):

  def test_eval_shape(self):
    t = regularizers.siren()
    abstract = jax.eval_shape(t.init, None)
    self.assertEqual(abstract.anchor.shape, ())
    b = _batch(0)
    out = jax.eval_shape(
        lambda b, s: er.policy_loss(b, t, s, objective=er.ppo_clip())[0],
        b, t.init(None))
    self.assertEqual(out.shape, ())

  def test_single_trace_for_same_shapes(self):
    t = regularizers.siren(0.01)
    obj = siren_lib.siren_objective(T)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(b, s):
      b, s, _ = er.prepare_batch(b, t, s)
      return _loss_grads(b, t, s, obj)[0], s

    s = t.init(None)
    for seed in range(3):
      _, s = step(_batch(seed), s)


class ScopeTest(absltest.TestCase):

  def test_scope_equals_manual_microbatches(self):
    b = _batch(5, rows=8)
    t = regularizers.siren(0.5)
    obj = siren_lib.siren_objective(T)
    b2, s = _prepared(t, b)  # whole-batch anchor
    loss_fn = jax.jit(lambda b, scope: er.policy_loss(
        b, t, s, objective=obj, stat_scope=scope), static_argnums=1)
    loss, (_, m) = loss_fn(b2, 2)
    manual = [loss_fn(jax.tree.map(lambda x: x[i:i + 2], b2), None)
              for i in range(0, 8, 2)]
    np.testing.assert_allclose(loss, np.mean([x[0] for x in manual]),
                               rtol=1e-6)
    np.testing.assert_allclose(
        m["terms/siren"], np.mean([x[1][1]["terms/siren"] for x in manual]),
        rtol=1e-6)
    whole, _ = loss_fn(b2, None)
    self.assertGreater(abs(float(whole) - float(loss)), 1e-7)


def _others():
  return {
      "qae": regularizers.qae(0.4),
      "gtpo": regularizers.gtpo(normalization="joint"),
      "grpo_s": regularizers.grpo_s(),
      "aepo": regularizers.aepo(0.5),
  }


class ChainTest(parameterized.TestCase):

  @parameterized.named_parameters(*[(k, k) for k in sorted(_others())])
  def test_either_order_gives_the_same_loss(self, name):
    # SIREN adds a term; the others write advantages or controller state.
    b = _batch(6)
    obj = siren_lib.siren_objective(T)
    sir, other = regularizers.siren(0.5), _others()[name]
    results = []
    for t in (er.chain(sir, other), er.chain(other, sir)):
      b2, s = _prepared(t, b)
      loss, grads, _ = _jit_loss_grads(t, obj)(b2, s)
      results.append((loss, grads))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-6)
    chex.assert_trees_all_close(results[0][1], results[1][1], rtol=1e-6)


if __name__ == "__main__":
  absltest.main()
