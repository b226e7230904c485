"""DR-PO: dataset reset policy optimisation.

Reference: Chang et al. 2024, "Dataset Reset Policy Optimization for RLHF",
https://arxiv.org/abs/2404.08495 (spec A7; Cornell-RL/drpo).

Some rollouts are reset to a random-length prefix of the preferred (offline)
response: per sample ``reset ~ Bernoulli(β)``; if reset and the reference has
ℓ ≥ 2 tokens, ``L ~ Uniform{1, …, ℓ − 1}``, else L = 0. For decode steps
t < L the logits are replaced by a one-hot on the reference token
(:func:`rollin_processor`); the policy samples the rest. Only the PG loss is
masked: roll-in tokens get no policy gradient, ``L_PG = Σ ℓ·(1 − rollin) /
Σ (1 − rollin)`` (spec A7 (c) 5). :func:`dr_po` does it with token weights
(the batch's loss mask is left alone), so the entropy bonus, KL and every
other term still see every token, roll-in included.

Multi-turn agents (:func:`dr_po_turns`, :func:`turn_rollin`): the reset
state is reached by teacher-forcing the first L *turns* of a reference
trajectory (the environment answers them as usual), L drawn per episode by
:func:`rollin_lengths` from the reference's number of turns; the forced
turns (``segment_ids < L``) are removed from the PG mask.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from entropy_rl.core import objectives as objectives_lib
from entropy_rl.core import ops
from entropy_rl.core import types

Array = types.Array


def rollin_lengths(rng: types.PRNGKey, ref_lengths: Array,
                   reset_prob: float = 1.0) -> Array:
  """Roll-in lengths L [B] (0 = no reset)."""
  k1, k2 = jax.random.split(rng)
  b = ref_lengths.shape[0]
  reset = jax.random.bernoulli(k1, reset_prob, (b,))
  ell = ref_lengths.astype(jnp.int32)
  u = jax.random.uniform(k2, (b,))
  length = 1 + jnp.floor(u * jnp.maximum(ell - 1, 1)).astype(jnp.int32)
  return jnp.where(reset & (ell >= 2), jnp.minimum(length, ell - 1), 0)


def rollin_processor() -> types.LogitsProcessor:
  """Forces the reference token at decode positions ``pos < L``.

  Params: ``{"ref_tokens": [R, N] int32, "rollin": [R] int32}``; ``pos`` is
  the decode step (0 = first generated token).
  """

  def init():
    return {"ref_tokens": jnp.zeros((1, 1), jnp.int32),
            "rollin": jnp.zeros((1,), jnp.int32)}

  def apply(logits, params, *, rng=None, pos=0):
    del rng
    ref = params["ref_tokens"]
    p = jnp.clip(jnp.asarray(pos), 0, ref.shape[1] - 1)
    target = jax.lax.dynamic_index_in_dim(ref, p, axis=1, keepdims=False)
    forced = jnp.asarray(pos) < params["rollin"]
    onehot = jnp.where(jnp.arange(logits.shape[-1])[None] == target[:, None],
                       0.0, -jnp.inf)
    return jnp.where(forced[:, None], onehot, logits)

  return types.LogitsProcessor(init, apply)


def rollin_mask(rollin: Array, num_tokens: int) -> Array:
  """[B, T] float, 1 on roll-in (teacher-forced) tokens."""
  return (jnp.arange(num_tokens)[None, :] < rollin[:, None]).astype(
      jnp.float32)


def pg_mask_weights(mask: Array, forced: Array, agg: str = "token-mean"
                    ) -> Array:
  """[B, T] token weights that take ``forced`` tokens out of the PG loss only.

  With these weights the objective's aggregate over ``mask`` equals its
  aggregate over ``mask·(1 − forced)`` (the PG mask), while the loss terms
  keep aggregating over ``mask``:

  * ``token-mean``: ``(1 − forced)·N/N_keep`` (N, N_keep: valid and kept
    tokens of the scope);
  * ``seq-mean-token-mean``: ``(1 − forced)·n_b/n_b,keep`` per row (a row
    with no kept token gives 0 and counts in the mean);
  * ``seq-mean-token-sum``, ``seq-mean-token-sum-norm``: ``1 − forced``.

  Args:
    mask: [B, T] loss mask.
    forced: [B, T] 1 on roll-in tokens.
    agg: the objective's aggregation (``Objective.agg``).
  """
  objectives_lib.check_agg_mode(agg)
  keep = mask * (1.0 - forced)
  if agg == "token-mean":
    n, n_keep = jnp.sum(mask), jnp.sum(keep)
    scale = jnp.where(n_keep > 0, n / jnp.maximum(n_keep, 1e-8), 0.0)
  elif agg == "seq-mean-token-mean":
    n, n_keep = mask.sum(-1, keepdims=True), keep.sum(-1, keepdims=True)
    scale = jnp.where(n_keep > 0, n / jnp.maximum(n_keep, 1e-8), 0.0)
  else:
    scale = 1.0
  return (1.0 - forced) * scale


def _mask_pg(batch: types.PolicyBatch, forced: Array, agg: str
             ) -> types.PolicyBatch:
  w = jax.lax.stop_gradient(pg_mask_weights(batch.mask, forced, agg))
  weights = w if batch.weights is None else batch.weights * w
  return batch._replace(weights=weights)


def dr_po(agg: str = "token-mean") -> types.EntropyTransform:
  """Takes roll-in tokens (``aux['rollin']`` lengths [B]) out of the PG loss.

  Only the policy-gradient term: the roll-in tokens get token weight 0 and
  the others are rescaled (:func:`pg_mask_weights`) so that the PG loss is
  the objective's aggregate over the policy's own tokens; the loss mask is
  unchanged, so the entropy bonus, KL and other terms keep the roll-in
  tokens (spec A7 (c) 3-5). Needs an objective that honours ``weights``.

  Args:
    agg: the objective's aggregation (``Objective.agg``).
  """
  objectives_lib.check_agg_mode(agg)

  def update(batch, state, *, rng=None, step=None, **extra):
    del rng, step, extra
    rollin = (batch.aux or {}).get("rollin")
    if rollin is None:
      raise ValueError("dr_po needs batch.aux['rollin'] [B]")
    r = rollin_mask(rollin, batch.mask.shape[1])
    batch = _mask_pg(batch, r * (batch.mask > 0), agg)
    return ops.add_metrics(batch, rollin_frac=jnp.mean(r)), state

  return types.EntropyTransform(types.init_empty_state, update)


def turn_rollin(ref_actions: Array, rollin_turns: Array):
  """Per-turn :func:`rollin_processor` params for an agent rollout.

  Args:
    ref_actions: [T_ref, L] int32 reference action tokens per turn (the
      same for every row) or [R, T_ref, L].
    rollin_turns: [R] int32 turns to force (0 = a normal episode).

  Returns:
    ``t -> (params,)``, the ``processor_params`` argument of
    :func:`entropy_rl.agents.rollout` with ``processors=(rollin_processor(),)``:
    every token of turn t < L is the reference's.
  """
  r = rollin_turns.shape[0]
  ref = ref_actions if ref_actions.ndim == 3 else jnp.broadcast_to(
      ref_actions, (r,) + ref_actions.shape)
  n_ref, length = ref.shape[1], ref.shape[2]

  def at(t):
    tok = jax.lax.dynamic_index_in_dim(ref, jnp.clip(t, 0, n_ref - 1),
                                       axis=1, keepdims=False)
    forced = jnp.where(t < rollin_turns, length, 0).astype(jnp.int32)
    return ({"ref_tokens": tok.astype(jnp.int32), "rollin": forced},)

  return at


def dr_po_turns(agg: str = "token-mean") -> types.EntropyTransform:
  """Takes roll-in turns out of the PG loss: tokens with
  ``0 ≤ segment_ids < aux['rollin_turns']`` (agents, either layout).

  As :func:`dr_po`: token weights, the loss mask (and so the entropy bonus,
  KL and other terms) unchanged.

  Args:
    agg: the objective's aggregation (``Objective.agg``).
  """
  objectives_lib.check_agg_mode(agg)

  def update(batch, state, *, rng=None, step=None, **extra):
    del rng, step, extra
    rollin = (batch.aux or {}).get("rollin_turns")
    if rollin is None or batch.segment_ids is None:
      raise ValueError("dr_po_turns needs batch.segment_ids and "
                       "batch.aux['rollin_turns'] [B]")
    seg = batch.segment_ids
    forced = ((seg >= 0) & (seg < rollin[:, None])).astype(jnp.float32)
    frac = ops.masked_mean(forced, batch.mask)
    batch = _mask_pg(batch, forced * (batch.mask > 0), agg)
    return ops.add_metrics(batch, rollin_frac=frac), state

  return types.EntropyTransform(
      types.init_empty_state, update,
      needs=types.Needs(frozenset({"segment_ids"})))
