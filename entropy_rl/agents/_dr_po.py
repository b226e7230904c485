"""DR-PO: dataset reset policy optimisation.

Reference: Chang et al. 2024, "Dataset Reset Policy Optimization for RLHF",
https://arxiv.org/abs/2404.08495 (spec A7; Cornell-RL/drpo).

Some rollouts are reset to a random-length prefix of the preferred (offline)
response: per sample ``reset ~ Bernoulli(β)``; if reset and the reference has
ℓ ≥ 2 tokens, ``L ~ Uniform{1, …, ℓ − 1}``, else L = 0. For decode steps
t < L the logits are replaced by a one-hot on the reference token
(:func:`rollin_processor`); the policy samples the rest. Only the PG loss is
masked: roll-in tokens get no policy gradient (:func:`dr_po` removes them from
the loss mask; rewards, KL and values still see every token).

Multi-turn agents (:func:`dr_po_turns`, :func:`turn_rollin`): the reset
state is reached by teacher-forcing the first L *turns* of a reference
trajectory (the environment answers them as usual), L drawn per episode by
:func:`rollin_lengths` from the reference's number of turns; the forced
turns (``segment_ids < L``) are removed from the PG mask.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

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


def dr_po() -> types.EntropyTransform:
  """Removes roll-in tokens (``aux['rollin']`` lengths [B]) from the PG mask."""

  def update(batch, state, *, rng=None, step=None, **extra):
    del rng, step, extra
    rollin = (batch.aux or {}).get("rollin")
    if rollin is None:
      raise ValueError("dr_po needs batch.aux['rollin'] [B]")
    r = rollin_mask(rollin, batch.mask.shape[1])
    batch = batch._replace(mask=batch.mask * (1.0 - r))
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


def dr_po_turns() -> types.EntropyTransform:
  """Removes roll-in turns from the PG mask: tokens with
  ``0 ≤ segment_ids < aux['rollin_turns']`` (agents, either layout)."""

  def update(batch, state, *, rng=None, step=None, **extra):
    del rng, step, extra
    rollin = (batch.aux or {}).get("rollin_turns")
    if rollin is None or batch.segment_ids is None:
      raise ValueError("dr_po_turns needs batch.segment_ids and "
                       "batch.aux['rollin_turns'] [B]")
    seg = batch.segment_ids
    forced = ((seg >= 0) & (seg < rollin[:, None])).astype(jnp.float32)
    frac = ops.masked_mean(forced, batch.mask)
    batch = batch._replace(mask=batch.mask * (1.0 - forced))
    return ops.add_metrics(batch, rollin_frac=frac), state

  return types.EntropyTransform(
      types.init_empty_state, update,
      needs=types.Needs(frozenset({"segment_ids"})))
