"""Every agent method composes with RLVR transforms on a real rollout batch.

The batch comes from the on-device token-game rollout of a tiny decoder in
both layouts; each chain is ``episode advantages -> agent method -> STEER ->
Clip-Cov -> entropy bonus`` (SPEAR's tool-call bonus goes before the
advantages), run through ``prepare_batch`` and a jitted
``value_and_grad(policy_loss)``. Layout consistency: EMPG's advantages and
EPO's per-turn history are the same from L1 and L2.
"""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import entropy_rl as er
from entropy_rl import agents
from entropy_rl import regularizers
from entropy_rl.models import as_functions
from entropy_rl.models import Decoder
from entropy_rl.models import DecoderConfig

from entropy_rl.agents import _layouts as layouts
from entropy_rl.agents import _rollout as rollout_lib
from entropy_rl.agents import _token_game as game
from entropy_rl.agents import _train as train

# Compiles whole rollouts / iterations: XLA with most optimisations off
# (tests/conftest.py).
UNOPTIMISED_COMPILES = True

T = 4
CFG = DecoderConfig(vocab_size=16, hidden_size=16, num_layers=1, num_heads=2,
                    num_kv_heads=2, intermediate_size=32)


def _batches():
  fns, params = as_functions(Decoder(CFG, rngs=nnx.Rngs(1)))
  env = game.token_game(num_slots=1, num_values=2, max_turns=T,
                        command_mod=4)
  ep = jax.jit(lambda p, k: rollout_lib.rollout(
      fns, p, env, k, num_groups=2, group_size=4))(params,
                                                   jax.random.PRNGKey(0))
  # Distinct returns in each group (the untrained policy rarely wins).
  trajs = ep.trajectories._replace(
      returns=jnp.array([10.0, 0, 0, 10, 0, 10, 0, 0]))
  turns = layouts.trajectories_to_turns(trajs, 4, 2)
  out = {}
  for name, data in (("l1", turns), ("l2", trajs)):
    pb = layouts.policy_batch(data)
    # A current policy slightly off the behaviour one (ratios != 1).
    noise = 0.05 * jax.random.normal(jax.random.PRNGKey(2), pb.logp.shape)
    rollin = jnp.full(pb.rewards.shape, 2, jnp.int32)
    out[name] = pb._replace(
        logp=jnp.where(pb.mask > 0, pb.old_logp + noise, 0.0),
        aux={**pb.aux, "rollin": rollin})
  return out


BATCHES = None


def batches():
  global BATCHES
  if BATCHES is None:
    BATCHES = _batches()
  return BATCHES


def rlvr():
  return (("steer", regularizers.steer(0.8, 1.2)),
          ("clip_cov", regularizers.clip_cov(0.2, -10.0, 10.0)),
          ("bonus", regularizers.entropy_bonus(0.01)))


METHODS = {
    "epo": lambda: agents.epo(0.01, 1.0, max_turns=T, kappa_low=0.8,
                              kappa_high=1.2, gate_turn=1),
    "empg": lambda: agents.empg(max_turns=T),
    "agentic_aepo": lambda: agents.agentic_aepo(0.2,
                                                sg_scope="low_entropy"),
    "dr_po": agents.dr_po,
}


def run_chain(batch, transform):
  state = transform.init(None)
  pb, state, prep_m = er.prepare_batch(batch, transform, state,
                                       rng=jax.random.PRNGKey(3), step=5)

  @jax.jit
  def f(logp, entropy):
    b = pb._replace(logp=logp, entropy=entropy)
    return er.policy_loss(b, transform, state, objective=er.ppo_clip(0.2),
                          rng=jax.random.PRNGKey(4), step=5)

  (loss, (_, m)), grads = jax.value_and_grad(f, argnums=(0, 1),
                                             has_aux=True)(pb.logp,
                                                           pb.entropy)
  return pb, prep_m, loss, m, grads


class ComposeTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("epo_l1", "epo", "l1"), ("epo_l2", "epo", "l2"),
      ("empg_l1", "empg", "l1"), ("empg_l2", "empg", "l2"),
      ("aepo_l2", "agentic_aepo", "l2"), ("dr_po_l1", "dr_po", "l1"))
  def test_method_in_rlvr_chain(self, method, layout):
    batch = batches()[layout]
    chain = er.named_chain(
        ("adv", train.episode_advantages()), (method, METHODS[method]()),
        *rlvr())
    base = er.named_chain(("adv", train.episode_advantages()), *rlvr())
    pb, _, loss, m, (g_logp, g_ent) = run_chain(batch, chain)
    _, _, loss0, _, _ = run_chain(batch, base)
    self.assertTrue(np.isfinite(float(loss)))
    self.assertTrue(np.all(np.isfinite(np.asarray(g_logp))))
    self.assertTrue(np.all(np.isfinite(np.asarray(g_ent))))
    # No gradient on observation / padding tokens.
    off = np.asarray(batch.mask) == 0
    self.assertEqual(float(np.abs(np.asarray(g_logp))[off].max()), 0.0)
    self.assertEqual(float(np.abs(np.asarray(g_ent))[off].max()), 0.0)
    # The RLVR members ran and the method changed the loss.
    self.assertIn("terms/bonus/entropy_bonus", m)
    self.assertNotAlmostEqual(float(loss), float(loss0), places=6)
    del pb

  def test_spear_toolcall_reward_before_advantages(self):
    batch = batches()["l2"]
    chain = er.named_chain(("toolcall", agents.toolcall_reward(10)),
                           ("adv", train.episode_advantages()), *rlvr())
    pb, prep_m, loss, _, _ = run_chain(batch, chain)
    calls = np.asarray(batch.aux["n_tool_calls"])
    bonus = np.minimum(1.0, 0.1 * calls) * 0.5 * (1 + np.cos(np.pi * 5 / 10))
    np.testing.assert_allclose(np.asarray(pb.rewards),
                               np.asarray(batch.rewards) + bonus, atol=1e-6)
    self.assertIn("toolcall/toolcall_bonus", prep_m)
    self.assertTrue(np.isfinite(float(loss)))

  def test_layouts_agree_for_empg_and_epo(self):
    b1, b2 = batches()["l1"], batches()["l2"]
    t = er.named_chain(("adv", train.episode_advantages()),
                       ("empg", agents.empg(max_turns=T)))
    p1, _, _ = er.prepare_batch(b1, t, t.init(None))
    p2, _, _ = er.prepare_batch(b2, t, t.init(None))
    key = lambda pb: np.asarray(pb.segment_ids)[np.asarray(pb.mask) > 0]
    a1 = np.asarray(p1.advantages)[np.asarray(p1.mask) > 0]
    a2 = np.asarray(p2.advantages)[np.asarray(p2.mask) > 0]
    np.testing.assert_array_equal(key(p1), key(p2))
    np.testing.assert_allclose(a1, a2, atol=1e-5)
    e = agents.epo(0.01, max_turns=T)
    _, s1, _ = er.prepare_batch(b1, e, e.init(None))
    _, s2, _ = er.prepare_batch(b2, e, e.init(None))
    np.testing.assert_allclose(s1.history.total, s2.history.total, atol=1e-6)
    np.testing.assert_array_equal(s1.history.count, s2.history.count)


if __name__ == "__main__":
  absltest.main()
