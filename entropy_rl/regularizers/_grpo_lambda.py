"""GRPO-λ: accuracy-gated length penalty ("Stable RL for efficient reasoning").

Reference: "Stable Reinforcement Learning for Efficient Reasoning",
https://arxiv.org/abs/2505.18086 (spec §15; third-party code and the
abstract, no official code). λ and α are unverified defaults.

Groups are ranked by accuracy ``acc_k``; the top ``ceil(λ · #groups)`` get a
length penalty on correct responses, the rest the plain 0/1 reward::

    k ∈ top:  R = 1 − α·σ((L_i − μ_k^c) / σ_k^c) if correct, else 0
    k ∉ top:  R = 1[correct]

with μ^c, σ^c the mean and population std of the correct lengths of the
group (σ = 1e-4 with a single correct response, and where the correct
lengths are all equal). Follow with GRPO advantages (:func:`grpo_lambda`
chains them). Rows without a valid token (padding) are not part of any
group. The third-party code also penalises incorrect responses (a bug
against the formula); it is not ported.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp

from entropy_rl.core import advantages as adv_lib
from entropy_rl.core import combine
from entropy_rl.core import ops
from entropy_rl.core import types

Array = types.Array


def grpo_lambda_rewards(correct: Array, lengths: Array, group_ids: Array, *,
                        lam: float = 0.2, alpha: float = 0.6,
                        valid: Array | None = None) -> Array:
  """GRPO-λ rewards [B] (see module docstring).

  Args:
    correct: [B] bool or {0, 1}.
    lengths: [B] response lengths.
    group_ids: [B] ids.
    lam: λ, the fraction of groups (by accuracy) that are penalised.
    alpha: α, the penalty scale.
    valid: optional [B] bool, the rows that exist (the transform passes
      ``lengths > 0``). Other rows (padding) are left out of the accuracies,
      the group count and the length statistics; a group without a valid
      row is neither ranked nor counted in ``ceil(λ · #groups)``.
  """
  ids = adv_lib.dense_group_ids(group_ids)
  g = ids.shape[0]
  c = correct.astype(jnp.float32)
  v = jnp.ones_like(c) if valid is None else valid.astype(jnp.float32)
  cv = c * v
  n = jax.ops.segment_sum(v, ids, num_segments=g)  # [G]
  present = n > 0
  acc = jax.ops.segment_sum(cv, ids, num_segments=g) / jnp.maximum(n, 1.0)
  num_present = present.sum()
  if lam > 0:
    k = jnp.ceil(lam * num_present).astype(jnp.int32)
  else:
    k = jnp.zeros((), jnp.int32)
  top = ops.topk_mask(acc, present, k, g)  # [G]
  length = lengths.astype(jnp.float32)
  nc = jax.ops.segment_sum(cv, ids, num_segments=g)
  mu = jax.ops.segment_sum(cv * length, ids, num_segments=g) / jnp.maximum(
      nc, 1.0)
  var = jax.ops.segment_sum(cv * (length - mu[ids]) ** 2, ids,
                            num_segments=g) / jnp.maximum(nc, 1.0)
  # σ = 1e-4 when it would be 0: one correct response (spec §15) or correct
  # responses of equal length (0/0 otherwise).
  sd = jnp.where((nc > 1) & (var > 0), jnp.sqrt(var), 1e-4)
  penalised = 1.0 - alpha * jax.nn.sigmoid((length - mu[ids]) / sd[ids])
  return jnp.where(top[ids], c * penalised, c)


def grpo_lambda(lam: float = 0.2, alpha: float = 0.6, *,
                normalize_std: bool = True) -> types.EntropyTransform:
  """GRPO-λ rewards (from ``aux['correct']`` and mask lengths) + GRPO.

  ``lam = 0`` gives plain GRPO on the 0/1 correctness reward.

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
    ...     aux={"correct": jnp.array([1.0, 0.0])},
    ...     mask=jnp.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]))
    >>> t = regularizers.grpo_lambda()
    >>> batch, state, prep = er.prepare_batch(batch, t, t.init(None),
    ...                                       rng=jax.random.key(0))
    >>> loss, (state, metrics) = er.policy_loss(
    ...     batch, t, state, objective=er.grpo(), rng=jax.random.key(0))
    >>> print(f"{prep['grpo_lambda_reward']:.4f}")
    0.3500
    >>> print(np.asarray(batch.advantages, float).round(4) + 0.0)
    [[ 0.7071  0.7071  0.7071]
     [-0.7071 -0.7071  0.    ]]
  """
  if not 0.0 <= lam <= 1.0:
    raise ValueError(f"lam must be in [0, 1], got {lam}")

  def prepare(batch, state, *, rng=None, step=None, **extra):
    del rng, step, extra
    correct = (batch.aux or {}).get("correct")
    if correct is None:
      raise ValueError("grpo_lambda needs batch.aux['correct'] [B]")
    lengths = batch.mask.sum(-1)
    r = grpo_lambda_rewards(correct, lengths, batch.group_ids, lam=lam,
                            alpha=alpha, valid=lengths > 0)
    batch = ops.add_metrics(batch, grpo_lambda_reward=jnp.mean(r))
    return batch._replace(rewards=r), state

  rewards = types.EntropyTransform(
      types.init_empty_state, types.identity_update,
      prepare, types.Needs(frozenset({"group_ids"})))
  return combine.chain(rewards,
                       adv_lib.grpo_advantages(normalize_std=normalize_std))
