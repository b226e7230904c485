"""MD-VI (Vieillard et al., NeurIPS 2020) and the Munchausen-DQN target.

"Leverage the Average: an Analysis of KL Regularization in RL",
https://arxiv.org/abs/2003.14089; Munchausen RL (Vieillard et al. 2020,
https://arxiv.org/abs/2007.14430). Spec §B9.

Mirror-descent VI regularises each greedy step with λ·KL(π‖π_k) and τ·H(π).
With α = λ/(λ+τ), β = 1/(λ+τ) and ψ_k = q_k + α·ψ_{k−1}::

    π_{k+1} ∝ π_k^α·exp(β q_k) = softmax(β ψ_k)
    ψ_{k+1} = r + α ψ_k + γ P [L_β(ψ_k) − α L_β(ψ_{k−1})],
    L_β(ψ)(s) = (1/β)·log Σ_a exp(β ψ(s, a))

For τ = 0, π_{k+1} = softmax(Σ_{j≤k} q_j / λ): errors are averaged. The
optimum (fixed point) is softmax(q*_τ/τ), independent of λ.

M-DQN's target (google-research ``munchausen_rl/agents/m_dqn.py``), with
π = softmax(q̄/τ_m) from the target network::

    y = r + α_m·clip(τ_m log π(a|s), l₀, 0) + γ(1−d)·Σ_a' π(a'|s')(q̄(s',a') − τ_m log π(a'|s'))

which is MD-VI with λ = α_m τ_m and entropy weight (1 − α_m)τ_m. (The spec
writes the clip's upper end as 1; since τ log π ≤ 0 the two agree.)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from entropy_rl.classic.envs import TabularMDP

Array = jax.Array


class MDVIState(NamedTuple):
  psi: Array  # [S, A] ψ_k
  psi_prev: Array  # [S, A] ψ_{k−1}
  k: Array


def mdvi_coefficients(lam, tau):
  """(α, β) = (λ/(λ+τ), 1/(λ+τ))."""
  return lam / (lam + tau), 1.0 / (lam + tau)


def _lse(psi, beta):
  return jax.nn.logsumexp(beta * psi, -1) / beta


def mdvi_policy(state: MDVIState, lam, tau) -> Array:
  """π_k = softmax(β ψ_k) [S, A]."""
  _, beta = mdvi_coefficients(lam, tau)
  return jax.nn.softmax(beta * state.psi, -1)


def mdvi_init(mdp: TabularMDP) -> MDVIState:
  z = jnp.zeros_like(mdp.R)
  return MDVIState(z, z, jnp.zeros((), jnp.int32))


def mdvi_step(mdp: TabularMDP, state: MDVIState, lam, tau,
              noise: Array | None = None) -> MDVIState:
  """One exact MD-VI iteration in ψ form (``noise`` [S, A] models errors)."""
  alpha, beta = mdvi_coefficients(lam, tau)
  nxt = _lse(state.psi, beta) - alpha * _lse(state.psi_prev, beta)
  # At k = 0 there is no ψ_{−1}: L_β(ψ_{−1}) is taken as 0.
  nxt = jnp.where(state.k == 0, _lse(state.psi, beta), nxt)
  psi = mdp.R + alpha * state.psi + mdp.gamma * mdp.P @ nxt
  if noise is not None:
    psi = psi + noise
  return MDVIState(psi, state.psi, state.k + 1)


def mdvi_solve(mdp: TabularMDP, lam, tau, iters: int, key: Array | None = None,
               noise_std: float = 0.0) -> tuple[MDVIState, Array]:
  """Runs ``iters`` MD-VI iterations; returns (state, policies [iters, S, A]).

  With ``noise_std > 0`` i.i.d. N(0, σ²) errors are added to every q_k (the
  paper's "leverage the average" experiment).
  """
  keys = (jax.random.split(key, iters) if key is not None
          else jnp.zeros((iters, 2), jnp.uint32))

  def body(st, k):
    noise = (noise_std * jax.random.normal(k, mdp.R.shape)
             if key is not None and noise_std > 0 else None)
    st = mdvi_step(mdp, st, lam, tau, noise)
    return st, mdvi_policy(st, lam, tau)

  return jax.lax.scan(body, mdvi_init(mdp), keys)


def scaled_log_softmax(q: Array, tau) -> Array:
  """τ·log softmax(q/τ), stable: q − max q − τ·log Σ exp((q − max q)/τ)."""
  m = q.max(-1, keepdims=True)
  return q - m - tau * jnp.log(jnp.sum(jnp.exp((q - m) / tau), -1,
                                       keepdims=True))


def munchausen_target(q_target_s: Array, q_target_next: Array, action: Array,
                      reward: Array, discount: Array, tau=0.03, alpha=0.9,
                      l0=-1.0) -> Array:
  """M-DQN regression target.

  Args:
    q_target_s: [B, A] target-network q̄(s, ·).
    q_target_next: [B, A] q̄(s', ·).
    action: [B] int actions.
    reward: [B].
    discount: [B] γ(1 − d).
    tau: τ_m (0.03).
    alpha: α_m (0.9); 0 gives soft-DQN.
    l0: lower clip l₀ (−1).

  Returns:
    [B] targets y.
  """
  tlp_s = scaled_log_softmax(q_target_s, tau)
  tlp_a = jnp.take_along_axis(tlp_s, action[:, None].astype(jnp.int32),
                              -1)[:, 0]
  tlp_next = scaled_log_softmax(q_target_next, tau)
  pi_next = jax.nn.softmax(q_target_next / tau, -1)
  soft_v = jnp.sum(pi_next * (q_target_next - tlp_next), -1)
  return reward + alpha * jnp.clip(tlp_a, l0, 0.0) + discount * soft_v
