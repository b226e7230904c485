"""ERA: entropy-regularising activation for continuous control (SAC-ERA).

ERA (arXiv 2510.08549, "Entropy Regularizing Activation", §A5.2/§B1 of the
spec; official JAX code ``sac-era/jaxrl/networks/policies.py``) removes SAC's
temperature α and instead builds the entropy floor into the policy's output
activation. With D action dimensions, target entropy per dimension h and
log σ_max = 0::

    k     = −D·(log σ_max − h + ½·log(2πe))
    log σ = clip(k·softmax(σ̂) + log σ_max, log σ_min, log σ_max)

Unclipped, Σ_i log σ_i = k + D·log σ_max, so the diagonal-Gaussian entropy
Σ_i(log σ_i + ½ log 2πe) is exactly D·h; clipping at σ_min can only raise it.
The policy is a truncated normal on [−1, 1] with location tanh(μ) and scale σ
(:func:`entropy_rl.classic.nets.truncated_normal_sample`); the actor loss is
−E[min Q] and the critic target has no entropy term.

Compensation δ (README and paper, **not** in the released SAC-ERA code).
The floor holds for the *Gaussian* before truncation; truncating to [−1, 1]
can only lower the entropy, so the realised policy entropy H[π(·|s)] sits
below the target H₀ = D·h. ERA therefore builds the activation on
H₀' = H₀ + δ (``h' = h + δ/D``) with δ ≥ 0, either a constant or tuned by::

    L(δ̂) = E_{s∼D}[ δ̂·(H[π(·|s)] − H₀) ]

so ∂L/∂δ̂ = E[H[π]] − H₀: δ grows while the realised entropy is below H₀ and
shrinks otherwise. H[π(·|s)] is the exact truncated-normal entropy
(:func:`truncated_normal_entropy`). PORT NOTE: δ ≥ 0 is kept by projecting
δ̂ onto [0, ∞) after each optimiser step (:func:`delta_step`); the README
does not say how the constraint is enforced. With one scalar δ the
guarantee is on E_s H[π(·|s)] ≥ H₀ at the fixed point, not state by state.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax
from jax.scipy import special

from entropy_rl.classic import nets

Array = jax.Array


def era_offset(action_dim: int, entropy_per_dim, log_std_max=0.0):
  """k = −D·(log σ_max − h + ½ log 2πe)."""
  return -action_dim * (log_std_max - entropy_per_dim + nets.LOG_2PI_E_HALF)


def era_log_std(pre: Array, entropy_per_dim, log_std_min=-8.0,
                log_std_max=0.0) -> Array:
  """ERA's activation: pre-activation σ̂ [..., D] -> log σ [..., D].

  Args:
    pre: [..., D] pre-activation σ̂.
    entropy_per_dim: h (may be a traced scalar for hyperparameter vmaps).
    log_std_min: log σ_min (−8 in the paper's code).
    log_std_max: log σ_max (0).

  Returns:
    log σ [..., D] with Σ log σ = k + D·log σ_max when no clipping happens.
  """
  d = pre.shape[-1]
  k = era_offset(d, entropy_per_dim, log_std_max)
  return jnp.clip(k * jax.nn.softmax(pre, -1) + log_std_max, log_std_min,
                  log_std_max)


def gaussian_entropy(log_std: Array) -> Array:
  """Σ_i (log σ_i + ½ log 2πe), the floor ERA guarantees (≥ D·h)."""
  return nets.gaussian_entropy(log_std)


def truncated_normal_entropy(loc: Array, scale: Array, low: float = -1.0,
                             high: float = 1.0) -> Array:
  """Entropy of N(loc, σ²) truncated to [low, high], per dimension.

  ``H = log(√(2πe)·σ·Z) + (α·φ(α) − β·φ(β)) / (2Z)`` with α = (low − loc)/σ,
  β = (high − loc)/σ and Z = Φ(β) − Φ(α). It is ≤ ½ log(2πe σ²), the
  untruncated Gaussian's entropy.

  Args:
    loc: [..., D] location (ERA: tanh μ).
    scale: [..., D] σ.
    low: lower bound.
    high: upper bound.

  Returns:
    [..., D] entropies (nats).
  """
  a = (low - loc) / scale
  b = (high - loc) / scale
  z = jnp.maximum(special.ndtr(b) - special.ndtr(a), 1e-12)
  phi = lambda x: jnp.exp(-0.5 * x ** 2) / math.sqrt(2 * math.pi)
  # x·φ(x) → 0 as |x| → ∞; guard inf·0 for infinite bounds.
  xphi = lambda x: jnp.where(jnp.isfinite(x), x * phi(x), 0.0)
  return (nets.LOG_2PI_E_HALF + jnp.log(scale) + jnp.log(z)
          + (xphi(a) - xphi(b)) / (2 * z))


def delta_loss(delta_hat: Array, realised_entropy: Array,
               target_entropy) -> Array:
  """ERA's compensation loss L(δ̂) = E_s[δ̂·(H[π(·|s)] − H₀)] (README).

  Args:
    delta_hat: scalar δ̂.
    realised_entropy: [...] H[π(·|s)] per state (no gradient is taken).
    target_entropy: H₀ = D·h.

  Returns:
    Scalar loss; its gradient with respect to δ̂ is E[H] − H₀.
  """
  gap = jax.lax.stop_gradient(jnp.mean(realised_entropy) - target_entropy)
  return delta_hat * gap


def delta_step(tx: optax.GradientTransformation, delta_hat: Array, opt_state,
               realised_entropy: Array, target_entropy):
  """One optimiser step on :func:`delta_loss`, projected onto δ ≥ 0.

  Returns:
    ``(δ_new, opt_state_new)``.
  """
  g = jax.grad(delta_loss)(delta_hat, realised_entropy, target_entropy)
  u, opt_state = tx.update(g, opt_state)
  return jnp.maximum(delta_hat + u, 0.0), opt_state
