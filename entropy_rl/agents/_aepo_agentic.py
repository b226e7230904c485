"""Agentic AEPO: entropy-balanced rollout budget and policy optimisation.

Reference: Dong et al. 2025, "Agentic Entropy-Balanced Policy Optimization",
https://arxiv.org/abs/2510.14545 (spec A3; the official code was not found:
the rollout rule is ARPO's code, the update follows the paper's abstract and
a third-party port; constants are unverified).

Update side:

* entropy-aware advantage ``Ã_t = A_t·(1 + a·sg(z_t))`` with z the token
  entropy z-score over the scope's valid tokens (unbiased std, 1 if 0);
* gradient-preserving upper clip: clipped tokens with A > 0 keep the value
  ``(1 + ε_h)`` and the gradient ``(1 + ε_h)∇log π`` (``Clip.grad_high = 1``)
  on the tokens of ``sg_scope``: ``"none"`` (plain PPO), ``"all_upper"`` (the
  paper's reading), ``"low_entropy"`` (z ≤ 0, what the third-party port's
  autodiff does) or ``"high_entropy"`` (z > 0, the abstract's wording).

Rollout side (pure helpers): the global-sample budget
``m = k·σ(β(H_root − H̄_tool))`` rounded to [1, k], ARPO's branch rule
``clip(u − w·ΔH, 0, 1) ≤ τ`` and the consecutive-branch penalty.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from entropy_rl.core import ops
from entropy_rl.core import types

Array = types.Array
SCOPES = ("none", "all_upper", "low_entropy", "high_entropy")
sg = jax.lax.stop_gradient


def entropy_zscore(entropy: Array, mask: Array) -> Array:
  """Token-entropy z-score over valid tokens (unbiased std; 1 if 0)."""
  v = mask > 0
  n = jnp.sum(v)
  mu = ops.masked_mean(entropy, v)
  var = jnp.sum(jnp.where(v, (entropy - mu) ** 2, 0.0)) / jnp.maximum(n - 1, 1)
  sd = jnp.sqrt(var)
  sd = jnp.where(sd > 0, sd, 1.0)
  return jnp.where(v, (entropy - mu) / sd, 0.0)


def entropy_aware_advantage(advantages: Array, entropy: Array, mask: Array,
                            weight: float = 0.2) -> Array:
  """Ã = A·(1 + a·sg(z))."""
  return advantages * (1.0 + weight * sg(entropy_zscore(entropy, mask)))


def agentic_aepo(adv_weight: float = 0.2, *, sg_scope: str = "all_upper"
                 ) -> types.EntropyTransform:
  """Entropy-balanced policy optimisation (update side).

  ``adv_weight = 0`` and ``sg_scope="none"`` is the identity.
  """
  if sg_scope not in SCOPES:
    raise ValueError(f"unknown sg_scope {sg_scope!r}; valid: "
                     f"{', '.join(SCOPES)}")

  def update(batch, state, *, rng=None, step=None, **extra):
    del rng, step, extra
    ent = sg(batch.entropy)
    z = entropy_zscore(ent, batch.mask)
    if adv_weight:
      batch = batch._replace(advantages=batch.advantages *
                             (1.0 + adv_weight * z))
    if sg_scope != "none":
      if sg_scope == "all_upper":
        scope = jnp.ones_like(z, bool)
      elif sg_scope == "low_entropy":
        scope = z <= 0
      else:
        scope = z > 0
      clip = batch.clip
      batch = batch._replace(clip=clip._replace(
          grad_high=jnp.where(scope, 1.0, clip.grad_high),
          value_high=jnp.where(scope, 1.0, clip.value_high)))
      batch = ops.add_metrics(batch, aepo_scope_frac=ops.masked_mean(
          scope.astype(jnp.float32), batch.mask))
    return batch, state

  return types.EntropyTransform(types.init_empty_state, update,
                                needs=types.Needs(frozenset({"entropy"})))


def global_sample_budget(k: int, h_root: Array, h_tool_mean: Array,
                         beta: float = 1.0) -> Array:
  """Entropy pre-monitoring: ``m = round(k·σ(β(H_root − H̄_tool)))`` in [1, k]."""
  m = k * jax.nn.sigmoid(beta * (h_root - h_tool_mean))
  return jnp.clip(jnp.round(m), 1, k).astype(jnp.int32)


def branch_decision(u: Array, delta_h: Array, *, tau: float = 0.5,
                    weight: float = 0.2) -> Array:
  """ARPO's rule: branch iff ``clip(u − w·ΔH, 0, 1) ≤ τ``."""
  return jnp.clip(u - weight * delta_h, 0.0, 1.0) <= tau


def branch_probability(delta_h: Array, consecutive: Array, *,
                       tau: float = 0.5, weight: float = 0.2,
                       penalty: float = 0.5) -> Array:
  """AEPO's penalised branch probability [UNVERIFIED form]:
  ``clip(τ + w·ΔH, 0, 1)·(1 − P̂(l))`` with ``P̂(l) = 1 − penalty^l``."""
  return jnp.clip(tau + weight * delta_h, 0.0, 1.0) * penalty ** consecutive


def rollout_entropy(top_logprobs: Array, vocab_size: int) -> Array:
  """ARPO's chunk entropy: Σ over the first positions of the top-k
  ``−p log p``, normalised by log|V|. ``top_logprobs``: [..., P, k]."""
  p = jnp.exp(top_logprobs)
  return jnp.sum(-p * top_logprobs, axis=(-2, -1)) / jnp.log(vocab_size)
