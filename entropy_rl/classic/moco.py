"""Maximum-entropy model correction: MoCo / MoCoVI (Rakhsha et al., 2023).

"Maximum Entropy Model Correction in Reinforcement Learning",
https://arxiv.org/abs/2311.17855. Spec §B12, abstract only: the equations
are derived from maximum-entropy density estimation; the number of basis
functions and the dual regulariser are UNVERIFIED choices. For each (s, a),
features φ_1..φ_d and true expectations ψ_i = E_{P(·|s,a)}[φ_i]::

    P̃(·|s,a) = argmin_Q KL(Q‖P̂(·|s,a)) s.t. E_Q[φ_i] = ψ_i
             ∝ P̂(s'|s,a)·exp(Σ_i λ_i φ_i(s'))
    λ        = argmin_λ log E_P̂[exp(λᵀφ)] − λᵀψ + (β/2)‖λ‖²
    V_{k+1}  = max_a [r(s, a) + γ E_{P̃(·|s,a)} V_k]

MoCoVI takes the last d value iterates as the basis and ψ from queries of
the true dynamics. The dual is solved by damped Newton (fixed iterations).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from entropy_rl.classic.envs import TabularMDP

Array = jax.Array


def maxent_correction(p_hat: Array, phi: Array, psi: Array, beta: float = 0.0,
                      iters: int = 30, ridge: float = 1e-9
                      ) -> tuple[Array, Array]:
  """Minimum-KL tilt of one next-state distribution.

  Args:
    p_hat: [S'] approximate next-state distribution.
    phi: [d, S'] features.
    psi: [d] target expectations.
    beta: dual L2 regulariser.
    iters: Newton iterations.
    ridge: Hessian ridge; the Newton system is solved by least squares
      (the dual is flat along feature combinations constant on the support).

  Returns:
    (P̃ [S'], λ [d]).
  """
  d = phi.shape[0]
  logp = jnp.log(jnp.maximum(p_hat, 1e-30))

  def tilt(lam):
    return jax.nn.softmax(logp + lam @ phi)

  def dual(lam):
    return (jax.nn.logsumexp(logp + lam @ phi) - lam @ psi
            + 0.5 * beta * lam @ lam)

  def body(lam, _):
    q = tilt(lam)
    mean = phi @ q
    grad = mean - psi + beta * lam
    cov = (phi * q) @ phi.T - jnp.outer(mean, mean)
    step = jnp.linalg.lstsq(cov + (beta + ridge) * jnp.eye(d), grad,
                            rcond=1e-6)[0]
    # backtracking on the convex dual
    f0 = dual(lam)
    ts = 0.5 ** jnp.arange(12)
    vals = jax.vmap(lambda t: dual(lam - t * step))(ts)
    ok = vals <= f0
    t = jnp.where(ok.any(), ts[jnp.argmax(ok)], 0.0)
    return lam - t * step, None

  lam, _ = jax.lax.scan(body, jnp.zeros(d), None, iters)
  return tilt(lam), lam


def corrected_model(p_hat: Array, P_true: Array, basis: Array,
                    beta: float = 0.0) -> Array:
  """P̃ [S, A, S] from P̂ [S, A, S] matching E_P[φ] for basis [d, S]."""
  # Whiten the basis (same constraint set, well conditioned): φ' = S⁻¹Uᵀφ on
  # the singular directions above 1e-5·s_max; collinear iterates are dropped.
  u, sv, vh = jnp.linalg.svd(basis, full_matrices=False)
  keep = sv > 1e-5 * sv.max()
  basis_w = jnp.where(keep[:, None], vh, 0.0)
  proj = jnp.where(keep[:, None], u.T / jnp.where(keep, sv, 1.0)[:, None],
                   0.0)
  psi = jnp.einsum("sat,dt->sad", P_true, basis) @ proj.T
  fn = lambda p, q: maxent_correction(p, basis_w, q, beta)[0]
  return jax.vmap(jax.vmap(fn))(p_hat, psi)


def mocovi(mdp: TabularMDP, p_hat: Array, iters: int, num_basis: int = 2,
           beta: float = 0.0) -> tuple[Array, Array]:
  """MoCoVI: VI on the max-ent-corrected model, basis = last d iterates.

  Returns:
    (V [S] after ``iters`` iterations, V per iteration [iters, S]).
  """
  S = mdp.num_states

  def body(basis, _):
    v = basis[0]
    pt = corrected_model(p_hat, mdp.P, basis, beta)
    v_new = jnp.max(mdp.R + mdp.gamma * pt @ v, -1)
    basis = jnp.concatenate([v_new[None], basis[:-1]], 0)
    return basis, v_new

  basis0 = jnp.concatenate(
      [jnp.zeros((1, S)), jnp.ones((1, S)),
       jnp.zeros((max(num_basis - 2, 0), S))], 0)[:num_basis]
  basis, vs = jax.lax.scan(body, basis0, None, iters)
  return basis[0], vs
