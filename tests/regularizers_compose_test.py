"""Pairs of STEER, Clip-Cov, KL-Cov, CE-GPPO, Lp-Reg and the forking filter.

Every pair composes; pairs acting on different quantities (or commuting on
the same one, such as two weight multiplications) give the same loss and
gradients in either order. ``named_chain`` is used so that Clip-Cov's random
stream (``fold_in(rng, crc32(name))``) does not depend on its position.
"""

import itertools

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

import entropy_rl as er
from entropy_rl import regularizers as regs
from tests import test_utils

OBJ = er.dapo()
KEY = jax.random.key(0)
TRANSFORMS = {
    "steer": regs.steer(0.8, 1.2),  # weights
    "clip_cov": regs.clip_cov(0.1, 0.0, 5.0),  # weights; reads clip ε
    "kl_cov": regs.kl_cov(0.1),  # loss term
    "ce_gppo": regs.ce_gppo(),  # clip grad/value fields
    "lp_reg": regs.lp_reg(0.02, 0.5, 0.2),  # clip ε/dual on its tokens; term
    "forking": regs.forking_tokens(0.5),  # weights
}
# Lp-Reg unclips its tokens, which changes Clip-Cov's candidate set.
ORDER_DEPENDENT = {frozenset({"clip_cov", "lp_reg"})}


def _batch(seed=0, rows=8, tokens=16):
  b = test_utils.random_batch(seed, rows, tokens)
  rng = np.random.default_rng(seed + 100)
  old = b.logp + jnp.asarray(0.4 * rng.normal(size=b.logp.shape), jnp.float32)
  proxy = np.where(rng.random(b.logp.shape) < 0.7,
                   np.asarray(b.logp) + 0.1 + 0.3 * rng.random(b.logp.shape),
                   -1e4)
  return b._replace(old_logp=old, old_vocab_stats={
      "minp_logp": jnp.asarray(proxy, jnp.float32)})


def _value_and_grad(transform, batch):
  def f(logp, entropy):
    b = batch._replace(logp=logp, entropy=entropy)
    return er.policy_loss(b, transform, transform.init(None), objective=OBJ,
                          rng=KEY)
  (loss, (_, metrics)), grads = jax.value_and_grad(
      f, argnums=(0, 1), has_aux=True)(batch.logp, batch.entropy)
  return loss, grads, metrics


class ComposeTest(absltest.TestCase):

  def test_pairs(self):
    b = _batch()
    base, _, _ = _value_and_grad(er.chain(), b)
    for x, y in itertools.combinations(TRANSFORMS, 2):
      with self.subTest(pair=(x, y)):
        pair = ((x, TRANSFORMS[x]), (y, TRANSFORMS[y]))
        l_xy, g_xy, m = _value_and_grad(er.named_chain(*pair), b)
        l_yx, g_yx, _ = _value_and_grad(er.named_chain(*pair[::-1]), b)
        self.assertTrue(np.isfinite(l_xy) and np.isfinite(l_yx))
        self.assertTrue(all(np.all(np.isfinite(g)) for g in g_xy + g_yx))
        self.assertNotEqual(float(l_xy), float(base))
        self.assertTrue(any(k.startswith(f"{x}/") for k in m))
        self.assertTrue(any(k.startswith(f"{y}/") for k in m))
        if frozenset({x, y}) in ORDER_DEPENDENT:
          continue
        np.testing.assert_allclose(l_yx, l_xy, rtol=1e-6)
        for g1, g2 in zip(g_yx, g_xy):
          np.testing.assert_allclose(g1, g2, rtol=1e-6, atol=1e-9)

  def test_order_dependent_pair_differs(self):
    # A token Lp-Reg selects that PPO clips becomes a Clip-Cov candidate only
    # when Lp-Reg runs first. One negative-advantage token, clipped (ρ = 0.5).
    b = test_utils.make_batch(
        [[np.log(0.5) - 3.0, -1.0, -1.5, -2.0]], [[-3.0, -1.0, -1.5, -2.0]],
        [[-1.0, -1.0, 1.0, 1.0]], np.ones((1, 4)),
        entropy=np.ones((1, 4)), old_entropy=np.ones((1, 4)),
        old_vocab_stats={"minp_logp": jnp.asarray([[-1.0, -1e4, -1e4, -1e4]],
                                                  jnp.float32)})
    lp = regs.lp_reg(0.02, 1.0, beta=0.0)
    cc = regs.clip_cov(1.0, -100.0, 100.0)
    w_first = er.named_chain(("lp_reg", lp), ("clip_cov", cc))
    w_second = er.named_chain(("clip_cov", cc), ("lp_reg", lp))
    _, _, m1 = _value_and_grad(w_first, b)
    _, _, m2 = _value_and_grad(w_second, b)
    self.assertEqual(float(m1["lp_reg/lp_reg_frac"]), 0.25)
    self.assertEqual(float(m1["clip_cov/clip_cov_candidate_frac"]), 1.0)
    self.assertEqual(float(m2["clip_cov/clip_cov_candidate_frac"]), 0.75)

  def test_all_six(self):
    b = _batch(1)
    items = list(TRANSFORMS.items())
    l1, g1, _ = _value_and_grad(er.chain(*TRANSFORMS.values()), b)
    self.assertTrue(np.isfinite(l1) and np.all(np.isfinite(g1[0])))
    l2, g2, _ = _value_and_grad(er.named_chain(*items), b)
    self.assertTrue(np.isfinite(l2) and np.all(np.isfinite(g2[0])))

  def test_all_neutral_is_identity(self):
    b = _batch(2)
    neutral = er.chain(
        regs.steer(1.0, 1.0), regs.clip_cov(0.0), regs.kl_cov(0.0),
        regs.ce_gppo(0.0, 0.0, reference_values=False),
        regs.lp_reg(neg_fraction=0.0), regs.forking_tokens(1.0))
    l0, g0, _ = _value_and_grad(er.chain(), b)
    l1, g1, _ = _value_and_grad(neutral, b)
    self.assertEqual(float(l0), float(l1))
    for x, y in zip(g0, g1):
      np.testing.assert_array_equal(x, y)


if __name__ == "__main__":
  absltest.main()
