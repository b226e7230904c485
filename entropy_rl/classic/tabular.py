"""Exact tabular dynamic programming shared by the tabular methods.

Policy evaluation by a linear solve, value iteration and soft (entropy-
regularised) value iteration on a :class:`~entropy_rl.classic.envs.TabularMDP`
(P [S, A, S], R [S, A], γ). Everything is jit-able and vmaps over MDPs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from entropy_rl.classic.envs import TabularMDP

Array = jax.Array


def policy_evaluation(mdp: TabularMDP, pi: Array) -> tuple[Array, Array]:
  """V^π [S] and Q^π [S, A] by solving (I − γP_π)V = r_π."""
  S = mdp.num_states
  P_pi = jnp.einsum("sa,sat->st", pi, mdp.P)
  r_pi = jnp.sum(pi * mdp.R, -1)
  v = jnp.linalg.solve(jnp.eye(S) - mdp.gamma * P_pi, r_pi)
  return v, mdp.R + mdp.gamma * mdp.P @ v


def value_iteration(mdp: TabularMDP, iters: int = 200,
                    P: Array | None = None) -> Array:
  """Q* [S, A] by ``iters`` Bellman-optimality backups (on P if given)."""
  P = mdp.P if P is None else P

  def body(q, _):
    return mdp.R + mdp.gamma * P @ q.max(-1), None

  q, _ = jax.lax.scan(body, jnp.zeros_like(mdp.R), None, iters)
  return q


def soft_value_iteration(mdp: TabularMDP, tau: float, iters: int = 500
                         ) -> tuple[Array, Array]:
  """Entropy-regularised optimum: Q = R + γP·τ·logsumexp(Q/τ); π = softmax.

  Returns:
    ``(Q [S, A], π [S, A])``.
  """

  def body(q, _):
    v = tau * jax.nn.logsumexp(q / tau, -1)
    return mdp.R + mdp.gamma * mdp.P @ v, None

  q, _ = jax.lax.scan(body, jnp.zeros_like(mdp.R), None, iters)
  return q, jax.nn.softmax(q / tau, -1)


def expected_return(mdp: TabularMDP, pi: Array) -> Array:
  """E_{s0~μ0}[V^π(s0)]."""
  v, _ = policy_evaluation(mdp, pi)
  mu0 = (mdp.mu0 if mdp.mu0 is not None
         else jnp.full((mdp.num_states,), 1.0 / mdp.num_states))
  return mu0 @ v
