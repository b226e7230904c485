"""Clip-Cov and KL-Cov (spec §3): hand-computed cases and the contract."""

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
from entropy_rl import regularizers as regs
from entropy_rl.core import loss as loss_lib
from tests import test_utils

KL_OBJ = regs.kl_cov_objective()
CLIP_OBJ = regs.clip_cov_objective()
KEY = jax.random.key(0)


def _hand_batch(step2=True):
  # Seq 1: A=2, seq 2: A=-1, 5 valid tokens (spec §3 (f)).
  old = np.array([[-0.1, -1.2, -3.0], [-0.5, -5.0, 0.0]])
  cur = old.copy()
  if step2:
    cur[0, 0], cur[1, 1] = -0.05, -4.8
  return test_utils.make_batch(cur, old, [[2, 2, 2], [-1, -1, -1]],
                               [[1, 1, 1], [1, 1, 0]])


def _update(transform, batch, objective, rng=None):
  b = loss_lib.fill_batch(batch, objective)
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
  """A jitted ``(batch, rng) -> (loss, grads)``."""
  return jax.jit(lambda b, rng: _value_and_grad(transform, objective, b, rng,
                                                **kwargs))


# Non-trivial selections on the random batches (several tokens each).
CASES = (
    ("clip_cov", regs.clip_cov(0.1, 0.0, 5.0), CLIP_OBJ),
    ("kl_cov", regs.kl_cov(0.1, 1.0), KL_OBJ),
)
_PAD_VG = {name: _jit_vg(t, obj) for name, t, obj in CASES}


class CovHandTest(absltest.TestCase):

  def test_covariance(self):
    c = regs.token_covariance(loss_lib.fill_batch(_hand_batch(False), KL_OBJ))
    np.testing.assert_allclose(c, [[2.232, 0.912, -1.248], [-2.628, 5.472, 0]],
                               atol=1e-5)

  def test_covariance_law(self):
    # π = (0.5, 0.3, 0.2), A = (1, 0, −1), η = 0.1: natural PG Δz = ηA.
    pi, a, eta = jnp.array([0.5, 0.3, 0.2]), jnp.array([1.0, 0.0, -1.0]), 0.1
    cov = lambda x, y: jnp.sum(pi * (x - pi @ x) * (y - pi @ y))
    ent = lambda p: -jnp.sum(p * jnp.log(p))
    np.testing.assert_allclose(-eta * cov(jnp.log(pi), a), -0.028421,
                               atol=1e-6)
    new = jax.nn.softmax(jnp.log(pi) + eta * a)
    np.testing.assert_allclose(ent(new) - ent(pi), -0.030750, atol=1e-6)
    np.testing.assert_allclose(-eta * cov(jnp.log(pi), pi * a), -0.010732,
                               atol=1e-6)
    new = jax.nn.softmax(jnp.log(pi) + eta * pi * a)
    np.testing.assert_allclose(ent(new) - ent(pi), -0.011134, atol=1e-6)

  def test_first_step_selection(self):
    b = _hand_batch(False)
    out = _update(regs.kl_cov(0.002), b, KL_OBJ)
    # k = 1: the low-prob, negative-A token (1, 1), c = 5.472; gradient 0 at
    # ℓ = ℓ° (the |·| kink) but the selection is visible in the metrics.
    np.testing.assert_allclose(out.metrics["kl_cov_frac"], 0.2)
    np.testing.assert_allclose(out.metrics["kl_cov_threshold"], 5.472,
                               atol=1e-5)
    out = _update(regs.clip_cov(2e-4), b, CLIP_OBJ, rng=KEY)
    # Only (0, 0) is a candidate ((1, 1) has c = 5.472 > 5): detached.
    np.testing.assert_array_equal(out.weights, [[0, 1, 1], [1, 1, 1]])

  def test_kl_cov_second_step(self):
    b = _hand_batch()
    t = regs.kl_cov(0.002, 1.0)
    loss, (_, m) = er.policy_loss(b, t, (), objective=KL_OBJ)
    np.testing.assert_allclose(loss, -0.736228, atol=1e-6)
    out = _update(t, b, KL_OBJ)
    tok, _ = KL_OBJ.token_loss(out)
    np.testing.assert_allclose(
        (tok + out.loss_terms["kl_cov"])[0], [-2.102542, -2, -2], atol=1e-6)
    np.testing.assert_allclose(
        (tok + out.loss_terms["kl_cov"])[1, :2], [1, 1.421403], atol=1e-6)
    np.testing.assert_allclose(m["terms/kl_cov"], 0.2 / 5, atol=1e-6)
    g = jax.grad(lambda lp: er.policy_loss(b._replace(logp=lp), t, (),
                                           objective=KL_OBJ)[0])(b.logp)
    # Unclipped −Aρ/5 everywhere, plus β·sign(ℓ − ℓ°)/5 on (1, 1).
    expect = -np.asarray(b.advantages) * np.exp(b.logp - b.old_logp) / 5
    expect[1, 1] += 1 / 5
    expect[1, 2] = 0
    np.testing.assert_allclose(g, expect, rtol=1e-5, atol=1e-7)

  def test_clip_cov_second_step_any_seed(self):
    b = _hand_batch()
    t = regs.clip_cov(2e-4, 1.0, 5.0)
    f = jax.jit(lambda rng: er.policy_loss(b, t, (), objective=CLIP_OBJ,
                                           rng=rng))
    for seed in range(5):
      loss, (_, m) = f(jax.random.key(seed))
      np.testing.assert_allclose(loss, -0.355719, atol=1e-6)
      np.testing.assert_allclose(m["clip_cov_frac"], 0.2)

  def test_clip_cov_random_subset(self):
    b = loss_lib.fill_batch(_batch(1), CLIP_OBJ)
    t = regs.clip_cov(0.1, 0.0, 5.0)
    n_valid = int(b.mask.sum())
    n_sel = max(math.floor(0.1 * n_valid), 1)
    c = regs.token_covariance(b)
    rho = np.exp(np.asarray(b.logp - b.old_logp))
    a = np.asarray(b.advantages)
    clipped = -a * np.clip(rho, 0.8, 1.2) > -a * rho
    cand = (np.asarray(b.mask) > 0) & ~clipped & (c > 0.0) & (c < 5.0)
    self.assertGreater(cand.sum(), n_sel)
    picks = set()
    weights = jax.jit(lambda rng: _update(t, b, CLIP_OBJ, rng).weights)
    for seed in range(4):
      w = np.asarray(weights(jax.random.key(seed)))
      sel = w == 0
      self.assertEqual(sel.sum(), n_sel)
      self.assertTrue(np.all(cand[sel]))  # only candidates are detached
      picks.add(tuple(np.flatnonzero(sel)))
    self.assertGreater(len(picks), 1)  # the subset depends on the key

  def test_k_percent_and_fraction(self):
    b = _hand_batch()
    l1 = er.policy_loss(b, regs.kl_cov(k_percent=0.2), (), objective=KL_OBJ)[0]
    l2 = er.policy_loss(b, regs.kl_cov(0.002), (), objective=KL_OBJ)[0]
    l3 = er.policy_loss(b, regs.kl_cov(), (), objective=KL_OBJ)[0]
    self.assertEqual(float(l1), float(l2))
    self.assertEqual(float(l1), float(l3))
    with self.assertRaisesRegex(ValueError, "not both"):
      regs.kl_cov(0.002, k_percent=0.2)
    with self.assertRaisesRegex(ValueError, "fraction in"):
      regs.kl_cov(k_percent=20000)

  def test_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, "PRNG key"):
      er.policy_loss(_hand_batch(), regs.clip_cov(), (), objective=CLIP_OBJ)
    with self.assertRaisesRegex(ValueError, "ratio"):
      regs.clip_cov(-0.1)
    with self.assertRaisesRegex(ValueError, "cov_low < cov_high"):
      regs.clip_cov(0.1, 5.0, 1.0)

  def test_presets(self):
    self.assertEqual(tuple(KL_OBJ.clip[:3]), (math.inf, math.inf, math.inf))
    self.assertEqual(tuple(CLIP_OBJ.clip[:3]), (0.2, 0.2, math.inf))
    self.assertEqual(regs.clip_cov_objective(1.0).clip.eps_high, 1.0)


class CovContractTest(parameterized.TestCase):

  def test_neutral_is_identity(self):
    b = _batch()
    for t, obj in ((regs.clip_cov(0.0), CLIP_OBJ), (regs.kl_cov(0.0), KL_OBJ),
                   (regs.kl_cov(0.1, beta=0.0), KL_OBJ)):
      base_l, base_g = _jit_vg(er.chain(), obj)(b, KEY)
      l, g = _jit_vg(t, obj)(b, KEY)
      self.assertEqual(float(l), float(base_l))
      for x, y in zip(g, base_g):
        np.testing.assert_array_equal(x, y)
    # ratio = 0 needs no key.
    er.policy_loss(b, regs.clip_cov(0.0), (), objective=CLIP_OBJ)

  @parameterized.named_parameters(*CASES)
  def test_jit_equals_no_jit(self, t, obj):
    b = _batch(2)
    l, g = _value_and_grad(t, obj, b, KEY)
    lj, gj = _jit_vg(t, obj)(b, KEY)
    np.testing.assert_allclose(lj, l, rtol=1e-6, atol=1e-7)
    for x, y in zip(gj, g):
      np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-8)
    base, _ = _jit_vg(er.chain(), obj)(b, KEY)
    self.assertGreater(abs(float(l) - float(base)), 1e-4)  # it does act

  @parameterized.named_parameters(*CASES)
  def test_static_shapes(self, t, obj):
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def f(b, rng):
      return _value_and_grad(t, obj, b, rng)

    out = jax.eval_shape(f, _batch(0), KEY)
    self.assertEqual(out[0].shape, ())
    for seed in range(3):
      l, _ = f(_batch(seed), jax.random.key(seed))
      self.assertTrue(np.isfinite(l))

  @settings(max_examples=6, deadline=None)
  @given(st.sampled_from([c[0] for c in CASES]),
         st.sampled_from([(3, 0), (3, 2)]), st.integers(0, 10**6))
  def test_padding_invariance(self, name, pads, seed):
    b = _batch(seed, rows=4, tokens=8)
    key = jax.random.key(seed)
    l, (g, _) = _PAD_VG[name](b, key)
    lp, (gp, _) = _PAD_VG[name](test_utils.pad_batch(b, *pads), key)
    np.testing.assert_allclose(lp, l, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gp[:4, :8], g, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(gp[:, 8:], 0.0)
    np.testing.assert_array_equal(gp[4:], 0.0)

  @parameterized.named_parameters(*CASES)
  def test_stat_scope_equals_manual_micro_batches(self, t, obj):
    b = _batch(3)
    scoped, (g, _) = _jit_vg(t, obj, stat_scope=4)(b, KEY)
    keys = jax.random.split(KEY, 2)
    vg = _jit_vg(t, obj)
    parts = [vg(jax.tree.map(lambda x, i=i: x[4 * i:4 * i + 4], b), keys[i])
             for i in range(2)]
    np.testing.assert_allclose(scoped, np.mean([p[0] for p in parts]),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        g, np.concatenate([p[1][0] for p in parts]) / 2, rtol=1e-5, atol=1e-9)


if __name__ == "__main__":
  absltest.main()
