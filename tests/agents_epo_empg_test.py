"""EPO (spec A1) and EMPG (spec A2) test vectors."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

import entropy_rl as er
from tests import test_utils

from entropy_rl.agents import _empg as empg
from entropy_rl.agents import _epo as epo

# Compiles whole rollouts / iterations: XLA with most optimisations off
# (tests/conftest.py).
UNOPTIMISED_COMPILES = True

ENT = jnp.array([[0.5, 1.0, 1.9, 2.5]])


class EpoTest(parameterized.TestCase):

  def test_corridor_mask_code(self):
    m = epo.corridor_penalty(ENT, jnp.ones_like(ENT), kappa_low=0.0,
                             kappa_high=2.0, alpha=0.1, variant="code")
    np.testing.assert_allclose(m[0], [0, 0, 0, 0.1], atol=1e-7)
    m = epo.corridor_penalty(ENT, jnp.ones_like(ENT), kappa_low=0.8,
                             kappa_high=2.0, alpha=0.1, variant="code")
    np.testing.assert_allclose(m[0], [0.1, 0, 0, 0.1], atol=1e-7)

  def test_code_mode_has_zero_gradient_paper_mode_does_not(self):
    ref = jnp.ones_like(ENT)

    def smooth(e, variant):
      m = epo.corridor_penalty(e, ref, kappa_low=0.0, kappa_high=2.0,
                               alpha=0.1, variant=variant)
      return er.aggregate(m, jnp.ones_like(e))

    np.testing.assert_array_equal(jax.grad(smooth)(ENT, "code"), 0.0)
    g = jax.grad(smooth)(ENT, "paper")
    np.testing.assert_allclose(g[0], [0, 0, 0, 0.1 / 4], atol=1e-7)

  def _state_with_reference(self, t, value):
    s = t.init(None)
    hist = epo.update_history(s.history, jnp.full((4,), value),
                              jnp.ones((4,), bool))
    return s._replace(history=hist)

  def test_loss_value_code_mode(self):
    b = test_utils.make_batch(jnp.zeros((1, 4)), jnp.zeros((1, 4)),
                              jnp.zeros((1, 4)), jnp.ones((1, 4)),
                              entropy=ENT, old_entropy=ENT,
                              segment_ids=jnp.zeros((1, 4)))
    t = epo.epo(0.001, 1.0, max_turns=4, kappa_low=0.0, kappa_high=2.0,
                alpha=0.1, variant="code", use_phase_weight=False,
                gate_turn=None)
    s = self._state_with_reference(t, 1.0)
    loss, _ = er.policy_loss(b, t, s, objective=er.ppo_clip())
    # −0.001·(mean H 1.475 − mean m 0.025) = −0.00145.
    np.testing.assert_allclose(loss, -0.00145, atol=1e-7)

  def test_phase_weight_schedule(self):
    got = [float(epo.phase_weight(k)) for k in (0, 10, 75, 76, 100, 150)]
    np.testing.assert_allclose(
        got, [1.0, 0.953186, 0.827067, 0.768632, 0.294304, 0.039830],
        atol=1e-6)

  def test_history_cumulative_and_window(self):
    hist = epo.init_history(2)
    hist_w = epo.init_history(2, window=2)
    for v in (1.0, 2.0, 3.0, 4.0):
      hist = epo.update_history(hist, jnp.full(2, v), jnp.ones(2, bool))
      hist_w = epo.update_history(hist_w, jnp.full(2, v), jnp.ones(2, bool))
    np.testing.assert_allclose(epo.history_reference(hist)[0], [2.5, 2.5])
    np.testing.assert_allclose(
        epo.history_reference(hist_w, sliding=True)[0], [3.5, 3.5])

  def test_left_pad_alignment_shifts(self):
    hist = epo.update_history(epo.init_history(3), jnp.array([1.0, 2.0, 0.0]),
                              jnp.array([True, True, False]),
                              alignment="left_pad")
    np.testing.assert_allclose(epo.history_reference(hist)[0], [0, 1, 2])

  def test_neutral_and_gate(self):
    b = test_utils.random_batch(0)
    b = b._replace(segment_ids=jnp.zeros(b.logp.shape, jnp.int32))
    l0, g0, _ = test_utils.loss_and_grads(b, er.chain(), er.ppo_clip())
    t = epo.epo(0.0)
    l1, g1, _ = test_utils.loss_and_grads(b, t, er.ppo_clip())
    self.assertEqual(float(l0), float(l1))
    np.testing.assert_array_equal(g0[1], g1[1])
    # Gate closed (all turns < 25): only the entropy term.
    t = epo.epo(0.01, max_turns=4, kappa_low=0.9, kappa_high=1.0)
    s = self._state_with_reference(t, 1.0)
    _, (_, m) = er.policy_loss(b, t, s, objective=er.ppo_clip())
    self.assertEqual(float(m["terms/epo_smooth"]), 0.0)

  def test_prepare_updates_history_by_turn(self):
    ent = jnp.array([[1.0, 1.0], [3.0, 3.0]])
    b = test_utils.make_batch(jnp.zeros((2, 2)), jnp.zeros((2, 2)),
                              jnp.zeros((2, 2)), jnp.ones((2, 2)),
                              entropy=ent, old_entropy=ent,
                              segment_ids=[[0, 0], [1, 1]])
    t = epo.epo(0.001, max_turns=3)
    _, s, _ = er.prepare_batch(b, t, t.init(None))
    ref, exists = epo.history_reference(s.history)
    np.testing.assert_allclose(ref[:2], [1.0, 3.0])
    np.testing.assert_array_equal(exists, [True, True, False])


class EmpgTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("success", 1.0, [1.58009, 0.95838, 0.55897],
       [0.54761, -0.07410, -0.47351]),
      ("failure", -1.0, [-1.45879, -0.88480, -0.55897],
       [-0.49127, 0.08272, 0.40855]))
  def test_spec_vectors(self, adv, a_mod, a_final):
    h = jnp.array([0.0, 0.5, 1.0])
    got = empg.empg_step_advantages(h, jnp.full(3, adv), jnp.ones(3, bool),
                                    jnp.array([1, 2, -1]))
    np.testing.assert_allclose(got, a_final, atol=1e-5)
    np.testing.assert_allclose(got - got.mean() + np.mean(a_mod), a_mod,
                               atol=1e-5)

  def test_layouts_agree(self):
    # L2: one row, three turns as segments.
    seg = jnp.array([[0, 0, 1, 1, 2, 2]])
    ent = jnp.array([[0.0, 0.0, 0.5, 0.5, 1.0, 1.0]])
    a2 = empg.empg_token_advantages(jnp.ones((1, 6)), ent, jnp.ones((1, 6)),
                                    seg, None, max_turns=4)
    np.testing.assert_allclose(a2[0, ::2], [0.54761, -0.07410, -0.47351],
                               atol=1e-5)
    # L1: one row per turn, same trajectory id.
    a1 = empg.empg_token_advantages(
        jnp.ones((3, 2)), jnp.array([[0.0, 0.0], [0.5, 0.5], [1.0, 1.0]]),
        jnp.ones((3, 2)), jnp.array([[0, 0], [1, 1], [2, 2]]),
        jnp.array([7, 7, 7]), max_turns=4)
    np.testing.assert_allclose(a1[:, 0], a2[0, ::2], atol=1e-6)

  def test_properties(self):
    h = jnp.array([0.3, 0.9, 0.1, 0.4])
    a = jnp.array([1.0, -1.0, 0.5, 2.0])
    nxt = jnp.array([1, -1, 3, -1])
    got = empg.empg_step_advantages(h, a, jnp.ones(4, bool), nxt, k=0.0,
                                    zeta=0.0)
    np.testing.assert_allclose(got, a - a.mean(), atol=1e-6)
    one = empg.empg_step_advantages(jnp.array([0.7]), jnp.array([1.0]),
                                    jnp.ones(1, bool), jnp.array([-1]))
    np.testing.assert_allclose(one, [0.0], atol=1e-6)


if __name__ == "__main__":
  absltest.main()
