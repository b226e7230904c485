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

Not in the released code (README only, not implemented): the compensation δ.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

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
