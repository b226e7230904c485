"""H-DPO: DPO with entropy control.

Reference: Omura et al. 2024, "Entropy Controllable Direct Preference
Optimization", https://arxiv.org/abs/2411.07595 (spec §17; loss derived from
the stated objective, α's value in the paper unverified).

DPO's reverse-KL regulariser ``−H(π) + CE(π, π_ref)`` becomes
``−α·H(π) + CE(π, π_ref)``; with sequence log-probs
``h(y) = α·log π_θ(y|x) − log π_ref(y|x)``::

    L = −log σ(β · [h(y_w) − h(y_l)])

α = 1 is DPO; α < 1 sharpens the optimum ``π* ∝ π_ref^{1/α} exp(r/(αβ))``.
Pairs share a ``group_id``; ``aux['chosen']`` marks y_w. Use with the zero
objective (:func:`hdpo_objective`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from entropy_rl.core import advantages as adv_lib
from entropy_rl.core import objectives
from entropy_rl.core import ops
from entropy_rl.core import types

Array = types.Array


def hdpo_loss(logp_seq: Array, ref_logp_seq: Array, chosen: Array,
              group_ids: Array, *, beta: float = 0.1, alpha: float = 1.0,
              valid: Array | None = None) -> tuple[Array, Array]:
  """Mean H-DPO loss over well-formed pairs and the number of such pairs.

  Args:
    logp_seq: [B] sequence log-probs under π_θ (differentiable).
    ref_logp_seq: [B] under π_ref.
    chosen: [B] bool, True for y_w.
    group_ids: [B] pair ids; a pair is used iff it has exactly one chosen
      and one rejected row.
    beta: β.
    alpha: α.
    valid: optional [B] bool, the rows that exist (the transform passes
      "has a valid token"). Other rows (padding) are neither chosen nor
      rejected, so a pair of padded rows is malformed and skipped.

  Returns:
    ``(loss, num_pairs)``.
  """
  ids = adv_lib.dense_group_ids(group_ids)
  g = ids.shape[0]
  v = (jnp.ones(logp_seq.shape, jnp.float32) if valid is None
       else valid.astype(jnp.float32))
  w = chosen.astype(jnp.float32) * v
  lose = (1.0 - chosen.astype(jnp.float32)) * v
  h = alpha * logp_seq - ref_logp_seq
  h_w = jax.ops.segment_sum(h * w, ids, num_segments=g)
  h_l = jax.ops.segment_sum(h * lose, ids, num_segments=g)
  n_w = jax.ops.segment_sum(w, ids, num_segments=g)
  n_l = jax.ops.segment_sum(lose, ids, num_segments=g)
  ok = (n_w == 1) & (n_l == 1)
  losses = -jax.nn.log_sigmoid(beta * (h_w - h_l))
  n = ok.sum()
  return jnp.sum(jnp.where(ok, losses, 0.0)) / jnp.maximum(n, 1), n


def hdpo(beta: float = 0.1, alpha: float = 1.0, *, term: str = "hdpo"
         ) -> types.EntropyTransform:
  """H-DPO as a scalar loss term on preference pairs.

  Reads ``logp`` and ``ref_logp`` (row sums over the mask), ``group_ids``
  (pairs) and ``aux['chosen']``.

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
    ...     aux={"chosen": jnp.array([1.0, 0.0])},
    ...     ref_logp=jnp.log(jnp.array([[0.4, 0.9, 0.5], [0.3, 0.6, 1.0]])),
    ...     mask=jnp.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]))
    >>> t = regularizers.hdpo()
    >>> batch, state, prep = er.prepare_batch(batch, t, t.init(None),
    ...                                       rng=jax.random.key(0))
    >>> loss, (state, metrics) = er.policy_loss(
    ...     batch, t, state, objective=er.grpo(), rng=jax.random.key(0))
    >>> print(f"{metrics['terms/hdpo']:.4f}")
    0.6873
    >>> print(f"{metrics['hdpo_pairs']:.4f}")
    1.0000
  """

  def update(batch, state, *, rng=None, step=None, **extra):
    del rng, step, extra
    chosen = (batch.aux or {}).get("chosen")
    if chosen is None:
      raise ValueError("hdpo needs batch.aux['chosen'] [B]")
    m = batch.mask
    seq = jnp.sum(jnp.where(m > 0, batch.logp, 0.0), -1)
    ref = jnp.sum(jnp.where(m > 0, batch.ref_logp, 0.0), -1)
    loss, n = hdpo_loss(seq, ref, chosen, batch.group_ids, beta=beta,
                        alpha=alpha, valid=m.sum(-1) > 0)
    batch = ops.add_loss_term(batch, term, loss)
    return ops.add_metrics(batch, hdpo_pairs=n), state

  return types.EntropyTransform(
      types.init_empty_state, update,
      needs=types.Needs(frozenset({"ref_logp", "group_ids"})))


def hdpo_objective() -> objectives.Objective:
  """H-DPO replaces the surrogate: the zero objective."""
  return objectives.none()
