"""AEPO: spec §5 controller cases, selection, assembly, the controller loop."""


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
from entropy_rl.regularizers import _aepo as aepo_lib
REG = aepo_lib.REG_KEY


class ControllerTest(parameterized.TestCase):

  @parameterized.parameters(
      (0.3, 0.5, 100, 1.2, 60),  # spec: at or below H*, T_high, min(N, 60)
      (0.7, 0.5, 100, 0.8, 30),  # above H*: T_low, half
      (0.7, 0.5, 7, 0.8, 3),  # ⌊7 / 2⌋
      (0.5, 0.5, 7, 1.2, 7),  # Ĥ_prev = H* counts as "below"
      (0.0, 0.5, 0, 1.2, 0),  # nothing selected
  )
  def test_spec_cases(self, h_prev, target, n_sel, temp, n_reg):
    t, n = regularizers.aepo_controller(h_prev, target, n_sel)
    np.testing.assert_allclose(t, temp, rtol=1e-6)
    self.assertEqual(int(n), n_reg)
    self.assertEqual(n.dtype, jnp.int32)

  def test_n_max_zero_never_uses_regulariser_samples(self):
    for h in (0.1, 0.9):
      _, n = regularizers.aepo_controller(h, 0.5, 100, n_max=0)
      self.assertEqual(int(n), 0)

  def test_traced_under_jit(self):
    f = jax.jit(lambda h, n: regularizers.aepo_controller(h, 0.5, n))
    t, n = f(jnp.asarray(0.7), jnp.asarray(100))
    np.testing.assert_allclose(t, 0.8)
    self.assertEqual(int(n), 30)


class SelectAssembleTest(absltest.TestCase):

  def test_select_positive_advantage(self):
    # Groups of 4: (1,0,0,0) -> A = (1.5,-.5,-.5,-.5); (1,1,0,0) -> ±0.866;
    # (1,1,1,1) -> 0 (not > 0.05).
    r = jnp.array([1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 1], jnp.float32)
    g = jnp.repeat(jnp.arange(3), 4)
    sel = regularizers.aepo_select(r, g)
    np.testing.assert_array_equal(
        sel, [1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0])

  def test_assemble_replaces_the_first_rows(self):
    d = test_utils.make_batch(
        np.full((4, 3), -1.0), np.full((4, 3), -1.1), np.full((4, 3), 0.5),
        np.ones((4, 3)), rewards=np.zeros(4), group_ids=[0, 0, 1, 1])
    reg = test_utils.make_batch(
        np.arange(9.0).reshape(3, 3) * -0.1, np.zeros((3, 3)),
        np.full((3, 3), -7.0), [[1, 1, 1], [1, 1, 0], [1, 0, 0]],
        rewards=[0.0, 1.0, 1.0], group_ids=[5, 5, 5])
    sel = jnp.array([False, True, True])
    out = regularizers.aepo_assemble(d, reg, 2, selected=sel)
    # Rows 0, 1 <- selected reg rows 1, 2 with A ≡ 1 on their valid tokens.
    np.testing.assert_allclose(out.logp[:2], reg.logp[1:])
    np.testing.assert_array_equal(out.mask[:2], reg.mask[1:])
    np.testing.assert_array_equal(out.advantages[:2], reg.mask[1:])
    np.testing.assert_array_equal(out.group_ids, [5, 5, 1, 1])
    np.testing.assert_array_equal(out.rewards, [1, 1, 0, 0])
    np.testing.assert_allclose(out.logp[2:], d.logp[2:])
    np.testing.assert_allclose(out.advantages[2:], 0.5)
    np.testing.assert_array_equal(out.aux[REG], [1, 1, 0, 0])

  def test_n_reg_zero_is_the_grpo_batch(self):
    d = test_utils.random_batch(0, rows=4, tokens=5)
    reg = test_utils.random_batch(1, rows=4, tokens=5)
    out = regularizers.aepo_assemble(d, reg, 0)
    for name in ("logp", "old_logp", "advantages", "mask", "entropy",
                 "rewards", "group_ids"):
      np.testing.assert_array_equal(getattr(out, name), getattr(d, name),
                                    err_msg=name)
    np.testing.assert_array_equal(out.aux[REG], 0.0)

  def test_traced_n_reg_does_not_retrace(self):
    d = test_utils.random_batch(0, rows=4, tokens=5)
    reg = test_utils.random_batch(1, rows=6, tokens=5)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def f(n, sel):
      return regularizers.aepo_assemble(d, reg, n, selected=sel).aux[REG]

    sel = jnp.array([1, 0, 1, 1, 0, 1], bool)
    for n in range(3):
      np.testing.assert_array_equal(f(n, sel), np.arange(4) < n)

  def test_mismatched_fields_raise(self):
    d = test_utils.random_batch(0, rows=4, tokens=5)
    reg = test_utils.random_batch(1, rows=4, tokens=5)._replace(entropy=None)
    with self.assertRaisesRegex(ValueError, "same fields"):
      regularizers.aepo_assemble(d, reg, 1)
    with self.assertRaisesRegex(ValueError, "expected T = 5"):
      regularizers.aepo_assemble(d, test_utils.random_batch(1, 4, 6), 1)


class PrepareTest(absltest.TestCase):

  def test_controller_state_update(self):
    b = test_utils.random_batch(2, rows=4, tokens=5)
    b = b._replace(aux={REG: jnp.array([1.0, 1.0, 1.0, 0.0])})
    t = regularizers.aepo(target_entropy=0.5)
    s0 = t.init(None)
    self.assertEqual(float(s0.h_prev), 0.0)
    np.testing.assert_allclose(s0.temperature, 1.2, rtol=1e-6)
    _, s1, m = er.prepare_batch(b, t, s0)
    nll = -np.sum(np.asarray(b.old_logp) * b.mask) / np.sum(b.mask)
    np.testing.assert_allclose(s1.h_prev, nll, rtol=1e-6)
    self.assertGreater(nll, 0.5)
    np.testing.assert_allclose(s1.temperature, 0.8)  # above H*: T_low next
    self.assertEqual(int(s1.n_reg), 3)
    self.assertEqual(int(s1.count), 1)
    np.testing.assert_allclose(m["aepo_entropy_proxy"], nll, rtol=1e-6)
    t_hi = regularizers.aepo(target_entropy=nll + 0.1)
    _, s2, _ = er.prepare_batch(b, t_hi, s0)
    np.testing.assert_allclose(s2.temperature, 1.2)

  def test_nll_scope_is_the_mean_over_microbatches(self):
    b = test_utils.random_batch(3, rows=6, tokens=5)
    t = regularizers.aepo(nll_scope=2)
    _, s, _ = er.prepare_batch(b, t, t.init(None))
    parts = [-np.sum(b.old_logp[i:i + 2] * b.mask[i:i + 2]) /
             np.sum(b.mask[i:i + 2]) for i in (0, 2, 4)]
    np.testing.assert_allclose(s.h_prev, np.mean(parts), rtol=1e-6)
    with self.assertRaisesRegex(ValueError, "nll_scope=4"):
      t4 = regularizers.aepo(nll_scope=4)
      er.prepare_batch(b, t4, t4.init(None))

  @settings(deadline=None, max_examples=10)
  @given(seed=st.integers(0, 1000), extra=st.integers(1, 3))
  def test_proxy_ignores_padding(self, seed, extra):
    b = test_utils.random_batch(seed, rows=4, tokens=5)
    t = regularizers.aepo()
    _, s0, _ = er.prepare_batch(b, t, t.init(None))
    _, s1, _ = er.prepare_batch(test_utils.pad_batch(b, extra), t,
                                t.init(None))
    np.testing.assert_allclose(s1.h_prev, s0.h_prev, rtol=1e-6)

  def test_jit_equals_eager_and_eval_shape(self):
    b = test_utils.random_batch(4, rows=4, tokens=5)
    t = regularizers.aepo()
    f = lambda b, s: er.prepare_batch(b, t, s)[1]
    chex.assert_trees_all_close(jax.jit(f)(b, t.init(None)),
                                f(b, t.init(None)), rtol=1e-6)
    abstract = jax.eval_shape(t.init, None)
    self.assertEqual(abstract.temperature.shape, ())
    self.assertEqual(abstract.n_reg.dtype, jnp.int32)


class LossSideTest(absltest.TestCase):

  def test_aepo_is_the_identity_on_the_loss(self):
    # The regulariser acts through the batch; with n_max = 0 (n_reg = 0) the
    # assembled batch is the GRPO batch, and the transform adds nothing.
    d = test_utils.random_batch(5, rows=4, tokens=6)
    reg = test_utils.random_batch(6, rows=4, tokens=6)
    obj = regularizers.aepo_objective()
    t = regularizers.aepo(n_max=0)
    s = t.init(None)
    _, n_reg = regularizers.aepo_controller(s.h_prev, 0.5, 4, n_max=0)
    b = regularizers.aepo_assemble(d, reg, n_reg)
    b, s, _ = er.prepare_batch(b, t, s)
    l1, g1, _ = test_utils.loss_and_grads(b, t, obj, state=s)
    l0, g0, _ = test_utils.loss_and_grads(d, er.chain(), obj, state=())
    self.assertEqual(float(l1), float(l0))
    chex.assert_trees_all_equal(g1, g0)

  def test_regulariser_rows_carry_advantage_one(self):
    d = test_utils.random_batch(5, rows=4, tokens=6)
    reg = test_utils.random_batch(6, rows=4, tokens=6)
    b = regularizers.aepo_assemble(d, reg, 2)
    b = b._replace(old_logp=b.logp)
    t = regularizers.aepo()
    _, (_, m) = er.policy_loss(b, t, t.init(None),
                               objective=regularizers.aepo_objective())
    np.testing.assert_allclose(m["aepo_reg_frac"], 0.5)
    np.testing.assert_array_equal(b.advantages[:2], reg.mask[:2])

  def test_scope_equals_manual_microbatches(self):
    b = test_utils.random_batch(7, rows=8, tokens=5)
    b = regularizers.aepo_assemble(b, test_utils.random_batch(8, 8, 5), 3)
    t = regularizers.aepo()
    b, s, _ = er.prepare_batch(b, t, t.init(None))
    obj = regularizers.aepo_objective()
    f = jax.jit(lambda b, k: er.policy_loss(b, t, s, objective=obj,
                                            stat_scope=k), static_argnums=1)
    loss, (_, m) = f(b, 2)
    manual = [f(jax.tree.map(lambda x: x[i:i + 2], b), None)
              for i in range(0, 8, 2)]
    np.testing.assert_allclose(loss, np.mean([x[0] for x in manual]),
                               rtol=1e-6)
    np.testing.assert_allclose(
        m["aepo_reg_frac"],
        np.mean([x[1][1]["aepo_reg_frac"] for x in manual]), rtol=1e-6)

  def test_chain_with_advantage_transforms_either_order(self):
    b = test_utils.random_batch(9, rows=8, tokens=5)
    obj = regularizers.aepo_objective()
    for other in (regularizers.qae(0.4), regularizers.gtpo()):
      res = []
      for t in (er.chain(regularizers.aepo(), other),
                er.chain(other, regularizers.aepo())):

        def run(b, t=t):
          b2, s, _ = er.prepare_batch(b, t, t.init(None))
          return test_utils.loss_and_grads(b2, t, obj, state=s)[:2]

        res.append(jax.jit(run)(b))
      np.testing.assert_allclose(res[0][0], res[1][0], rtol=1e-6)
      chex.assert_trees_all_close(res[0][1], res[1][1], rtol=1e-6)


class TemperatureProcessorTest(absltest.TestCase):

  def test_divides_logits(self):
    p = regularizers.temperature_processor()
    z = jnp.array([[1.0, 2.0], [3.0, -1.0]])
    np.testing.assert_array_equal(p.apply(z, p.init(), rng=None, pos=0), z)
    np.testing.assert_allclose(p.apply(z, jnp.asarray(2.0)), z / 2)
    np.testing.assert_allclose(p.apply(z, jnp.array([1.0, 0.5])),
                               [[1.0, 2.0], [6.0, -2.0]])
    state = regularizers.aepo().init(None)  # T_high = 1.2 at step 1
    np.testing.assert_allclose(p.apply(z, state), z / 1.2, rtol=1e-6)


# ----------------------------------------------------------- the control loop
# A fake sampler draws T iid tokens per row from softmax(θ / temperature), θ a
# fixed logit table (the "model"); the old pass is log softmax(θ) at T = 1.

V, B, T, N_MAX = 16, 32, 8, 16
GROUPS = jnp.arange(B) // 4
REG_REWARDS = (jnp.arange(B) % 2).astype(jnp.float32)  # half selected
_PROC = regularizers.temperature_processor()


def _fake_sample(key, theta, temperature):
  z = _PROC.apply(jnp.broadcast_to(theta, (B, V)), temperature)  # [B, V]
  return jax.random.categorical(key, z[:, None, :], axis=-1, shape=(B, T))


def _rollout(theta, tokens, rewards):
  logp = jax.nn.log_softmax(theta)[tokens]  # old pass at T = 1
  return er.PolicyBatch(logp=logp, old_logp=logp,
                        advantages=jnp.zeros((B, T)), mask=jnp.ones((B, T)),
                        rewards=rewards, group_ids=GROUPS,
                        aux={"tokens": tokens})


@jax.jit
def _rl_step(theta, state, key, target, control, lr):
  """One AEPO step; ``control=False`` always samples at T_high."""
  t = regularizers.aepo(target, n_max=N_MAX)
  k1, k2 = jax.random.split(key)
  temperature = jnp.where(control, state.temperature, 1.2)
  d = _rollout(theta, _fake_sample(k1, theta, jnp.ones(B)), jnp.zeros(B))
  d, _, _ = er.prepare_batch(d, regularizers.grpo_advantages(), ())
  reg = _rollout(theta, _fake_sample(k2, theta, jnp.full((B,), temperature)),
                 REG_REWARDS)
  sel = regularizers.aepo_select(REG_REWARDS, GROUPS)
  _, n_reg = regularizers.aepo_controller(state.h_prev, target, sel.sum(),
                                          n_max=N_MAX)
  n_reg = jnp.where(control, n_reg, jnp.minimum(sel.sum(), N_MAX))
  batch = regularizers.aepo_assemble(d, reg, n_reg, selected=sel)
  batch, state, metrics = er.prepare_batch(batch, t, state)

  def loss(th):
    b = batch._replace(logp=jax.nn.log_softmax(th)[batch.aux["tokens"]])
    return er.policy_loss(b, t, state,
                          objective=regularizers.aepo_objective())[0]

  theta = theta - lr * jax.grad(loss)(theta)
  return theta, state, metrics["aepo_entropy_proxy"]


def _run(theta, target, control, lr=3.0, steps=60):
  state = regularizers.aepo(target, n_max=N_MAX).init(None)
  proxies = []
  for i in range(steps):
    theta, state, h = _rl_step(theta, state, jax.random.key(i), target,
                               control, lr)
    proxies.append(float(h))
  return np.asarray(proxies)


class ControlLoopTest(absltest.TestCase):

  def test_high_temperature_samples_raise_the_proxy(self):
    # Fixed logits (lr 0): the batch NLL is higher when the regulariser rows
    # are drawn at T_high than at T_low, so the controller's choice moves
    # the proxy toward the target.
    theta = jnp.linspace(0.0, 6.0, V)
    below = _run(theta, 9.0, True, lr=0.0, steps=8)  # always T_high
    above = _run(theta, -1.0, True, lr=0.0, steps=8)  # T_low after step 1
    self.assertGreater(below[1:].mean(), above[1:].mean() + 0.1)

  def test_controller_drives_the_entropy_to_the_target(self):
    target = 1.5
    for theta in (jnp.linspace(0.0, 6.0, V),  # starts above the target
                  jnp.linspace(0.0, 12.0, V)):  # starts below
      controlled = _run(theta, target, True)
      fixed = _run(theta, target, False)
      self.assertLess(abs(controlled[-20:].mean() - target), 0.15)
      # Without the controller (always T_high) the entropy keeps rising.
      self.assertGreater(fixed[-20:].mean(), target + 0.3)


if __name__ == "__main__":
  absltest.main()
