"""Entropy-SGD as an optax transformation (spec §B13)."""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np
import optax

from entropy_rl.classic import local_entropy as esgd

close = np.testing.assert_allclose


def _quad_grad(p, key):
  del key
  return jax.tree.map(lambda x: x, p)  # ∇ ½‖x‖²


class EntropySGDTest(absltest.TestCase):

  def test_zero_inner_steps_is_sgd_nesterov(self):
    params = {"w": jnp.array([1.0, -2.0]), "b": jnp.array(0.5)}
    opt = esgd.entropy_sgd(0.1, num_inner=0)
    ref = optax.sgd(0.1, momentum=0.9, nesterov=True)
    s, r = opt.init(params), ref.init(params)
    p, q = params, params
    for _ in range(5):
      g = jax.grad(lambda x: 0.5 * sum(jnp.sum(v ** 2) for v in
                                       jax.tree.leaves(x)))(p)
      u, s = opt.update(g, s, p, grad_fn=_quad_grad)
      p = optax.apply_updates(p, u)
      g = jax.grad(lambda x: 0.5 * sum(jnp.sum(v ** 2) for v in
                                       jax.tree.leaves(x)))(q)
      v, r = ref.update(g, r, q)
      q = optax.apply_updates(q, v)
    jax.tree.map(lambda a, b: close(a, b, rtol=1e-6), p, q)

  def test_quadratic_fixed_point(self):
    # f = ½x², ε = 0, γ = 1: μ -> x/2, outer gradient -> x/2.
    tx = esgd.scale_by_local_entropy(num_inner=200, inner_lr=0.1, gamma=1.0,
                                     scoping=0.0, noise=0.0, ema=0.75)
    x = jnp.array([2.0, -1.0])
    u, s = jax.jit(lambda x, s: tx.update(x, s, x, grad_fn=_quad_grad))(
        x, tx.init(x))
    close(u, x / 2, rtol=1e-4)
    self.assertEqual(int(s.count), 1)

  def test_composes_in_optax_chain_and_jit(self):
    tx = optax.chain(optax.clip_by_global_norm(10.0),
                     esgd.scale_by_local_entropy(num_inner=3, gamma=0.03),
                     optax.sgd(0.1, momentum=0.9, nesterov=True))
    target = jnp.array([1.0, -1.0])
    loss = lambda p, key=None: jnp.sum((p - target) ** 2)
    grad_fn = lambda p, key: jax.grad(loss)(p)
    p = jnp.zeros(2)
    s = tx.init(p)

    @jax.jit
    def step(p, s):
      u, s = tx.update(jax.grad(loss)(p), s, p, grad_fn=grad_fn)
      return optax.apply_updates(p, u), s

    for _ in range(60):
      p, s = step(p, s)
    self.assertLess(float(loss(p)), 1e-2)


if __name__ == "__main__":
  absltest.main()
