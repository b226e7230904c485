"""Entropy observability: policy_loss's entropy metrics and the §3 law."""

from absl.testing import absltest
from absl.testing import parameterized
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np

import entropy_rl as er
from entropy_rl import regularizers
from tests import test_utils

# Spec §3 (f): π = (0.5, 0.3, 0.2), A = (1, 0, −1), η = 0.1.
PI = jnp.array([0.5, 0.3, 0.2])
ADV = jnp.array([1.0, 0.0, -1.0])


def _hand_batch():
  # Spec §3 covariance case: Ā = 0.8, ℓ̄ = −1.96,
  # c = [[2.232, 0.912, −1.248], [−2.628, 5.472, ·]].
  logp = [[-0.1, -1.2, -3.0], [-0.5, -5.0, -9.0]]
  return test_utils.make_batch(
      logp, np.asarray(logp) + 0.1, [[2, 2, 2], [-1, -1, 0]],
      [[1, 1, 1], [1, 1, 0]],
      entropy=[[0.4, 1.2, 2.0], [0.6, 2.5, 9.9]])


class PolicyLossMetricsTest(absltest.TestCase):

  def test_hand_values(self):
    b = _hand_batch()
    _, (_, m) = er.policy_loss(b, er.chain(), (), objective=er.ppo_clip())
    # Valid entropies (0.4, 1.2, 2.0, 0.6, 2.5): mean 1.34; sorted
    # (0.4, 0.6, 1.2, 2.0, 2.5), linear quantiles at positions 0.4, 2, 3.6.
    np.testing.assert_allclose(m["entropy"], 1.34, rtol=1e-6)
    np.testing.assert_allclose(m["entropy_q10"], 0.48, rtol=1e-6)
    np.testing.assert_allclose(m["entropy_q50"], 1.2, rtol=1e-6)
    np.testing.assert_allclose(m["entropy_q90"], 2.3, rtol=1e-6)
    # mean(c) = (2.232 + 0.912 − 1.248 − 2.628 + 5.472) / 5 = 0.948.
    np.testing.assert_allclose(m["cov_logp_adv"], 0.948, rtol=1e-5)
    np.testing.assert_allclose(m["pred_entropy_change"], -0.948, rtol=1e-5)
    np.testing.assert_allclose(m["nll"], 1.96, rtol=1e-6)
    np.testing.assert_allclose(m["approx_kl_old"], 0.1, rtol=1e-5)

  def test_old_entropy_is_used_without_current(self):
    b = _hand_batch()
    b = b._replace(old_entropy=b.entropy, entropy=None)
    _, (_, m) = er.policy_loss(b, er.chain(), (), objective=er.ppo_clip())
    np.testing.assert_allclose(m["entropy"], 1.34, rtol=1e-6)

  def test_metrics_are_averaged_over_scopes(self):
    b = test_utils.random_batch(1, rows=8, tokens=6)
    f = jax.jit(lambda b, k: er.policy_loss(
        b, er.chain(), (), objective=er.ppo_clip(), stat_scope=k)[1][1],
                static_argnums=1)
    m = f(b, 4)
    parts = [f(jax.tree.map(lambda x: x[i:i + 4], b), None) for i in (0, 4)]
    for k in ("entropy", "entropy_q50", "cov_logp_adv", "pred_entropy_change"):
      np.testing.assert_allclose(m[k], np.mean([p[k] for p in parts]),
                                 rtol=1e-5, err_msg=k)

  def test_batch_estimator_matches_the_law(self):
    # On-policy samples of one state: the token estimator cov(ℓ, A) estimates
    # Cov_π(log π, A) = 0.284209, so η · pred_entropy_change ≈ −0.028421.
    n = 64
    a = jax.random.categorical(jax.random.key(0), jnp.log(PI),
                               shape=(n, n))
    b = test_utils.make_batch(jnp.log(PI)[a], jnp.log(PI)[a], ADV[a],
                              np.ones((n, n)))
    _, (_, m) = er.policy_loss(b, er.chain(), (), objective=er.ppo_clip())
    np.testing.assert_allclose(m["cov_logp_adv"], 0.284209, rtol=0.05)
    np.testing.assert_allclose(
        0.1 * m["pred_entropy_change"],
        regularizers.entropy_change_law(jnp.log(PI), ADV, 0.1), rtol=0.05)


class EntropyChangeLawTest(parameterized.TestCase):

  @parameterized.parameters(("natural", -0.028421, -0.030750),
                            ("vanilla", -0.010732, -0.011134))
  def test_spec_hand_values(self, kind, predicted, actual):
    z = jnp.log(PI)
    np.testing.assert_allclose(
        regularizers.entropy_change_law(z, ADV, 0.1, kind), predicted,
        atol=1e-6)
    np.testing.assert_allclose(
        regularizers.entropy_change_exact(z, ADV, 0.1, kind), actual,
        atol=1e-6)

  def test_logit_shift_invariance_and_batching(self):
    z = jnp.stack([jnp.log(PI), jnp.log(PI) + 3.0])  # [2, V]
    out = regularizers.entropy_change_law(z, jnp.stack([ADV, ADV]), 0.1)
    np.testing.assert_allclose(out, [-0.028421] * 2, atol=1e-6)

  def test_jit_equals_eager(self):
    z = jax.random.normal(jax.random.key(1), (4, 7))
    a = jax.random.normal(jax.random.key(2), (4, 7))
    for kind in ("natural", "vanilla"):
      f = lambda z, a, kind=kind: regularizers.entropy_change_law(
          z, a, 0.05, kind)
      np.testing.assert_allclose(jax.jit(f)(z, a), f(z, a), rtol=1e-5,
                                 atol=1e-8)

  @settings(deadline=None, max_examples=20)
  @given(seed=st.integers(0, 10_000),
         kind=st.sampled_from(["natural", "vanilla"]))
  def test_first_order_agreement_for_small_steps(self, seed, kind):
    z = jax.random.normal(jax.random.key(seed), (8,)) * 1.5
    a = jax.random.normal(jax.random.key(seed + 1), (8,))
    pred, exact = _law_and_exact(z, a, kind == "natural")
    np.testing.assert_allclose(exact, pred, rtol=0.05, atol=3e-6)

  def test_bad_kind_raises(self):
    with self.assertRaisesRegex(ValueError, "natural, vanilla"):
      regularizers.entropy_change_law(jnp.log(PI), ADV, 0.1, "adam")


@jax.jit
def _law_and_exact(z, a, natural):
  eta = 3e-3

  def both(kind):
    return (regularizers.entropy_change_law(z, a, eta, kind),
            regularizers.entropy_change_exact(z, a, eta, kind))

  nat, van = both("natural"), both("vanilla")
  return jax.tree.map(lambda x, y: jnp.where(natural, x, y), nat, van)


if __name__ == "__main__":
  absltest.main()
