"""Tabular methods: statistical and exact behaviour (MD-VI, max-ent
exploration, BoBW-PO, MoCoVI)."""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from entropy_rl.classic import bobw
from entropy_rl.classic import envs
from entropy_rl.classic import maxent_exploration as mex
from entropy_rl.classic import mdvi
from entropy_rl.classic import moco
from entropy_rl.classic import tabular


class TabularTest(absltest.TestCase):

  def test_mdvi_kl_averages_errors(self):
    """Leverage the average: KL (λ > 0) averages the q errors; τ alone not."""
    mdp = envs.random_mdp(jax.random.PRNGKey(0), 6, 3, gamma=0.8)
    q_star = tabular.value_iteration(mdp, 300)
    v_star = tabular.policy_evaluation(mdp, jax.nn.one_hot(q_star.argmax(-1),
                                                           3))[0]

    @jax.jit
    def subopt(lam, key):
      _, pis = mdvi.mdvi_solve(mdp, lam, 0.05, 100, key, noise_std=1.0)
      v = tabular.policy_evaluation(mdp, pis[-1])[0]
      return jnp.mean(v_star - v)

    keys = jax.random.split(jax.random.PRNGKey(1), 16)
    small = jax.vmap(subopt, (None, 0))(0.0, keys)
    large = jax.vmap(subopt, (None, 0))(2.0, keys)
    self.assertLess(float(large.mean()), 0.5 * float(small.mean()))

  def test_exploration_beats_random(self):
    mdp = envs.gridworld_mdp(4, horizon=12)

    def run(algo):
      f = jax.jit(jax.vmap(lambda k: mex.run_exploration(mdp, algo, 30, k)[1]))
      return f(jax.random.split(jax.random.PRNGKey(0), 4))[:, -1]

    rand, game, ent = run("random"), run("entgame"), run("ucbvi_ent")
    self.assertGreater(float(game.mean()), float(rand.mean()) + 0.05)
    self.assertGreater(float(ent.mean()), float(rand.mean()))

  def test_bobw_policy_optimisation_improves(self):
    mdp = envs.chain_mdp(5, gamma=0.9, slip=0.1)
    opt = tabular.expected_return(
        mdp, jax.nn.one_hot(tabular.value_iteration(mdp).argmax(-1), 2))
    for reg in bobw.REGULARIZERS:
      _, rets = jax.jit(bobw.bobw_po, static_argnums=(1, 2))(mdp, 60, reg, 5.0)
      self.assertGreater(float(rets[-1]), float(rets[0]))
      self.assertGreater(float(rets[-1]), 0.9 * float(opt), reg)

  def test_mocovi_recovers_true_values(self):
    mdp = envs.random_mdp(jax.random.PRNGKey(3), 5, 2, gamma=0.8,
                          concentration=2.0)
    p_hat = jax.random.dirichlet(jax.random.PRNGKey(4), jnp.full(5, 2.0),
                                 (5, 2))
    v_true = tabular.value_iteration(mdp, 200).max(-1)
    v_hat = tabular.value_iteration(mdp, 200, P=p_hat).max(-1)
    v_moco, _ = jax.jit(moco.mocovi, static_argnums=(2, 3))(mdp, p_hat, 80, 2)
    np.testing.assert_allclose(v_moco, v_true, atol=1e-3)
    self.assertGreater(float(jnp.abs(v_hat - v_true).max()), 0.05)


if __name__ == "__main__":
  absltest.main()
