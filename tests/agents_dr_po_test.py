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
    kept = np.asarray(out.mask).sum(1)
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


if __name__ == "__main__":
  absltest.main()
