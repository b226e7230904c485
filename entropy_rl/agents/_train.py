"""Training on agent rollouts: episode-level advantages and the train step.

* :func:`episode_advantages`: GRPO over *trajectories*. In layout L1 a
  trajectory has one row per turn; its return is counted once (the first
  row of each ``traj_ids``), as verl-agent does, then broadcast to every
  action token of every turn. In L2 (``traj_ids`` None) it is exactly
  :func:`entropy_rl.core.advantages.grpo`.
* :func:`make_agent_train_step`: one RL update from an
  :class:`AgentInputs` (either layout). It is
  :func:`entropy_rl.training.make_train_step` (old and reference passes,
  ``prepare``, ``epochs × minibatches`` gradient steps, non-finite skip,
  realised entropy change) with :data:`AGENT_LAYOUT`, whose statistics pass
  (:func:`sequence_stats`, no [N, V] logits) keeps observation tokens in
  the model's attention but out of the loss; ``traj_ids`` / ``segment_ids``
  reach the transforms through the :class:`AgentInputs`' policy batch.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from entropy_rl.agents import _layouts as layouts
from entropy_rl.core import advantages as adv_lib
from entropy_rl.core import objectives as objectives_lib
from entropy_rl.core import ops
from entropy_rl.core import token_stats as token_stats_lib
from entropy_rl.core import types
from entropy_rl.models import decoder as decoder_lib
from entropy_rl.training import step as step_lib
from entropy_rl.training import types as train_types

Array = types.Array
sg = jax.lax.stop_gradient


# ----------------------------------------------------------------------------
# Episode-level advantages.


def first_rows(traj_ids: Array | None, rows: int) -> Array:
  """[B] bool: the first row of each trajectory (all rows if None)."""
  if traj_ids is None:
    return jnp.ones((rows,), bool)
  _, dense = jnp.unique(traj_ids, size=rows, return_inverse=True)
  dense = dense.reshape(rows)
  idx = jnp.arange(rows)
  first = jax.ops.segment_min(idx, dense, num_segments=rows)
  return idx == first[dense]


def episode_grpo(rewards: Array, group_ids: Array,
                 traj_ids: Array | None = None, *, normalize_std: bool = True,
                 eps: float = 1e-6, valid: Array | None = None) -> Array:
  """GRPO advantages of trajectories, one per row [B].

  ``A = (R − μ_g) / (σ_g + ε)`` (σ unbiased; ``normalize_std=False``: Dr.
  GRPO) with the group statistics over *trajectories* (each counted once
  whatever its number of rows). A singleton group gives ``A = R``.
  Constant groups give exactly 0. ``valid`` [B] (default all): rows of
  trajectories that exist; the others (e.g. unused branching slots) are
  left out of the statistics and get A = 0.
  """
  b = rewards.shape[0]
  rep = first_rows(traj_ids, b)
  if valid is not None:
    rep = rep & (valid > 0)
  rep = rep.astype(jnp.float32)
  g = adv_lib.dense_group_ids(group_ids)
  r = rewards.astype(jnp.float32)
  shift = jax.ops.segment_max(jnp.where(rep > 0, r, -jnp.inf), g,
                              num_segments=b)[g]
  shift = jnp.where(jnp.isfinite(shift), shift, 0.0)
  d = r - shift
  n = jax.ops.segment_sum(rep, g, num_segments=b)[g]
  mean = (jax.ops.segment_sum(rep * d, g, num_segments=b)[g] /
          jnp.maximum(n, 1.0))
  centered = d - mean
  var = jax.ops.segment_sum(rep * centered ** 2, g, num_segments=b)[g] / (
      jnp.maximum(n - 1.0, 1.0))
  single = n < 2
  adv = jnp.where(single, r, centered)
  if normalize_std:
    adv = adv / jnp.where(single, 1.0, jnp.sqrt(var) + eps)
  if valid is not None:
    adv = jnp.where(valid > 0, adv, 0.0)
  return adv


def episode_advantages(*, normalize_std: bool = True, eps: float = 1e-6
                       ) -> types.EntropyTransform:
  """A ``prepare`` transform writing :func:`episode_grpo` advantages
  (``rewards`` = trajectory returns) onto the action tokens.

  ``aux['valid']`` [B], if present (the branching rollout's), marks the
  trajectories that exist; the others are left out of the group statistics.
  """

  def prepare(batch, state, *, rng=None, step=None, **extra):
    del rng, step, extra
    if batch.rewards is None or batch.group_ids is None:
      raise ValueError("episode_advantages needs batch.rewards and "
                       "batch.group_ids")
    a = episode_grpo(batch.rewards, batch.group_ids, batch.traj_ids,
                     normalize_std=normalize_std, eps=eps,
                     valid=(batch.aux or {}).get("valid"))
    adv = a[:, None] * batch.mask
    batch = ops.add_metrics(batch, adv_abs_mean=ops.masked_mean(
        jnp.abs(adv), batch.mask))
    return batch._replace(advantages=adv), state

  return types.EntropyTransform(
      types.init_empty_state, types.identity_update, prepare,
      types.Needs(frozenset({"rewards", "group_ids"})))


# ----------------------------------------------------------------------------
# Train step.


class AgentInputs(NamedTuple):
  """What the agent train step consumes (either layout).

  ``batch`` is [B, T]; its token j is ``tokens[:, S − T + j]``, predicted
  from the hidden state at the position before it.
  """

  tokens: Array  # [B, S] int32
  attn_mask: Array  # [B, S] bool
  batch: types.PolicyBatch  # [B, T]


def train_inputs(data: layouts.TurnBatch | layouts.TrajBatch) -> AgentInputs:
  """:class:`AgentInputs` of a layout (:func:`layouts.model_inputs` and
  :func:`layouts.policy_batch`)."""
  tokens, attn = layouts.model_inputs(data)
  return AgentInputs(tokens, attn, layouts.policy_batch(data))


def sequence_stats(fns: Any, params: Any, tokens: Array, attn_mask: Array,
                   num_targets: int, needs: types.Needs = types.Needs(), *,
                   old: bool = False, temperature: float = 1.0,
                   token_chunk: int = 1024, vocab_chunk: int = 4096,
                   compute_dtype: Any = None) -> dict[str, Array]:
  """Statistics of the last ``num_targets`` tokens of each row [B, T]."""
  s = tokens.shape[1]
  if old:
    params = sg(params)
  hidden, _ = fns.hidden(params, tokens,
                         decoder_lib.positions_from_mask(attn_mask),
                         attn_mask, None)
  prev = jnp.concatenate([hidden[:, :1], hidden[:, :-1]], axis=1)
  return token_stats_lib.stats_for_needs(
      prev[:, s - num_targets:], fns.head(params),
      tokens[:, s - num_targets:], needs, old=old, temperature=temperature,
      token_chunk=token_chunk, vocab_chunk=vocab_chunk,
      compute_dtype=compute_dtype)


class _Sequence(NamedTuple):
  """What :func:`sequence_stats` reads of an :class:`AgentInputs`."""

  tokens: Array  # [B, S] int32
  attn_mask: Array  # [B, S] bool
  loss_mask: Array  # [B, T]; only T is read


def _policy_batch(inputs: AgentInputs) -> types.PolicyBatch:
  return inputs.batch


def _model_inputs(inputs: AgentInputs) -> _Sequence:
  return _Sequence(inputs.tokens, inputs.attn_mask, inputs.batch.mask)


def _layout_stats(fns: Any, params: Any, seq: _Sequence, *,
                  needs: types.Needs, old: bool, **chunking
                  ) -> dict[str, Array]:
  return sequence_stats(fns, params, seq.tokens, seq.attn_mask,
                        seq.loss_mask.shape[1], needs, old=old, **chunking)


# An AgentInputs: interleaved observation/action rows (either layout),
# statistics of the last T tokens (the policy batch's).
AGENT_LAYOUT = step_lib.BatchLayout(_policy_batch, _model_inputs,
                                    _layout_stats)

StepFn = Callable[[train_types.TrainState, AgentInputs],
                  tuple[train_types.TrainState, dict[str, Array]]]


def make_agent_train_step(fns: Any, objective: objectives_lib.Objective,
                          transform: types.EntropyTransform,
                          optimizer: optax.GradientTransformation, *,
                          epochs: int = 1, minibatches: int = 1,
                          max_grad_norm: float | None = 1.0,
                          stat_scope: int | None = None,
                          temperature: float = 1.0,
                          recompute_old_logp: bool = True,
                          token_chunk: int = 1024,
                          vocab_chunk: int = 4096,
                          compute_dtype: Any = None,
                          fuse_old_pass: bool = True,
                          measure_entropy_change: bool = True,
                          shuffle: bool = True) -> StepFn:
  """``step(state, inputs) -> (state, metrics)``: one RL update.

  :func:`entropy_rl.training.make_train_step` over :class:`AgentInputs`
  (:data:`AGENT_LAYOUT`): the same old and reference passes (a KL term
  reads ``state.ref_params``), epochs and mini-batches (one mini-batch is
  never shuffled), non-finite skip (``nonfinite_steps``) and realised
  ``entropy_change``.

  Args:
    fns: model functions (``hidden``, ``head``).
    objective: the surrogate (e.g. ``entropy_rl.grpo(agg="token-mean")``).
    transform: the chain, starting with an advantage estimator
      (:func:`episode_advantages`).
    optimizer: optax.
    epochs, minibatches: gradient steps per rollout (row blocks).
    max_grad_norm: global-norm clip.
    stat_scope: rows per statistics scope of ``policy_loss``.
    temperature: the sampler's (logits are divided by it).
    recompute_old_logp: old log-probs from the model (True) or the
      sampler's (False). With one gradient step the old pass is the
      current one (``old = sg(current)``).
    token_chunk, vocab_chunk, compute_dtype: chunking of the statistics
      pass.
    fuse_old_pass, measure_entropy_change, shuffle: as
      :func:`~entropy_rl.training.make_train_step`.

  Returns:
    The pure step (jit it).
  """
  return step_lib.make_train_step(
      fns, objective, transform, optimizer, epochs=epochs,
      minibatches=minibatches, max_grad_norm=max_grad_norm,
      stat_scope=stat_scope, temperature=temperature,
      token_chunk=token_chunk, vocab_chunk=vocab_chunk,
      compute_dtype=compute_dtype, recompute_old_logp=recompute_old_logp,
      fuse_old_pass=fuse_old_pass,
      measure_entropy_change=measure_entropy_change, shuffle=shuffle,
      layout=AGENT_LAYOUT)


def mix_replay(inputs: AgentInputs, replay_inputs: AgentInputs,
               advantages: Array, ok: Array, weight: Array | float
               ) -> AgentInputs:
  """Appends K replayed rows to an on-policy batch (SPEAR, spec A4).

  The result has B + K rows: ``aux['is_replay']`` (1 on real replayed rows),
  ``aux['replay_advantage']`` (their recalibrated A, read by
  :func:`entropy_rl.agents.spear.replay_advantages`), ``aux['valid']`` (0 on
  replayed rows, so :func:`episode_advantages` leaves them out of the
  on-policy group statistics), ``aux['replay_slot']`` (1 on all K appended
  rows) and ``aux['replay_weight']`` (the replay-loss weight w(t) on the
  appended rows, 0 elsewhere). Rows with ``ok`` False get an all-zero mask
  (padding of a fixed-size pass). Token weights stay 1: train with the
  chain wrapped in :func:`entropy_rl.agents.replay_loss`, which makes the
  loss ``L_on + w·L_replay`` (each part aggregated over its own rows).

  Args:
    inputs: the on-policy :class:`AgentInputs` [B].
    replay_inputs: :func:`train_inputs` of the replayed rows [K] (same
      layout and token length).
    advantages: [K] recalibrated replay advantages.
    ok: [K] bool, real replayed rows.
    weight: scalar replay weight.
  """
  pb, rb = inputs.batch, replay_inputs.batch
  b, k = pb.mask.shape[0], rb.mask.shape[0]
  aux_on = dict(pb.aux or {})
  aux_on["valid"] = jnp.asarray(aux_on.get("valid", jnp.ones((b,))),
                                jnp.float32)
  aux_on["is_replay"] = jnp.zeros((b,), jnp.float32)
  aux_on["replay_advantage"] = jnp.zeros((b,), jnp.float32)
  aux_on["replay_slot"] = jnp.zeros((b,), jnp.float32)
  aux_on["replay_weight"] = jnp.zeros((b,), jnp.float32)
  okf = ok.astype(jnp.float32)
  aux_rep = {key: rb.aux[key] for key in aux_on if key in (rb.aux or {})}
  aux_rep.update(valid=jnp.zeros((k,), jnp.float32), is_replay=okf,
                 replay_advantage=jnp.where(ok, advantages, 0.0).astype(
                     jnp.float32),
                 replay_slot=jnp.ones((k,), jnp.float32),
                 replay_weight=jnp.full((k,), weight, jnp.float32))
  missing = set(aux_on) - set(aux_rep)
  if missing:
    raise ValueError(f"replayed rows lack aux entries {sorted(missing)}")
  on = pb._replace(aux=aux_on, weights=jnp.ones_like(pb.mask))
  rep = rb._replace(mask=rb.mask * okf[:, None], aux=aux_rep,
                    weights=jnp.ones_like(rb.mask))
  cat = lambda x, y: jnp.concatenate([x, y], axis=0)
  return AgentInputs(cat(inputs.tokens, replay_inputs.tokens),
                     cat(inputs.attn_mask, replay_inputs.attn_mask),
                     jax.tree.map(cat, on, rep))
