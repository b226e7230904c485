"""HAEPO: history-aggregated exploratory policy optimisation.

Reference: "History-Aggregated Exploratory Policy Optimization",
https://arxiv.org/abs/2508.18884 (spec §14). No code was released; the loss is
reconstructed from the abstract and a review [INFERRED] — check it against
the paper before trusting reproductions.

Each trajectory k of a group is scored by its summed log-likelihood
``S_k(θ) = Σ_t ℓ[k,t]``; Plackett-Luce (softmax) weights ``w = softmax_k(S)``
over the group weight the normalised returns R̂::

    J = Σ_k w_k R̂_k,   ∂J/∂S_k = w_k (R̂_k − Σ_j w_j R̂_j)
    L = −mean_groups J − c_H · agg(H_θ) + β · agg(KL(π_old ‖ π_θ))

with the KL as the k3 token estimator against the old (previous) policy.
Use with the zero objective (:func:`haepo_objective`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from entropy_rl.core import advantages as adv_lib
from entropy_rl.core import kl as kl_lib
from entropy_rl.core import objectives
from entropy_rl.core import ops
from entropy_rl.core import types

Array = types.Array
RETURN_NORMALIZATIONS = ("zscore", "none")


def plackett_luce_objective(seq_scores: Array, returns: Array,
                            group_ids: Array,
                            valid: Array | None = None) -> Array:
  """``mean_groups Σ_k softmax_group(S)_k · R̂_k`` (differentiable in S).

  Args:
    seq_scores: [B] S_k.
    returns: [B] R̂_k (no gradient).
    group_ids: [B] ids.
    valid: optional [B] bool, the trajectories that exist (the transform
      passes "has a valid token"). Other rows (padding) get no weight, and a
      group without a valid row is not counted in the mean.

  Returns:
    A scalar J averaged over the groups present.
  """
  ids = adv_lib.dense_group_ids(group_ids)
  g = ids.shape[0]
  v = (jnp.ones(seq_scores.shape, bool) if valid is None
       else valid.astype(bool))
  top = jax.ops.segment_max(jnp.where(v, seq_scores, -jnp.inf), ids,
                            num_segments=g)
  top = jax.lax.stop_gradient(jnp.where(jnp.isfinite(top), top, 0.0))
  e = jnp.where(v, jnp.exp(jnp.where(v, seq_scores - top[ids], 0.0)), 0.0)
  z = jax.ops.segment_sum(e, ids, num_segments=g)
  w = e / jnp.maximum(z, 1e-30)[ids]
  per_group = jax.ops.segment_sum(w * jnp.where(v, returns, 0.0), ids,
                                  num_segments=g)
  present = jax.ops.segment_sum(v.astype(jnp.float32), ids,
                                num_segments=g) > 0
  return jnp.sum(jnp.where(present, per_group, 0.0)) / jnp.maximum(
      present.sum(), 1)


def haepo(coef: float = 1.0, entropy_coef: float = 0.0, kl_coef: float = 0.0,
          *, normalize: str = "zscore", length_normalize: bool = False,
          term: str = "haepo") -> types.EntropyTransform:
  """History-aggregated exploratory PO (reconstructed, see module).

  Args:
    coef: weight of the Plackett-Luce return term (0: identity).
    entropy_coef: c_H of the entropy bonus.
    kl_coef: β of the k3 KL(π_old ‖ π_θ) term.
    normalize: R̂ = group z-score of the rewards (``"zscore"``, GRPO's
      advantage) or the raw rewards (``"none"``).
    length_normalize: score by the mean instead of the sum of ℓ
      ([INFERRED] option; the paper sums).
    term: loss-term name prefix.

  Returns:
    An :class:`EntropyTransform` reading rewards, group_ids (and entropy when
    ``entropy_coef > 0``).

  Examples:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import entropy_rl as er
    >>> from entropy_rl import regularizers
    >>> batch = er.PolicyBatch(
    ...     logp=jnp.log(jnp.array([[0.5, 0.9, 0.3], [0.2, 0.6, 1.0]])),
    ...     old_logp=jnp.log(jnp.array([[0.4, 0.9, 0.3], [0.3, 0.6, 1.0]])),
    ...     advantages=jnp.array([[1.0, 1.0, 1.0], [-1.0, -1.0, 0.0]]),
    ...     rewards=jnp.array([1.0, 0.0]), group_ids=jnp.array([0, 0]),
    ...     mask=jnp.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]))
    >>> t = regularizers.haepo()
    >>> batch, state, prep = er.prepare_batch(batch, t, t.init(None),
    ...                                       rng=jax.random.key(0))
    >>> loss, (state, metrics) = er.policy_loss(
    ...     batch, t, state, objective=er.grpo(), rng=jax.random.key(0))
    >>> print(f"{metrics['terms/haepo']:.4f}")
    -0.0416
  """
  if normalize not in RETURN_NORMALIZATIONS:
    raise ValueError(f"unknown normalize {normalize!r}; valid: "
                     f"{RETURN_NORMALIZATIONS}")

  def update(batch, state, *, rng=None, step=None, **extra):
    del rng, step, extra
    m = batch.mask
    if coef:
      s = jnp.sum(jnp.where(m > 0, batch.logp, 0.0), -1)
      if length_normalize:
        s = s / jnp.maximum(m.sum(-1), 1.0)
      r = batch.rewards.astype(jnp.float32)
      if normalize == "zscore":
        r = adv_lib.grpo(r, batch.group_ids)
      j = plackett_luce_objective(s, jax.lax.stop_gradient(r),
                                  batch.group_ids, valid=m.sum(-1) > 0)
      batch = ops.add_loss_term(batch, term, -coef * j)
      batch = ops.add_metrics(batch, haepo_objective=j)
    if entropy_coef:
      if batch.entropy is None:
        raise ValueError("haepo with entropy_coef needs batch.entropy")
      batch = ops.add_loss_term(batch, f"{term}_entropy",
                                -entropy_coef * batch.entropy)
    if kl_coef:
      k = kl_lib.kl_estimate(batch.old_logp, batch.logp, "k3")
      batch = ops.add_loss_term(batch, f"{term}_kl", kl_coef * k)
    return batch, state

  fields = {"rewards", "group_ids"} | ({"entropy"} if entropy_coef else set())
  return types.EntropyTransform(types.init_empty_state, update,
                                needs=types.Needs(frozenset(fields)))


def haepo_objective(agg: str = "token-mean") -> objectives.Objective:
  """HAEPO replaces the surrogate: the zero objective."""
  return objectives.none(agg)
