"""Training on agent rollouts: episode-level advantages and the train step.

* :func:`episode_advantages`: GRPO over *trajectories*. In layout L1 a
  trajectory has one row per turn; its return is counted once (the first
  row of each ``traj_ids``), as verl-agent does, then broadcast to every
  action token of every turn. In L2 (``traj_ids`` None) it is exactly
  :func:`entropy_rl.core.advantages.grpo`.
* :func:`make_agent_train_step`: one RL update from an
  :class:`AgentInputs` (either layout): the old-policy pass, the
  transform's ``prepare`` on the whole batch, then ``epochs × minibatches``
  gradient steps of :func:`entropy_rl.policy_loss` with statistics from
  :func:`entropy_rl.core.token_stats.stats_for_needs` (no [N, V] logits).
  Unlike :func:`entropy_rl.training.make_train_step` (prompt + response
  rows) it keeps observation tokens in the model's attention but out of the
  loss, and passes ``traj_ids`` / ``segment_ids`` to the transforms.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from entropy_rl.agents import _layouts as layouts
from entropy_rl.core import advantages as adv_lib
from entropy_rl.core import loss as loss_lib
from entropy_rl.core import objectives as objectives_lib
from entropy_rl.core import ops
from entropy_rl.core import token_stats as token_stats_lib
from entropy_rl.core import types
from entropy_rl.training import forward
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
                   token_chunk: int = 1024, vocab_chunk: int = 4096
                   ) -> dict[str, Array]:
  """Statistics of the last ``num_targets`` tokens of each row [B, T]."""
  s = tokens.shape[1]
  if old:
    params = sg(params)
  hidden, _ = fns.hidden(params, tokens, forward.positions_from_mask(
      attn_mask), attn_mask, None)
  prev = jnp.concatenate([hidden[:, :1], hidden[:, :-1]], axis=1)
  return token_stats_lib.stats_for_needs(
      prev[:, s - num_targets:], fns.head(params),
      tokens[:, s - num_targets:], needs, old=old, temperature=temperature,
      token_chunk=token_chunk, vocab_chunk=vocab_chunk)


def _take_rows(tree: Any, idx: Array, rows: int) -> Any:
  def take(x):
    if hasattr(x, "ndim") and x.ndim >= 1 and x.shape[0] == rows:
      return jnp.take(x, idx, axis=0)
    return x
  return jax.tree.map(take, tree)


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
                          vocab_chunk: int = 4096) -> StepFn:
  """``step(state, inputs) -> (state, metrics)``: one RL update.

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
    token_chunk, vocab_chunk: chunking of the statistics pass.

  Returns:
    The pure step (jit it).
  """
  if epochs < 1 or minibatches < 1:
    raise ValueError(f"epochs ({epochs}) and minibatches ({minibatches}) "
                     "must be at least 1")
  needs = transform.needs
  n_steps = epochs * minibatches
  fused = n_steps == 1 and recompute_old_logp
  kw = dict(temperature=temperature, token_chunk=token_chunk,
            vocab_chunk=vocab_chunk)
  both_vocab = types.Needs(needs.fields, {**needs.vocab, **needs.old_vocab})

  def stats(params, inp, needs_, old):
    return sequence_stats(fns, params, inp.tokens, inp.attn_mask,
                          inp.batch.logp.shape[1], needs_, old=old, **kw)

  def with_old(pb, st):
    keys = needs.old_vocab
    return pb._replace(
        logp=sg(st["logp"]), old_logp=sg(st["logp"]),
        entropy=sg(st["entropy"]), old_entropy=sg(st["entropy"]),
        old_vocab_stats=sg(forward.reductions_of(st, keys)))

  def current(pb, st):
    return pb._replace(logp=st["logp"], entropy=st["entropy"],
                       vocab_stats=forward.reductions_of(st, needs.vocab))

  def loss(b, tstate, rng, step):
    return loss_lib.policy_loss(b, transform, tstate, objective=objective,
                                rng=rng, step=step, stat_scope=stat_scope)

  def fused_loss(params, inp, tstate, k_prep, k_loss, step):
    st = stats(params, inp, both_vocab, False)
    pb = with_old(inp.batch, st)
    pb, tstate, prep_m = loss_lib.prepare_batch(pb, transform, tstate,
                                                rng=k_prep, step=step)
    value, (tstate, m) = loss(current(pb, st), tstate, k_loss, step)
    return value, (tstate, {**prep_m, **m})

  def fused_step(state, inp):
    k_prep = train_types.step_key(state, "prepare")
    k_loss = train_types.step_key(state, "loss")
    (value, (tstate, m)), grads = jax.value_and_grad(
        fused_loss, has_aux=True)(state.params, inp, state.transform_state,
                                  k_prep, k_loss, state.step)
    params, opt_state, ok, gnorm = step_lib.apply_gradients(
        optimizer, state.params, state.opt_state, grads, value,
        max_grad_norm)
    tstate = jax.tree.map(lambda a, b: jnp.where(ok, a, b), tstate,
                          state.transform_state)
    return finish(state, params, opt_state, tstate, (~ok).astype(jnp.int32),
                  {**m, "grad_norm": gnorm})

  def finish(state, params, opt_state, tstate, skipped, metrics):
    nonfinite = state.nonfinite_steps + skipped
    metrics["skipped_steps"] = skipped.astype(jnp.float32)
    return state._replace(step=state.step + 1, params=params,
                          opt_state=opt_state, transform_state=tstate,
                          nonfinite_steps=nonfinite), metrics

  def multi_step(state, inp):
    rows = inp.tokens.shape[0]
    if rows % minibatches:
      raise ValueError(f"{rows} rows do not split into {minibatches} "
                       "minibatches")
    pb = inp.batch
    old = stats(state.params, inp, types.Needs(needs.fields, {},
                                               needs.old_vocab), True)
    pb = with_old(pb, old)
    if not recompute_old_logp:
      pb = pb._replace(old_logp=inp.batch.old_logp)
    pb, tstate, prep_m = loss_lib.prepare_batch(
        pb, transform, state.transform_state,
        rng=train_types.step_key(state, "prepare"), step=state.step)
    k_shuf = train_types.step_key(state, "shuffle")
    k_loss = train_types.step_key(state, "loss")
    mb = rows // minibatches
    idx = jnp.concatenate([
        jax.random.permutation(jax.random.fold_in(k_shuf, e), rows).reshape(
            minibatches, mb) for e in range(epochs)], 0)
    inp = inp._replace(batch=pb)

    def body(carry, xs):
      params, opt_state, tstate, skipped = carry
      i, rows_i = xs
      mb_inp = _take_rows(inp, rows_i, rows)

      def f(p):
        st = stats(p, mb_inp, needs, False)
        return loss(current(mb_inp.batch, st), tstate,
                    jax.random.fold_in(k_loss, i), state.step)

      (value, (new_ts, m)), grads = jax.value_and_grad(f, has_aux=True)(
          params)
      params, opt_state, ok, gnorm = step_lib.apply_gradients(
          optimizer, params, opt_state, grads, value, max_grad_norm)
      tstate = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new_ts, tstate)
      return (params, opt_state, tstate,
              skipped + (~ok).astype(jnp.int32)), {**m, "grad_norm": gnorm}

    carry = (state.params, state.opt_state, tstate, jnp.zeros((), jnp.int32))
    (params, opt_state, tstate, skipped), ms = jax.lax.scan(
        body, carry, (jnp.arange(n_steps), idx))
    metrics = {**prep_m, **{k: jnp.nanmean(v, 0) for k, v in ms.items()}}
    return finish(state, params, opt_state, tstate, skipped, metrics)

  return fused_step if fused else multi_step


def mix_replay(inputs: AgentInputs, replay_inputs: AgentInputs,
               advantages: Array, ok: Array, weight: Array | float
               ) -> AgentInputs:
  """Appends K replayed rows to an on-policy batch (SPEAR, spec A4).

  The result has B + K rows: ``aux['is_replay']`` (1 on real replayed rows),
  ``aux['replay_advantage']`` (their recalibrated A, read by
  :func:`entropy_rl.agents.spear.replay_advantages`), ``aux['valid']`` (0 on
  replayed rows, so :func:`episode_advantages` leaves them out of the
  on-policy group statistics) and ``weights`` = ``weight`` (the replay-loss
  weight w(t)) on replayed rows, 1 elsewhere. Rows with ``ok`` False get
  an all-zero mask (padding of a fixed-size pass).

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
  okf = ok.astype(jnp.float32)
  aux_rep = {key: rb.aux[key] for key in aux_on if key in (rb.aux or {})}
  aux_rep.update(valid=jnp.zeros((k,), jnp.float32), is_replay=okf,
                 replay_advantage=jnp.where(ok, advantages, 0.0).astype(
                     jnp.float32))
  missing = set(aux_on) - set(aux_rep)
  if missing:
    raise ValueError(f"replayed rows lack aux entries {sorted(missing)}")
  on = pb._replace(aux=aux_on, weights=jnp.ones_like(pb.mask))
  rep = rb._replace(
      mask=rb.mask * okf[:, None], aux=aux_rep,
      weights=jnp.full(rb.mask.shape, weight, jnp.float32))
  cat = lambda x, y: jnp.concatenate([x, y], axis=0)
  return AgentInputs(cat(inputs.tokens, replay_inputs.tokens),
                     cat(inputs.attn_mask, replay_inputs.attn_mask),
                     jax.tree.map(cat, on, rep))
