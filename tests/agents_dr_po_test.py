"""DR-PO dataset resets in the agent rollout (spec A7): forced roll-in
turns, their exclusion from the policy gradient, β = 0."""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from entropy_rl.models import as_functions
from entropy_rl.models import Decoder
from entropy_rl.models import DecoderConfig

from entropy_rl import agent_builders as build
from entropy_rl import sampling
from entropy_rl.agents import _dr_po as dr_po
from entropy_rl.agents import _layouts as layouts
from entropy_rl.agents import _token_game as game

# Compiles whole rollouts / iterations: XLA with most optimisations off
# (tests/conftest.py).
UNOPTIMISED_COMPILES = True

CFG = DecoderConfig(vocab_size=16, hidden_size=16, num_layers=1, num_heads=2,
                    num_kv_heads=2, intermediate_size=32)
DEMO = ((2, 8, 8, 8),) * 3  # ℓ = 3 tool calls


class DatasetResetTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.fns, cls.params = as_functions(Decoder(CFG, rngs=nnx.Rngs(0)))
    cls.env = game.token_game(num_slots=1, num_values=2, max_turns=4,
                              command_mod=16)

  def roll(self, beta):
    reset = build.DatasetReset(beta, DEMO)
    f = jax.jit(lambda p, k: build.dataset_reset_rollout(
        self.fns, self.env, 2, 3, sampling.SamplingMethod(), None, reset, p,
        k))
    return f(self.params, jax.random.PRNGKey(1))

  def test_forced_turns_and_pg_mask(self):
    tr = self.roll(1.0).trajectories
    rollin = np.asarray(tr.aux["rollin_turns"]).astype(int)
    self.assertTrue(set(rollin.tolist()) <= {1, 2})  # U{1, ℓ−1}
    self.assertLen(set(rollin.tolist()), 2)
    seg, tok = np.asarray(tr.segment_ids), np.asarray(tr.tokens)
    ent = np.asarray(tr.entropy)
    for r in range(6):
      for t in range(rollin[r]):
        np.testing.assert_array_equal(tok[r][seg[r] == t], DEMO[0])
        np.testing.assert_array_equal(ent[r][seg[r] == t], 0.0)  # one-hot
      # A forced tool call is answered: [SLOT, VALUE + d] observations.
      self.assertGreaterEqual(int(np.asarray(tr.aux["n_tool_calls"])[r]),
                              rollin[r])
      free = seg[r] >= rollin[r]
      self.assertGreater(float(ent[r][free].sum()), 0.0)
    pb = layouts.policy_batch(tr)
    out, _ = dr_po.dr_po_turns().update(pb, (), rng=None, step=0)
    # Out of the PG loss (weight 0), still in the loss mask.
    np.testing.assert_array_equal(out.mask, pb.mask)
    kept = (np.asarray(out.weights) * np.asarray(out.mask) > 0).sum(1)
    np.testing.assert_array_equal(
        kept, np.asarray(tr.loss_mask).sum(1) - 4 * rollin)
    np.testing.assert_allclose(out.metrics["rollin_frac"],
                               4 * rollin.sum() / np.asarray(
                                   tr.loss_mask).sum(), rtol=1e-6)

  def test_no_reset_at_beta_zero(self):
    tr = self.roll(0.0).trajectories
    np.testing.assert_array_equal(tr.aux["rollin_turns"], 0.0)
    pb = layouts.policy_batch(tr)
    out, _ = dr_po.dr_po_turns().update(pb, (), rng=None, step=0)
    np.testing.assert_array_equal(out.mask, pb.mask)
    np.testing.assert_allclose(out.weights, 1.0, rtol=1e-6)


class PGOnlyMaskTest(absltest.TestCase):
  """Spec A7 (c) 5: only the PG loss drops roll-in tokens; the entropy
  bonus and the KL term still see them (hand-computed, token-mean)."""

  def loss(self, member, **aux):
    import entropy_rl as er
    from entropy_rl import regularizers
    # Row 0: turns [0, 0, 1, 1], turn 0 forced (tokens 0, 1); row 1: no
    # roll-in, 3 tokens. Ratio 1, so a token's PPO loss is −A.
    mask = jnp.array([[1.0, 1, 1, 1], [1, 1, 1, 0]])
    pb = er.PolicyBatch(
        logp=-jnp.ones((2, 4)), old_logp=-jnp.ones((2, 4)),
        advantages=jnp.array([[1.0] * 4, [-0.5] * 4]) * mask, mask=mask,
        entropy=jnp.array([[2.0, 2, 0.5, 0.5], [0.5, 0.5, 0.5, 0]]),
        ref_logp=jnp.array([[-3.0, -3, -1, -1], [-1.0] * 4]),
        segment_ids=jnp.array([[0, 0, 1, 1], [0, 1, 1, -1]]), aux=aux)
    t = er.named_chain(("dr_po", member),
                       ("bonus", regularizers.entropy_bonus(0.1)),
                       ("kl", regularizers.kl_penalty(0.1, "k1")))
    loss, (_, m) = er.policy_loss(pb, t, t.init(None),
                                  objective=er.ppo_clip(0.2))
    return float(loss), m

  def check(self, loss, m):
    pg = (-1.0 * 2 + 0.5 * 3) / 5  # −0.1: the 5 policy tokens only
    bonus = -0.1 * (2 + 2 + 0.5 * 5) / 7  # −0.092857: all 7 tokens
    kl = 0.1 * (2 + 2) / 7  # 0.057143: k1 = ℓ − ℓʳ = 2 on the forced tokens
    np.testing.assert_allclose(m["pg_loss"], pg, rtol=1e-5)
    np.testing.assert_allclose(m["terms/bonus/entropy_bonus"], bonus,
                               rtol=1e-5)
    np.testing.assert_allclose(m["terms/kl/kl"], kl, rtol=1e-5)
    np.testing.assert_allclose(loss, pg + bonus + kl, rtol=1e-5)

  def test_turns(self):
    self.check(*self.loss(dr_po.dr_po_turns(),
                          rollin_turns=jnp.array([1, 0])))

  def test_tokens(self):
    self.check(*self.loss(dr_po.dr_po(), rollin=jnp.array([2, 0])))


if __name__ == "__main__":
  absltest.main()
