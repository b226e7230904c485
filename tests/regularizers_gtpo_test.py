"""GTPO and GRPO-S: spec §6 hand values, conservation, flags, properties."""


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
from tests import test_utils

# The package re-exports the constructor under the module's name.
from entropy_rl.regularizers import _gtpo as gtpo_lib

# Spec §6 (f): R = (1, 1, 0, 0), L = (3, 2, 3, 2), one group.
R = jnp.array([1.0, 1.0, 0.0, 0.0])
H = jnp.array([[2, 4, 1], [3, 1, 0], [4, 0.5, 3], [0.5, 4, 0]], jnp.float32)
M = jnp.array([[1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 1, 0]], jnp.float32)
G = jnp.zeros(4, jnp.int32)


def _spec_batch():
  return test_utils.make_batch(
      np.full((4, 3), -0.7), np.full((4, 3), -0.8), np.zeros((4, 3)), M,
      old_entropy=H, entropy=H, rewards=R, group_ids=G)


def _np_norm(x, sel, eps=1e-8):
  """Reference: (x − mean) / sqrt(var + ε) over the selected entries."""
  v = x[sel]
  return np.where(sel, (x - v.mean()) / np.sqrt(v.var() + eps), 0.0)


class ShapedRewardTest(absltest.TestCase):

  def test_spec_hand_values(self):
    shaped, pos = gtpo_lib.gtpo_shaped_rewards(R, H, M, G)
    np.testing.assert_allclose(
        shaped, [[1.08, 1.16, 1.1], [1.12, 1.04, 0],
                 [-1.0222, -1.1778, -1.1], [-1.1778, -1.0222, 0]], atol=5e-5)
    np.testing.assert_array_equal(pos, [1, 1, 0, 0])

  def test_alpha2_zero_is_uniform(self):
    shaped, _ = gtpo_lib.gtpo_shaped_rewards(R, H, M, G, alpha1=0.7,
                                             alpha2=0.0)
    a1 = np.float32(0.7)
    np.testing.assert_array_equal(
        shaped, np.where(M > 0, np.where(R[:, None] > 0.5, a1, -a1), 0.0))

  def test_equal_entropies_give_plus_minus_one(self):
    shaped, _ = gtpo_lib.gtpo_shaped_rewards(
        R, jnp.full_like(H, 1.3), M, G, alpha1=0.9, alpha2=0.1)
    np.testing.assert_allclose(
        shaped, np.where(M > 0, np.where(R[:, None] > 0.5, 1.0, -1.0), 0.0),
        rtol=1e-6)

  @settings(deadline=None, max_examples=25)
  @given(seed=st.integers(0, 10_000))
  def test_conservation_with_alpha_sum_one(self, seed):
    # α₁ + α₂ = 1, R ∈ {0, 1}: Σ_{O⁺} r̃⁺ = d_t and Σ_{O⁻} r̃⁻ = −h_t at every
    # position of every group (here two groups of 4, ragged lengths).
    rng = np.random.default_rng(seed)
    r = rng.integers(0, 2, size=8).astype(np.float32)
    h = rng.uniform(0.05, 4.0, size=(8, 6)).astype(np.float32)
    lens = rng.integers(1, 7, size=8)
    m = (np.arange(6)[None] < lens[:, None]).astype(np.float32)
    g = np.repeat([3, 9], 4)  # arbitrary ids
    shaped, pos = _shaped_jit(jnp.asarray(r), jnp.asarray(h), jnp.asarray(m),
                              jnp.asarray(g))
    shaped, pos = np.asarray(shaped), np.asarray(pos)
    for gid in (3, 9):
      rows = g == gid
      p = rows & pos
      n = rows & ~pos
      np.testing.assert_allclose(shaped[p].sum(0), m[p].sum(0), rtol=2e-5,
                                 atol=2e-5)
      np.testing.assert_allclose(shaped[n].sum(0), -m[n].sum(0), rtol=2e-5,
                                 atol=2e-5)


@jax.jit
def _shaped_jit(r, h, m, g):
  return gtpo_lib.gtpo_shaped_rewards(r, h, m, g, alpha1=0.9, alpha2=0.1)


class AdvantageTest(parameterized.TestCase):

  def test_separate_matches_reference_formula(self):
    shaped = np.asarray(gtpo_lib.gtpo_shaped_rewards(R, H, M, G)[0])
    valid = np.asarray(M) > 0
    pos = valid & (np.asarray(R)[:, None] > 0.5)
    want = _np_norm(shaped, pos) + _np_norm(shaped, valid & ~pos)
    got = gtpo_lib.gtpo_advantages(R, H, M, G, normalization="separate")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # Hand check: O⁺ rewards (1.08, 1.16, 1.1, 1.12, 1.04) have mean 1.1, so
    # the last O⁺ token of row 0 gets 0.
    self.assertAlmostEqual(float(got[0, 2]), 0.0, places=5)

  def test_joint_matches_reference_formula(self):
    shaped = np.asarray(gtpo_lib.gtpo_shaped_rewards(R, H, M, G)[0])
    valid = np.asarray(M) > 0
    pos = valid & (np.asarray(R)[:, None] > 0.5)
    want = (_np_norm(np.where(pos, shaped, 0.0), valid) +
            _np_norm(np.where(valid & ~pos, shaped, 0.0), valid))
    got = gtpo_lib.gtpo_advantages(R, H, M, G, normalization="joint")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

  def test_the_two_readings_differ(self):
    sep = gtpo_lib.gtpo_advantages(R, H, M, G, normalization="separate")
    joint = gtpo_lib.gtpo_advantages(R, H, M, G, normalization="joint")
    self.assertGreater(float(jnp.max(jnp.abs(sep - joint))), 1.0)
    # Separate centring removes the correct-vs-incorrect signal (each set has
    # mean 0); the joint reading keeps it.
    pos = (M > 0) & (R[:, None] > 0.5)
    neg = (M > 0) & (R[:, None] <= 0.5)
    self.assertAlmostEqual(float(er.core.ops.masked_mean(sep, pos)), 0.0,
                           places=5)
    self.assertGreater(float(er.core.ops.masked_mean(joint, pos)), 1.5)
    self.assertLess(float(er.core.ops.masked_mean(joint, neg)), -1.5)

  def test_default_keeps_correct_vs_incorrect_signal(self):
    # R = (1, 1, 0, 0), equal entropies, 2 tokens each: r̃ = +1.1 on O⁺
    # tokens, −1.1 on O⁻ tokens (α₁ = 1, α₂ = 0.1·(1/2)·2).
    # Joint (default): r̃⁺ extended by 0 -> (1.1, 1.1, 0, 0) per row, mean
    # 0.55, std 0.55 -> Â⁺ = (+1, +1, −1, −1); likewise Â⁻ = (+1, +1, −1,
    # −1); A = Â⁺ + Â⁻ = ±2. Separate: each set is constant -> A = 0.
    r = jnp.array([1.0, 1.0, 0.0, 0.0])
    h, m, g = jnp.ones((4, 2)), jnp.ones((4, 2)), jnp.zeros(4, jnp.int32)
    want = np.array([[2.0, 2.0]] * 2 + [[-2.0, -2.0]] * 2)
    np.testing.assert_allclose(gtpo_lib.gtpo_advantages(r, h, m, g), want,
                               rtol=1e-6)
    np.testing.assert_allclose(gtpo_lib.gtpo_advantages(
        r, h, m, g, normalization="joint"), want, rtol=1e-6)
    np.testing.assert_allclose(gtpo_lib.gtpo_advantages(
        r, h, m, g, normalization="separate"), 0.0, atol=1e-6)
    b = test_utils.make_batch(np.zeros((4, 2)), np.zeros((4, 2)),
                              np.zeros((4, 2)), m, old_entropy=h, entropy=h,
                              rewards=r, group_ids=g)
    out, _, _ = er.prepare_batch(b, regularizers.gtpo(), ())
    np.testing.assert_allclose(out.advantages, want, rtol=1e-6)

  def test_groups_are_independent(self):
    # Two copies of the spec group in one batch give the same advantages.
    r2, h2, m2 = (jnp.concatenate([x, x]) for x in (R, H, M))
    g2 = jnp.array([0, 0, 0, 0, 1, 1, 1, 1])
    for norm in gtpo_lib.NORMALIZATIONS:
      one = gtpo_lib.gtpo_advantages(R, H, M, G, normalization=norm)
      two = gtpo_lib.gtpo_advantages(r2, h2, m2, g2, normalization=norm)
      np.testing.assert_allclose(two[:4], one, rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(two[4:], one, rtol=1e-5, atol=1e-6)

  def test_bad_normalization_raises(self):
    with self.assertRaisesRegex(ValueError, "separate, joint"):
      regularizers.gtpo(normalization="global")


class GrpoSTest(absltest.TestCase):

  def test_hand_values(self):
    # Ĥ = (7/3, 2, 2.5, 2.25); O⁺: 1 + 0.1·(7/13)·2, 1 + 0.1·(6/13)·2;
    # O⁻: 1/Ĥ = (0.4, 4/9), shares (0.473684, 0.526316), h = 2.
    shaped = gtpo_lib.grpo_s_shaped_rewards(R, H, M, G)
    np.testing.assert_allclose(
        shaped, [1.107692, 1.092308, -1.094737, -1.105263], atol=1e-6)

  def test_transform_is_grpo_of_the_shaped_reward(self):
    b = _spec_batch()
    out, _, m = er.prepare_batch(b, regularizers.grpo_s(), ())
    shaped = gtpo_lib.grpo_s_shaped_rewards(R, H, M, G)
    want = er.core.advantages.grpo(shaped, G)[:, None] * M
    np.testing.assert_allclose(out.advantages, want, rtol=1e-6)
    self.assertIn("grpo_s_reward_pos", m)

  def test_alpha2_zero_with_pm1_rewards_is_grpo(self):
    # r̃ = R exactly, so loss and gradients equal the GRPO pipeline's.
    b = test_utils.random_batch(3, rows=8, tokens=5, groups=2)
    b = b._replace(rewards=2.0 * b.rewards - 1.0)
    obj = er.ppo_clip()
    t1 = regularizers.grpo_s(1.0, 0.0)
    t0 = regularizers.grpo_advantages()
    b1, _, _ = er.prepare_batch(b, t1, ())
    b0, _, _ = er.prepare_batch(b, t0, ())
    np.testing.assert_array_equal(b1.advantages, b0.advantages)
    l1, g1, _ = test_utils.loss_and_grads(b1, t1, obj, state=())
    l0, g0, _ = test_utils.loss_and_grads(b0, t0, obj, state=())
    self.assertEqual(float(l1), float(l0))
    chex.assert_trees_all_equal(g1, g0)


def _transforms():
  return {"gtpo_separate": regularizers.gtpo(normalization="separate"),
          "gtpo_joint": regularizers.gtpo(normalization="joint"),
          "grpo_s": regularizers.grpo_s()}


class TransformTest(parameterized.TestCase):

  def test_prepare_writes_token_advantages(self):
    out, _, m = er.prepare_batch(_spec_batch(), regularizers.gtpo(), ())
    want = gtpo_lib.gtpo_advantages(R, H, M, G)
    np.testing.assert_allclose(out.advantages, want, rtol=1e-6)
    np.testing.assert_allclose(m["gtpo_reward_pos"], 1.1, rtol=1e-5)
    np.testing.assert_allclose(m["gtpo_pos_frac"], 0.5)

  def test_update_is_the_identity_on_the_loss(self):
    # A prepare-only transform: on the prepared batch the loss side equals the
    # base objective exactly.
    for t in _transforms().values():
      b, _, _ = er.prepare_batch(_spec_batch(), t, ())
      l1, g1, _ = test_utils.loss_and_grads(b, t, er.ppo_clip(), state=())
      l0, g0, _ = test_utils.loss_and_grads(b, er.chain(), er.ppo_clip(),
                                            state=())
      self.assertEqual(float(l1), float(l0))
      chex.assert_trees_all_equal(g1, g0)

  @parameterized.named_parameters(*[(k, k) for k in sorted(_transforms())])
  def test_jit_equals_eager(self, name):
    t = _transforms()[name]
    b = test_utils.random_batch(4, rows=8, tokens=5, groups=2)
    f = lambda b: er.prepare_batch(b, t, ())[0].advantages
    np.testing.assert_allclose(jax.jit(f)(b), f(b), rtol=1e-5, atol=1e-6)

  @settings(deadline=None, max_examples=8)
  @given(seed=st.integers(0, 1000), extra=st.sampled_from([1, 3]),
         name=st.sampled_from(sorted(_transforms())))
  def test_padded_tokens_change_nothing(self, seed, extra, name):
    b = test_utils.random_batch(seed, rows=8, tokens=5, groups=2)
    f = _PREPARE[name]
    a0 = f(b)
    a1 = f(test_utils.pad_batch(b, extra))
    np.testing.assert_allclose(a1[:, :5], a0, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(a1[:, 5:], 0.0)

  def test_static_shapes(self):
    t = regularizers.gtpo()
    b = test_utils.random_batch(0, rows=8, tokens=5)
    out = jax.eval_shape(lambda b: er.prepare_batch(b, t, ())[0].advantages,
                         b)
    self.assertEqual(out.shape, (8, 5))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(b):
      b, _, _ = er.prepare_batch(b, t, ())
      return er.policy_loss(b, t, (), objective=er.ppo_clip())[0]

    for seed in range(3):
      step(test_utils.random_batch(seed, rows=8, tokens=5))

  def test_scope_equals_manual_microbatches(self):
    t = regularizers.gtpo(normalization="joint")
    b, _, _ = er.prepare_batch(test_utils.random_batch(5, 8, 5), t, ())
    f = jax.jit(lambda b, k: er.policy_loss(b, t, (), objective=er.ppo_clip(),
                                            stat_scope=k), static_argnums=1)
    loss, _ = f(b, 2)
    manual = [f(jax.tree.map(lambda x: x[i:i + 2], b), None)[0]
              for i in range(0, 8, 2)]
    np.testing.assert_allclose(loss, np.mean(manual), rtol=1e-6)

  def test_chain_with_qae_last_writer_wins(self):
    # Both write advantages (the same quantity): the order matters.
    b = test_utils.random_batch(6, rows=8, tokens=5, groups=2)
    gq = er.chain(regularizers.gtpo(), regularizers.qae())
    qg = er.chain(regularizers.qae(), regularizers.gtpo())
    a_gq = er.prepare_batch(b, gq, gq.init(None))[0].advantages
    a_qg = er.prepare_batch(b, qg, qg.init(None))[0].advantages
    a_q = er.prepare_batch(b, regularizers.qae(), ())[0].advantages
    a_g = er.prepare_batch(b, regularizers.gtpo(), ())[0].advantages
    np.testing.assert_array_equal(a_gq, a_q)
    np.testing.assert_array_equal(a_qg, a_g)

  def test_missing_entropy_raises(self):
    b = test_utils.random_batch(0)._replace(old_entropy=None, entropy=None)
    with self.assertRaisesRegex(ValueError, "old_entropy"):
      er.prepare_batch(b, regularizers.gtpo(), ())


_PREPARE = {k: jax.jit(lambda b, t=t: er.prepare_batch(b, t, ())[0].advantages)
            for k, t in _transforms().items()}


if __name__ == "__main__":
  absltest.main()
