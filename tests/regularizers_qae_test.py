"""QAE: spec §10 hand values, the binary gate, transform properties."""

from absl.testing import absltest
import chex
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np

import entropy_rl as er
from entropy_rl import regularizers
from entropy_rl.core import advantages as adv_lib
from tests import test_utils

# Spec §10 (f), K = 0.4, three groups of four in one batch.
R = jnp.array([1, 0, 0, 0, 1, 1, 1, 0, 1, 1, 0, 0], jnp.float32)
G = jnp.repeat(jnp.array([7, 2, 5]), 4)  # arbitrary ids
A = [2, 0, 0, 0, 0, 0, 0, -2, 1.732048, 1.732048, 0, 0]


def _batch(rewards=R, groups=G, tokens=3, seed=0):
  rng = np.random.default_rng(seed)
  rows = rewards.shape[0]
  lens = rng.integers(1, tokens + 1, size=rows)
  mask = (np.arange(tokens)[None] < lens[:, None]).astype(np.float32)
  logp = -rng.uniform(0.1, 3.0, size=(rows, tokens))
  return test_utils.make_batch(logp, logp - 0.05, np.zeros((rows, tokens)),
                               mask, rewards=rewards, group_ids=groups)


class QaeTest(absltest.TestCase):

  def test_spec_hand_values(self):
    b = _batch()
    out, _, m = er.prepare_batch(b, regularizers.qae(0.4), ())
    # ε = 1e-6 in σ + ε: 1 / (0.5 + 1e-6) = 1.999996 (the spec prints 2).
    np.testing.assert_allclose(out.advantages, np.asarray(A)[:, None] * b.mask,
                               atol=5e-6)
    # 9 of 12 rows get A = 0; Q = (0, 1, 0) per group.
    np.testing.assert_allclose(m["qae_zero_frac"], 8 / 12)
    np.testing.assert_allclose(m["qae_baseline"], 1 / 3, rtol=1e-6)

  @settings(deadline=None, max_examples=30)
  @given(n=st.integers(2, 8), data=st.data())
  def test_binary_gate(self, n, data):
    # Q_K = 0 if p <= 1 − K, else 1, so only successes (hard prompts) or only
    # failures (easy prompts) get a non-zero advantage. One shape: the group
    # is the first n of 8 rows, the rest a second group.
    k = data.draw(st.sampled_from([0.2, 0.4, 0.5, 0.8]))
    s = data.draw(st.integers(0, n))
    r = jnp.asarray([1.0] * s + [0.0] * (8 - s))
    g = (jnp.arange(8) >= n).astype(jnp.int32)
    q, a = _GATES[k](r, g)
    p = s / n
    hard = p <= 1 - k + 1e-9
    np.testing.assert_array_equal(q[:n], 0.0 if hard else 1.0)
    if hard:
      self.assertTrue(bool(jnp.all(a[s:n] == 0)))
    else:
      self.assertTrue(bool(jnp.all(a[:s] == 0)))

  def test_constant_groups_match_grpo_exactly(self):
    # Where Q_K equals the group mean (constant groups) QAE is GRPO.
    r = jnp.array([1, 1, 1, 1, 0, 0, 0, 0], jnp.float32)
    b = _batch(r, jnp.repeat(jnp.arange(2), 4))
    obj = er.ppo_clip()
    bq, _, _ = er.prepare_batch(b, regularizers.qae(), ())
    bg, _, _ = er.prepare_batch(b, regularizers.grpo_advantages(), ())
    np.testing.assert_array_equal(bq.advantages, bg.advantages)
    lq, gq, _ = test_utils.loss_and_grads(bq, regularizers.qae(), obj,
                                          state=())
    lg, gg, _ = test_utils.loss_and_grads(bg, er.chain(), obj, state=())
    self.assertEqual(float(lq), float(lg))
    chex.assert_trees_all_equal(gq, gg)

  def test_no_std_variant(self):
    out, _, _ = er.prepare_batch(_batch(), regularizers.qae(
        0.4, normalize_std=False), ())
    np.testing.assert_allclose(
        out.advantages[:, 0], [1, 0, 0, 0, 0, 0, 0, -1, 1, 1, 0, 0])

  def test_jit_equals_eager(self):
    b = _batch()
    t = regularizers.qae()
    f = lambda b: er.prepare_batch(b, t, ())
    b0, _, m0 = f(b)
    b1, _, m1 = jax.jit(f)(b)
    np.testing.assert_allclose(b1.advantages, b0.advantages, rtol=1e-6)
    for k in m0:
      np.testing.assert_allclose(m1[k], m0[k], rtol=1e-6, err_msg=k)

  @settings(deadline=None, max_examples=8)
  @given(seed=st.integers(0, 1000), extra=st.sampled_from([1, 2]))
  def test_padded_tokens_change_nothing(self, seed, extra):
    b = _batch(seed=seed)
    a0, l0 = _PREP_LOSS(b)
    a1, l1 = _PREP_LOSS(test_utils.pad_batch(b, extra))
    np.testing.assert_allclose(a1[:, :3], a0, atol=1e-6)
    np.testing.assert_array_equal(a1[:, 3:], 0.0)
    np.testing.assert_allclose(l1, l0, rtol=1e-6)

  def test_static_shapes(self):
    t = regularizers.qae()
    out = jax.eval_shape(lambda b: er.prepare_batch(b, t, ())[0].advantages,
                         _batch())
    self.assertEqual(out.shape, (12, 3))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(b):
      b, _, _ = er.prepare_batch(b, t, ())
      return er.policy_loss(b, t, (), objective=er.ppo_clip())[0]

    for seed in range(3):
      step(_batch(seed=seed))

  def test_scope_equals_manual_microbatches(self):
    t = regularizers.qae()
    b, _, _ = er.prepare_batch(_batch(), t, ())  # whole-batch groups
    f = jax.jit(lambda b, k: er.policy_loss(b, t, (), objective=er.ppo_clip(),
                                            stat_scope=k), static_argnums=1)
    loss, _ = f(b, 4)
    manual = [f(jax.tree.map(lambda x: x[i:i + 4], b), None)[0]
              for i in range(0, 12, 4)]
    np.testing.assert_allclose(loss, np.mean(manual), rtol=1e-6)

  def test_needs_rewards(self):
    with self.assertRaisesRegex(ValueError, "rewards"):
      er.prepare_batch(_batch()._replace(rewards=None), regularizers.qae(), ())


def _make_gate(k):
  baseline = adv_lib.quantile_baseline(k)
  return jax.jit(lambda r, g: (baseline(r, g, r.shape[0]),
                               adv_lib.grpo(r, g, baseline=baseline)))


_GATES = {k: _make_gate(k) for k in (0.2, 0.4, 0.5, 0.8)}


@jax.jit
def _PREP_LOSS(b):  # pylint: disable=invalid-name
  b, _, _ = er.prepare_batch(b, regularizers.qae(), ())
  return b.advantages, er.policy_loss(b, er.chain(), (),
                                      objective=er.ppo_clip())[0]


if __name__ == "__main__":
  absltest.main()
