"""CE-GPPO (spec §9) and Lp-Reg (spec §8): hand cases and the contract."""

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
from entropy_rl.core import kl
from entropy_rl.core import loss as loss_lib
from entropy_rl.core import token_stats
from tests import test_utils

INF = math.inf
GPPO_OBJ = regs.ce_gppo_objective()  # ε 0.2, dual clip 10, token-mean
DAPO = er.dapo()


def _update(transform, batch, objective):
  b = loss_lib.fill_batch(batch, objective)
  return transform.update(b, transform.init(None), rng=None,
                          step=jnp.zeros((), jnp.int32))[0]


def _token_loss_and_grad(transform, objective, batch):
  """Per-token surrogate (+ [B, T] terms) and its gradient w.r.t. ℓ."""
  def f(logp):
    b = _update(transform, batch._replace(logp=logp), objective)
    tok, _ = objective.token_loss(b)
    tok = tok + sum(b.loss_terms.values(), jnp.zeros_like(tok))
    return tok.sum(), tok

  (_, tok), g = jax.value_and_grad(f, has_aux=True)(batch.logp)
  return np.asarray(tok), np.asarray(g)


def _batch(seed=0, rows=8, tokens=16):
  """A random batch: wide log-ratio spread and an Lp-Reg proxy log-prob."""
  b = test_utils.random_batch(seed, rows, tokens)
  rng = np.random.default_rng(seed + 100)
  old = b.logp + jnp.asarray(0.4 * rng.normal(size=b.logp.shape), jnp.float32)
  proxy = np.where(rng.random(b.logp.shape) < 0.7,
                   np.asarray(b.logp) + 0.1 + 0.3 * rng.random(b.logp.shape),
                   -1e4)
  return b._replace(old_logp=old, old_vocab_stats={
      "minp_logp": jnp.asarray(proxy, jnp.float32)})


def _pad(batch, extra_tokens, extra_rows):
  out = test_utils.pad_batch(batch, extra_tokens, extra_rows)
  stats = {k: jnp.pad(jnp.pad(v, ((0, 0), (0, extra_tokens)),
                              constant_values=7.0),
                      ((0, extra_rows), (0, 0)), constant_values=3.0)
           for k, v in batch.old_vocab_stats.items()}
  return out._replace(old_vocab_stats=stats)


def _value_and_grad(transform, objective, batch, **kwargs):
  """policy_loss and its gradients w.r.t. (logp, entropy)."""
  def f(logp, entropy):
    b = batch._replace(logp=logp, entropy=entropy)
    return er.policy_loss(b, transform, transform.init(None),
                          objective=objective, **kwargs)[0]
  return jax.value_and_grad(f, argnums=(0, 1))(batch.logp, batch.entropy)


def _jit_vg(transform, objective, **kwargs):
  return jax.jit(lambda b: _value_and_grad(transform, objective, b, **kwargs))


CASES = (
    ("ce_gppo", regs.ce_gppo(0.75, 1.0), GPPO_OBJ),
    ("ce_gppo_grad_only", regs.ce_gppo(0.5, 0.8, reference_values=False),
     GPPO_OBJ),
    ("lp_reg", regs.lp_reg(0.02, 0.5, 0.2, 1.0), DAPO),
)
_PAD_VG = {name: _jit_vg(t, obj) for name, t, obj in CASES}


class CeGppoTest(absltest.TestCase):
  # (A, ρ) = (+1, 1.5), (−1, 0.5), (+1, 0.5), (−1, 1.5); ε = 0.2, c = 10.
  B = test_utils.make_batch(np.log([[1.5, 0.5, 0.5, 1.5]]), np.zeros((1, 4)),
                            [[1, -1, 1, -1]], np.ones((1, 4)))

  def test_table(self):
    tok, g = _token_loss_and_grad(regs.ce_gppo(0.75, 1.0), GPPO_OBJ, self.B)
    np.testing.assert_allclose(tok[0], [-1.2, 0.6, -0.5, 1.5], atol=1e-6)
    np.testing.assert_allclose(g[0], [-1.2, 0.6, -0.5, 1.5], atol=1e-6)

  def test_ppo_contrast(self):
    tok, g = _token_loss_and_grad(er.chain(), GPPO_OBJ, self.B)
    np.testing.assert_allclose(tok[0], [-1.2, 0.8, -0.5, 1.5], atol=1e-6)
    np.testing.assert_allclose(g[0], [0, 0, -0.5, 1.5], atol=1e-6)

  def test_beta_zero(self):
    # Reference values: PPO's gradients, zero values on clipped tokens.
    tok, g = _token_loss_and_grad(regs.ce_gppo(0, 0), GPPO_OBJ, self.B)
    np.testing.assert_allclose(tok[0], [0, 0, -0.5, 1.5], atol=1e-6)
    np.testing.assert_allclose(g[0], [0, 0, -0.5, 1.5], atol=1e-6)
    # Gradient only: exactly PPO.
    tok, g = _token_loss_and_grad(
        regs.ce_gppo(0, 0, reference_values=False), GPPO_OBJ, self.B)
    np.testing.assert_allclose(tok[0], [-1.2, 0.8, -0.5, 1.5], atol=1e-6)
    np.testing.assert_allclose(g[0], [0, 0, -0.5, 1.5], atol=1e-6)

  def test_beta_one_keeps_full_magnitude(self):
    tok, g = _token_loss_and_grad(regs.ce_gppo(1, 1), GPPO_OBJ, self.B)
    np.testing.assert_allclose(g[0], [-1.2, 0.8, -0.5, 1.5], atol=1e-6)
    tok, g = _token_loss_and_grad(
        regs.ce_gppo(0.5, 0.25, reference_values=False), GPPO_OBJ, self.B)
    np.testing.assert_allclose(tok[0], [-1.2, 0.8, -0.5, 1.5], atol=1e-6)
    np.testing.assert_allclose(g[0], [-0.3, 0.4, -0.5, 1.5], atol=1e-6)

  def test_dual_clip_applies_after(self):
    b = test_utils.make_batch(np.log([[20.0]]), [[0.0]], [[-1.0]], [[1.0]])
    tok, g = _token_loss_and_grad(regs.ce_gppo(), GPPO_OBJ, b)
    np.testing.assert_allclose(tok, [[10.0]])
    np.testing.assert_allclose(g, [[0.0]])

  def test_metrics_and_arguments(self):
    _, (_, m) = er.policy_loss(self.B, regs.ce_gppo(), (), objective=GPPO_OBJ)
    self.assertAlmostEqual(float(m["ce_gppo_low_frac"]), 0.25)
    self.assertAlmostEqual(float(m["ce_gppo_high_frac"]), 0.25)
    with self.assertRaisesRegex(ValueError, "beta_low"):
      regs.ce_gppo(-1.0)
    with self.assertRaisesRegex(ValueError, "does not honour"):
      er.policy_loss(self.B, regs.ce_gppo(), (), objective=er.gspo())


class LpRegHandTest(absltest.TestCase):
  LOGP = [[-0.1, -2.4079, -3.0, -6.0]]
  PROXY = [[-0.1, -2.3979, -2.9, -1e4]]

  def _batch(self, proxy=None, adv=-1.0):
    return test_utils.make_batch(
        self.LOGP, self.LOGP, [[adv] * 4], np.ones((1, 4)),
        old_vocab_stats={"minp_logp": jnp.asarray(
            proxy or self.PROXY, jnp.float32)})

  def test_proxy_reduction(self):
    # p = (0.6, 0.3, 0.09, 0.007, 0.003), κ = 0.02: keeps 3 tokens.
    p = jnp.array([0.6, 0.3, 0.09, 0.007, 0.003])
    logits = jnp.log(p)[None]
    out = token_stats.token_stats_from_logits(
        logits, jnp.array([2]),
        reductions={"minp_logp": regs.lp_reg().needs.old_vocab["minp_logp"]})
    np.testing.assert_allclose(out["minp_logp"] - out["logp"], [0.010050],
                               atol=1e-6)
    k3 = kl.kl_estimate(out["logp"], out["minp_logp"], "k3")
    np.testing.assert_allclose(k3, [5.067e-5], rtol=2e-3)

  def test_selection(self):
    # ρ⁻ = 0.5, 4 negative tokens: k = 2 -> ℓ = −6.0, −3.0; only −3.0 < −2.9.
    t = regs.lp_reg(neg_fraction=0.5, beta=1.0)
    out = _update(t, self._batch(), DAPO)
    np.testing.assert_allclose(out.loss_terms["lp_reg"],
                               [[0, 0, 0.005171, 0]], atol=1e-6)
    self.assertEqual(list(np.isinf(out.clip.eps_low[0])),
                     [False, False, True, False])
    self.assertEqual(list(np.isinf(out.clip.dual_c[0])),
                     [False, False, True, False])
    self.assertAlmostEqual(float(out.metrics["lp_reg_neg_frac"]), 0.25)
    _, g = _token_loss_and_grad(t, DAPO, self._batch())
    # On-policy: −A·ρ' = 1 everywhere, plus β·(1 − e^{0.1}) on the selection.
    np.testing.assert_allclose(g[0], [1, 1, 1 + 1 - np.exp(0.1), 1],
                               atol=1e-6)

  def test_k1_quirk(self):
    # ρ⁻ = 0.25: k = 1; the single lowest token qualifies (−6.0 < −5.9).
    b = self._batch(proxy=[[-0.1, -2.3979, -2.9, -5.9]])
    quirk = _update(regs.lp_reg(neg_fraction=0.25), b, DAPO)
    np.testing.assert_array_equal(quirk.loss_terms["lp_reg"], 0.0)
    self.assertFalse(np.any(np.isinf(quirk.clip.eps_low)))
    fixed = _update(regs.lp_reg(neg_fraction=0.25, reference_k1_quirk=False),
                    b, DAPO)
    np.testing.assert_allclose(fixed.loss_terms["lp_reg"],
                               [[0, 0, 0, 0.005171]], atol=1e-6)

  def test_positive_side(self):
    b = self._batch(adv=1.0)
    neg_only = _update(regs.lp_reg(neg_fraction=0.5), b, DAPO)
    np.testing.assert_array_equal(neg_only.loss_terms["lp_reg"], 0.0)
    pos = _update(regs.lp_reg(neg_fraction=0.0, pos_fraction=0.5), b, DAPO)
    np.testing.assert_allclose(pos.loss_terms["lp_reg"],
                               [[0, 0, 0.005171, 0]], atol=1e-6)

  def test_needs_and_errors(self):
    t = regs.lp_reg(0.05)
    self.assertEqual(list(t.needs.old_vocab), ["minp_logp"])
    # Same κ: the same reduction object, so two instances chain fine.
    er.chain(t, regs.lp_reg(0.05, term="lp_reg_2"))
    with self.assertRaisesRegex(ValueError, "different vocabulary"):
      er.chain(t, regs.lp_reg(0.1, term="lp_reg_2"))
    b = self._batch()._replace(old_vocab_stats=None)
    with self.assertRaisesRegex(ValueError, "minp_logp"):
      er.policy_loss(b, t, (), objective=DAPO)
    with self.assertRaisesRegex(ValueError, "neg_fraction"):
      regs.lp_reg(neg_fraction=2.0)

  def test_preset(self):
    obj = regs.lp_reg_objective()
    self.assertEqual(tuple(obj.clip[:3]), (1.0, 9.0, INF))


class ClipContractTest(parameterized.TestCase):

  def test_neutral_is_identity(self):
    b = _batch()
    for t, obj in ((regs.ce_gppo(0, 0, reference_values=False), GPPO_OBJ),
                   (regs.lp_reg(neg_fraction=0.0), DAPO),
                   (regs.lp_reg(neg_fraction=0.0, reference_k1_quirk=False),
                    DAPO)):
      base_l, base_g = _jit_vg(er.chain(), obj)(b)
      l, g = _jit_vg(t, obj)(b)
      self.assertEqual(float(l), float(base_l))
      for x, y in zip(g, base_g):
        np.testing.assert_array_equal(x, y)

  @parameterized.named_parameters(*CASES)
  def test_jit_equals_no_jit(self, t, obj):
    b = _batch(2)
    l, g = _value_and_grad(t, obj, b)
    lj, gj = _jit_vg(t, obj)(b)
    np.testing.assert_allclose(lj, l, rtol=1e-6, atol=1e-7)
    for x, y in zip(gj, g):
      np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-8)
    base, (base_g, _) = _jit_vg(er.chain(), obj)(b)
    self.assertGreater(np.abs(g[0] - base_g).max(), 1e-4)  # it does act

  @parameterized.named_parameters(*CASES)
  def test_static_shapes(self, t, obj):
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def f(b):
      return _value_and_grad(t, obj, b)

    out = jax.eval_shape(f, _batch(0))
    self.assertEqual(out[0].shape, ())
    for seed in range(3):
      l, _ = f(_batch(seed))
      self.assertTrue(np.isfinite(l))

  @settings(max_examples=6, deadline=None)
  @given(st.sampled_from(["ce_gppo", "lp_reg"]),
         st.sampled_from([(3, 0), (3, 2)]), st.integers(0, 10**6))
  def test_padding_invariance(self, name, pads, seed):
    b = _batch(seed, rows=4, tokens=8)
    l, (g, _) = _PAD_VG[name](b)
    lp, (gp, _) = _PAD_VG[name](_pad(b, *pads))
    np.testing.assert_allclose(lp, l, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gp[:4, :8], g, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(gp[:, 8:], 0.0)
    np.testing.assert_array_equal(gp[4:], 0.0)

  @parameterized.named_parameters(CASES[0], CASES[2])
  def test_stat_scope_equals_manual_micro_batches(self, t, obj):
    b = _batch(3)
    scoped, (g, _) = _jit_vg(t, obj, stat_scope=4)(b)
    vg = _jit_vg(t, obj)
    parts = [vg(jax.tree.map(lambda x, i=i: x[4 * i:4 * i + 4], b))
             for i in range(2)]
    np.testing.assert_allclose(scoped, np.mean([p[0] for p in parts]),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        g, np.concatenate([p[1][0] for p in parts]) / 2, rtol=1e-5, atol=1e-9)


if __name__ == "__main__":
  absltest.main()
