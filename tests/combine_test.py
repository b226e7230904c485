"""chain / named_chain: identity, composition by hand, names, rng, needs."""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

import entropy_rl as er
from entropy_rl import regularizers
from entropy_rl.core import reductions
from tests import test_utils


def _scale_weights(factor, name="scale"):
  def update(batch, state, *, rng=None, step=None, **kw):
    del rng, step, kw
    return er.core.ops.add_metrics(
        batch._replace(weights=batch.weights * factor), **{name: factor}), state
  return er.EntropyTransform(er.init_empty_state, update)


def _record_rng():
  def update(batch, state, *, rng=None, step=None, **kw):
    del step, kw
    return er.core.ops.add_metrics(
        batch, draw=jax.random.uniform(rng)), state
  return er.EntropyTransform(er.init_empty_state, update)


class ChainTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.batch = test_utils.random_batch(0)
    self.obj = er.ppo_clip(0.2, 0.28, dual_c=3.0)

  def test_empty_chain_is_identity(self):
    l0, g0, _ = test_utils.loss_and_grads(self.batch, er.chain(), self.obj)
    l1, g1, _ = test_utils.loss_and_grads(self.batch, er.identity(), self.obj)
    self.assertEqual(float(l0), float(l1))
    np.testing.assert_array_equal(g0[0], g1[0])
    # And equals the hand-written objective.
    b = er.core.loss.fill_batch(self.batch, self.obj)
    tok, _ = self.obj.token_loss(b)
    np.testing.assert_allclose(l0, er.aggregate(tok, b.mask), rtol=1e-6)

  def test_chain_equals_by_hand(self):
    a = regularizers.entropy_bonus(0.01)
    b = regularizers.kl_penalty(0.1, "k3")
    t = er.chain(a, b)
    filled = er.core.loss.fill_batch(self.batch, self.obj)
    by_hand, _ = a.update(filled, (), rng=None, step=0)
    by_hand, _ = b.update(by_hand, (), rng=None, step=0)
    chained, _ = t.update(filled, t.init(None), rng=None, step=0)
    for k in by_hand.loss_terms:
      np.testing.assert_array_equal(by_hand.loss_terms[k],
                                    chained.loss_terms[k])
    self.assertEqual(set(t.needs.fields), {"entropy", "ref_logp"})

  def test_chain_of_one_equals_member(self):
    t = regularizers.entropy_bonus(0.05)
    l0, g0, _ = test_utils.loss_and_grads(self.batch, t, self.obj)
    l1, g1, _ = test_utils.loss_and_grads(self.batch, er.chain(t), self.obj)
    self.assertEqual(float(l0), float(l1))
    np.testing.assert_array_equal(g0[1], g1[1])

  def test_duplicate_term_raises(self):
    t = er.chain(regularizers.entropy_bonus(0.1),
                 regularizers.entropy_bonus(0.2))
    with self.assertRaisesRegex(ValueError, "already exists"):
      er.policy_loss(self.batch, t, t.init(None), objective=self.obj)

  def test_state_length_checked(self):
    t = er.chain(regularizers.entropy_bonus(0.1))
    with self.assertRaisesRegex(ValueError, "state of 0 entries"):
      er.policy_loss(self.batch, t, (), objective=self.obj)

  def test_weights_compose_multiplicatively(self):
    t = er.chain(_scale_weights(0.5), _scale_weights(3.0, "s2"))
    _, (_, m) = er.policy_loss(self.batch, t, t.init(None), objective=self.obj)
    np.testing.assert_allclose(m["weight_mean"], 1.5, rtol=1e-6)


class NamedChainTest(absltest.TestCase):

  def test_rejects_duplicate_names(self):
    with self.assertRaisesRegex(ValueError, r"duplicate names \['a'\]"):
      er.named_chain(("a", er.chain()), ("a", er.chain()))

  def test_prefixes_terms_and_metrics_and_keeps_order(self):
    t = er.named_chain(("ent", regularizers.entropy_bonus(0.01)),
                       ("kl", regularizers.kl_penalty(0.1)),
                       ("adapt", regularizers.adaptive_entropy(1.0)))
    state = t.init(None)
    self.assertEqual(list(state.keys()), ["ent", "kl", "adapt"])
    b = test_utils.random_batch(1)
    _, (_, m) = er.policy_loss(b, t, state, objective=er.ppo_clip())
    for key in ("terms/ent/entropy_bonus", "terms/kl/kl",
                "terms/adapt/adaptive_entropy", "kl/kl_mean",
                "ent/entropy_coef"):
      self.assertIn(key, m)
    self.assertIs(er.get_state(state, "adapt"), state["adapt"])

  def test_rng_is_folded_by_name(self):
    b = er.core.loss.fill_batch(test_utils.random_batch(2), er.ppo_clip())
    key = jax.random.key(0)
    t1 = er.named_chain(("x", _record_rng()))
    t2 = er.named_chain(("other", _record_rng()), ("x", _record_rng()))
    out1, _ = t1.update(b, t1.init(None), rng=key, step=0)
    out2, _ = t2.update(b, t2.init(None), rng=key, step=0)
    # Adding a member leaves x's random stream unchanged.
    self.assertEqual(float(out1.metrics["x/draw"]),
                     float(out2.metrics["x/draw"]))
    self.assertNotEqual(float(out2.metrics["other/draw"]),
                        float(out2.metrics["x/draw"]))

  def test_equal_reductions_merge_different_ones_raise(self):
    t = er.chain(regularizers.siren(0.1), regularizers.siren(0.2, term="s2"))
    self.assertEqual(sorted(t.needs.vocab), ["nucleus_entropy"])
    # Reductions are values: equal settings are equal (no identity cache).
    self.assertEqual(t.needs.vocab["nucleus_entropy"],
                     reductions.nucleus_entropy(0.8))
    self.assertIs(t.needs.vocab["nucleus_entropy"],
                  t.needs.old_vocab["nucleus_entropy"])
    with self.assertRaisesRegex(ValueError, "different vocabulary reductions"):
      er.chain(regularizers.siren(0.1),
               regularizers.siren(0.1, p_top=0.9, term="s2"))

  def test_eval_shape_of_init(self):
    t = er.named_chain(("adapt", regularizers.adaptive_entropy(1.0)),
                       ("ent", regularizers.entropy_bonus(0.01)))
    abstract = jax.eval_shape(t.init, None)
    self.assertEqual(abstract["adapt"].coef.shape, ())
    self.assertEqual(abstract["adapt"].coef.dtype, jnp.float32)


if __name__ == "__main__":
  absltest.main()
