"""Entropy observability: the entropy-change law of a softmax policy step.

For a softmax policy π = softmax(z) at one state, a logit update Δz changes
the entropy, to first order, by

    ΔH ≈ −Cov_{a∼π}(log π(a), Δz_a)

so natural PG (``Δz = η·A``) gives ``ΔH ≈ −η·Cov(log π, A)`` and vanilla
(softmax) PG (``Δz = η·π·A``) gives ``ΔH ≈ −η·Cov(log π, π·A)``.
:func:`entropy_change_law` is that prediction, :func:`entropy_change_exact`
the realised change of the same step; ``policy_loss`` reports the batch
estimator ``pred_entropy_change = −cov_logp_adv`` (per unit step size) of
the natural-PG case. Spec: ``methods_rlvr.md`` §3.

Reference: Cui et al. 2025, "The Entropy Mechanism of Reinforcement Learning
for Reasoning Language Models", https://arxiv.org/abs/2505.22617.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from entropy_rl.core import types

Array = types.Array
PG_KINDS = ("natural", "vanilla")


def _check_kind(kind: str) -> None:
  if kind not in PG_KINDS:
    raise ValueError(f"unknown policy-gradient kind {kind!r}; valid: "
                     f"{', '.join(PG_KINDS)}")


def pg_logit_step(logits: Array, adv: Array, eta: float | Array,
                  kind: str = "natural") -> Array:
  """The logit update ``Δz`` of one policy-gradient step.

  ``natural``: Δz = η·A;  ``vanilla``: Δz = η·π·A (the exact softmax PG on
  the expected objective, up to the per-state baseline, which leaves the
  covariance unchanged).

  Args:
    logits: [..., V] logits z.
    adv: [..., V] per-action advantages A.
    eta: step size η.
    kind: ``"natural"`` or ``"vanilla"``.

  Returns:
    [..., V] Δz.
  """
  _check_kind(kind)
  adv = jnp.asarray(adv, jnp.float32)
  if kind == "natural":
    return eta * adv
  return eta * jax.nn.softmax(logits, -1) * adv


def _entropy(logits: Array) -> Array:
  logp = jax.nn.log_softmax(logits, -1)
  return -jnp.sum(jnp.exp(logp) * logp, -1)


def entropy_change_law(logits: Array, adv: Array, eta: float | Array,
                       kind: str = "natural") -> Array:
  """First-order predicted entropy change of one PG step.

  ``ΔH ≈ −Cov_{a∼π}(log π(a), Δz_a)`` with Δz from :func:`pg_logit_step`.
  On π = (0.5, 0.3, 0.2), A = (1, 0, −1), η = 0.1: natural −0.028421,
  vanilla −0.010732.

  Args:
    logits: [..., V] logits z.
    adv: [..., V] per-action advantages A.
    eta: step size η.
    kind: ``"natural"`` or ``"vanilla"``.

  Returns:
    [...] predicted ΔH.
  """
  dz = pg_logit_step(logits, adv, eta, kind)
  logp = jax.nn.log_softmax(logits, -1)
  p = jnp.exp(logp)
  mean_logp = jnp.sum(p * logp, -1, keepdims=True)
  mean_dz = jnp.sum(p * dz, -1, keepdims=True)
  return -jnp.sum(p * (logp - mean_logp) * (dz - mean_dz), -1)


def entropy_change_exact(logits: Array, adv: Array, eta: float | Array,
                         kind: str = "natural") -> Array:
  """Realised entropy change ``H(softmax(z + Δz)) − H(softmax(z))``.

  On π = (0.5, 0.3, 0.2), A = (1, 0, −1), η = 0.1: natural −0.030750,
  vanilla −0.011134.

  Returns:
    [...] ΔH.
  """
  dz = pg_logit_step(logits, adv, eta, kind)
  return _entropy(logits + dz) - _entropy(logits)
