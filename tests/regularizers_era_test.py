"""ERA for LLMs (spec A5.1) through the chunked statistics pass."""


from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

import entropy_rl as er
from entropy_rl.core import reductions
from entropy_rl.core import token_stats

from entropy_rl.regularizers import _era as era


def _entropy(z):
  p = jax.nn.softmax(z)
  return float(-jnp.sum(p * jnp.log(p)))


class EraTest(absltest.TestCase):

  def test_spec_entropies_and_fixed_point(self):
    z = jnp.array([2.0, 1.0, 0.0])
    np.testing.assert_allclose([_entropy(z), _entropy(2 * z), _entropy(z / 2)],
                               [0.83240, 0.44106, 1.02019], atol=1e-5)
    # softmax(κz) = [0.9, 0.1] implies sampling softmax(z) ∝ p^{1/κ}.
    p = np.array([0.9, 0.1]) ** 0.5
    np.testing.assert_allclose(p / p.sum(), [0.75, 0.25], atol=1e-6)

  def test_top_fraction_entropy(self):
    ent = jnp.array([[5.0, 1.0, 2.0, 3.0, 4.0, 0.0, 9.0]])
    mask = jnp.array([[1, 1, 1, 1, 1, 1, 0]], jnp.float32)
    # L = 6 -> k = 1 -> the largest valid entropy (9.0 is padding).
    np.testing.assert_allclose(era.top_fraction_entropy(ent, mask), [5.0])
    mask = jnp.ones((1, 10))
    ent = jnp.arange(10.0)[None]
    np.testing.assert_allclose(era.top_fraction_entropy(ent, mask), [8.5])

  def _batch(self, topk):
    rng = np.random.default_rng(0)
    n, d, v = 12, 8, 64
    h = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(d, v)) * 0.8, jnp.float32)
    y = jnp.asarray(rng.integers(0, v, n))
    t = era.era_llm(2.0, omega_low=2.0, omega_high=3.5, topk=topk)
    cur = token_stats.token_stats(h, w, y, reductions=t.needs.vocab,
                                  token_chunk=4, vocab_chunk=16)
    to_bt = lambda x: x.reshape(3, 4)
    stats = {k: to_bt(cur[k]) for k in t.needs.vocab}
    b = er.PolicyBatch(
        logp=to_bt(cur["logp"]), old_logp=to_bt(cur["logp"]),
        advantages=jnp.repeat(jnp.array([[1.0], [1.0], [-1.0]]), 4, 1),
        mask=jnp.ones((3, 4)), old_entropy=to_bt(cur["entropy"]),
        vocab_stats=stats, old_vocab_stats=stats)
    return t, b, h, w, y

  def test_rows_pick_their_proxy(self):
    t, b, h, w, y = self._batch(topk=False)
    out, _ = t.update(er.core.loss.fill_batch(b, era.era_objective()), (),
                      rng=None, step=0)
    h_hat = era.top_fraction_entropy(b.old_entropy, b.mask)
    sharp, flat = era.era_row_choice(b.advantages[:, 0], h_hat,
                                     omega_low=2.0, omega_high=3.5)
    z = h @ w
    full = {2.0: jax.nn.log_softmax(2 * z), 0.5: jax.nn.log_softmax(z / 2),
            1.0: jax.nn.log_softmax(z)}
    for row in range(3):
      kappa = 2.0 if sharp[row] else 0.5 if flat[row] else 1.0
      expected = jnp.take_along_axis(full[kappa], y[:, None], 1)[:, 0]
      np.testing.assert_allclose(out.logp[row], expected.reshape(3, 4)[row],
                                 atol=1e-5)
    self.assertFalse(bool(sharp[2] or flat[2]))  # A < 0: untouched

  def test_topk_with_full_vocab_equals_log_softmax_and_loss_runs(self):
    red = reductions.topk_logp(64, 1.0)
    rng = np.random.default_rng(1)
    h = jnp.asarray(rng.normal(size=(4, 8)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(8, 64)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 64, 4))
    s = token_stats.token_stats(h, w, y, reductions={"x": red})
    np.testing.assert_allclose(s["x"], s["logp"], atol=1e-5)
    t, b, *_ = self._batch(topk=True)
    loss, _ = er.policy_loss(b, t, (), objective=era.era_objective())
    self.assertTrue(np.isfinite(float(loss)))

  def test_kappa_one_is_identity(self):
    t = era.era_llm(1.0, topk=False)
    _, b, *_ = self._batch(topk=False)
    b = b._replace(vocab_stats={"era_sharp": b.logp, "era_flat": b.logp},
                   old_vocab_stats={"era_sharp": b.logp, "era_flat": b.logp})
    l0, _ = er.policy_loss(b, er.chain(), (), objective=era.era_objective())
    l1, _ = er.policy_loss(b, t, (), objective=era.era_objective())
    self.assertEqual(float(l0), float(l1))


if __name__ == "__main__":
  absltest.main()
