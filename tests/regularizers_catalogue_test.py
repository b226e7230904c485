"""The whole catalogue composes: hidden states -> token_stats -> chain -> loss.

Every RLVR part-1 method is chained with every part-2 (and agent) method that
acts inside the loss or on the batch, the statistics each chain declares are
computed by the chunked pass from a tiny LM head, and prepare + the
differentiated policy_loss run under jit with finite gradients w.r.t. the
hidden states. Neutral settings of every transform are exact identities.
"""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

import entropy_rl as er
from entropy_rl import agents
from entropy_rl import regularizers as R
from entropy_rl.core import token_stats

B, T, D, V = 8, 6, 8, 40


def part1():
  return {
      "steer": R.steer(), "clip_cov": R.clip_cov(0.1),
      "kl_cov": R.kl_cov(0.1), "siren": R.siren(0.1),
      "aepo": R.aepo(), "ce_gppo": R.ce_gppo(), "lp_reg": R.lp_reg(
          0.02, 0.5), "gtpo": R.gtpo(), "grpo_s": R.grpo_s(),
      "qae": R.qae(), "forking": R.forking_tokens(0.5),
      "entropy_bonus": R.entropy_bonus(0.01),
      "adaptive_entropy": R.adaptive_entropy(1.0, init_coef=0.01),
      "kl_penalty": R.kl_penalty(0.01),
  }


def part2():
  return [
      ("hapo", R.hapo()), ("egsw", R.egsw(0.5, 2.0)),
      ("grpo_lambda", R.grpo_lambda(0.5)), ("riskpo", R.riskpo(4, 2)),
      ("haepo", R.haepo(0.1, kl_coef=0.1)), ("hdpo", R.hdpo()),
      ("em_ft", R.em_ft(0.01)), ("era", R.era_llm(2.0, 0.5, 3.0)),
      ("epo", agents.epo(0.01, max_turns=4, gate_turn=None)),
      ("empg", agents.empg(max_turns=4)),
      ("aepo_agentic", agents.agentic_aepo(0.2, sg_scope="low_entropy")),
  ]


def inputs(seed=0):
  rng = np.random.default_rng(seed)
  h = jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(D, V)) * 0.7, jnp.float32)
  y = jnp.asarray(rng.integers(0, V, (B, T)), jnp.int32)
  lens = rng.integers(2, T + 1, B)
  mask = jnp.asarray(np.arange(T)[None] < lens[:, None], jnp.float32)
  rewards = jnp.asarray(rng.integers(0, 2, B), jnp.float32)
  return h, w, y, mask, rewards


def make_batch(t, h, w, y, mask, rewards, old_h):
  cur = token_stats.stats_for_needs(h, w, y, t.needs, token_chunk=16,
                                    vocab_chunk=16)
  old = token_stats.stats_for_needs(old_h, w, y, t.needs, old=True,
                                    token_chunk=16, vocab_chunk=16)
  core = ("logp", "entropy", "lse", "max_logit")
  vocab = {k: v for k, v in cur.items() if k not in core}
  old_vocab = {k: v for k, v in old.items() if k not in core}
  return er.PolicyBatch(
      logp=cur["logp"], old_logp=old["logp"], advantages=jnp.zeros((B, T)),
      mask=mask, entropy=cur["entropy"], old_entropy=old["entropy"],
      ref_logp=old["logp"] - 0.05, rewards=rewards,
      group_ids=jnp.repeat(jnp.arange(B // 4), 4),
      traj_ids=jnp.repeat(jnp.arange(B // 2), 2),
      segment_ids=jnp.broadcast_to((jnp.arange(B) % 2)[:, None], (B, T)),
      vocab_stats=vocab or None, old_vocab_stats=old_vocab or None,
      aux={"correct": rewards > 0, "chosen": (jnp.arange(B) % 2) == 0,
           "answer_found": jnp.ones((B,), bool)})


def run(t, seed=0):
  h, w, y, mask, rewards = inputs(seed)
  old_h = h + 0.05
  state = t.init(None)
  b0 = make_batch(t, h, w, y, mask, rewards, old_h)
  b0 = b0._replace(advantages=er.core.advantages.grpo(
      rewards, b0.group_ids)[:, None] * mask)

  @jax.jit
  def step(h, state, key):
    prepared, state, _ = er.prepare_batch(
        jax.tree.map(jax.lax.stop_gradient, b0), t, state, rng=key, step=0)

    def loss_fn(h):
      b = make_batch(t, h, w, y, mask, rewards, old_h)
      b = b._replace(advantages=prepared.advantages,
                     rewards=prepared.rewards)
      return er.policy_loss(b, t, state, objective=er.ppo_clip(0.2, 0.28),
                            rng=key, step=0, stat_scope=4)

    return jax.value_and_grad(loss_fn, has_aux=True)(h)

  (loss, (_, metrics)), grad = step(h, state, jax.random.key(seed))
  return loss, metrics, grad


class CatalogueTest(parameterized.TestCase):

  @parameterized.named_parameters(("part1_first", True),
                                  ("part2_first", False))
  def test_every_part1_method_composes_with_every_part2_method(self, first):
    one = list(part1().items())
    two = part2()
    t = er.named_chain(*(one + two if first else two + one))
    loss, metrics, grad = run(t)
    self.assertTrue(np.isfinite(float(loss)), metrics)
    self.assertTrue(bool(jnp.all(jnp.isfinite(grad))))
    self.assertGreater(float(jnp.abs(grad).sum()), 0.0)
    self.assertEqual(float(metrics["nonfinite"]), 0.0)
    for name in ("steer", "clip_cov", "siren", "hapo", "egsw", "epo"):
      self.assertTrue(any(k.startswith(name + "/") for k in metrics), name)

  def test_neutral_settings_are_identities(self):
    neutral = er.chain(
        R.steer(1.0, 1.0), R.clip_cov(0.0), R.kl_cov(0.0), R.ce_gppo(
            0.0, 0.0, reference_values=False), R.lp_reg(0.02, 0.0, 0.0),
        R.entropy_bonus(0.0), R.kl_penalty(0.0), R.egsw(0.0, float("inf")),
        R.hapo(clip_alpha=0.0, adv_beta=0.0, token_level_advantage=False),
        R.em_ft(0.0), R.haepo(0.0),
        R.era_llm(1.0, topk=False), agents.epo(0.0),
        agents.agentic_aepo(0.0, sg_scope="none"))
    l0, _, g0 = run(er.chain())
    l1, _, g1 = run(neutral)
    np.testing.assert_allclose(l1, l0, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(g1, g0, rtol=1e-5, atol=1e-7)


if __name__ == "__main__":
  absltest.main()
