"""Pure train steps: the RL update over a batch, and the SFT warm-up step.

``make_train_step(fns, objective, transform, optimizer, ...)`` returns
``train_step(state, batch) -> (state, metrics)``, one RL update:

1. the old-policy pass (no gradient) computes ``old_logp`` and exactly what
   ``transform.needs`` asks of the old policy (``old_entropy``, ``old_vocab``
   reductions); a reference pass gives ``ref_logp`` when a KL term reads it;
2. ``prepare_batch`` runs the transform's batch side on the whole rollout
   (advantages, anchors, controllers);
3. ``epochs`` x ``minibatches`` gradient steps (a ``lax.scan``) on shuffled
   row blocks: the current pass with gradient, ``policy_loss`` with
   importance ratios against ``old_logp``, gradient clipping, optax; a step
   whose loss or gradient is not finite is skipped and counted;
4. the realised entropy change: the new parameters' entropy on the same
   batch minus the old one, next to ``policy_loss``'s first-order
   ``pred_entropy_change`` (Cui et al. 2025, https://arxiv.org/abs/2505.22617).

With a single gradient step per rollout the old pass is fused into the
current one (``old = sg(current)``, exact since the parameters are the same;
contract pitfall 7), saving a forward pass.

The only layout-specific piece is a :class:`BatchLayout`: the rows of the
batch as a :class:`~entropy_rl.PolicyBatch`, the model inputs, and the
statistics pass over them. :data:`RLVR_LAYOUT` (the default) reads a
:class:`~entropy_rl.training.types.Rollout` (prompt + response rows,
:func:`~entropy_rl.training.stats_pass.response_stats`); the agents pass
their interleaved observation/action rows
(``entropy_rl.agents.make_agent_train_step``). Everything else (PPO
epochs, mini-batches, the fused old pass, the reference pass,
``stat_scope``, the non-finite skip, the entropy-change measurement)
exists once, here.

Nothing here mentions a mesh: wrap the step with
:func:`entropy_rl.parallel.shard_train_step`.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from entropy_rl.core import loss as loss_lib
from entropy_rl.core import objectives as objectives_lib
from entropy_rl.core import ops
from entropy_rl.core import token_stats as token_stats_lib
from entropy_rl.core import types as core_types
from entropy_rl.models import decoder as decoder_lib
from entropy_rl.training import stats_pass
from entropy_rl.training import types

Array = jax.Array
TrainState = types.TrainState
Rollout = types.Rollout
sg = jax.lax.stop_gradient
StepFn = Callable[[TrainState, Any], tuple[TrainState, dict[str, Array]]]


class BatchLayout(NamedTuple):
  """How the RL step reads one kind of batch: its only layout-specific part.

  Every function sees a batch of B rows; the step splits what
  ``model_inputs`` and ``policy_batch`` return into row blocks (leaves
  whose leading axis is B), so both must keep rows independent.

  Attributes:
    policy_batch: ``batch -> PolicyBatch`` [B, N], the rollout's side:
      ``mask`` (loss tokens), ``logp = old_logp`` the sampler's log-probs,
      ``entropy = old_entropy`` the sampler's entropies (or None),
      ``advantages`` zeros, and whatever rewards, ids, weights and ``aux``
      the transforms read; its ``mask``'s rows are the batch's rows. The
      step fills ``logp``, ``old_logp``, ``entropy``, ``old_entropy``,
      ``old_vocab_stats``, ``ref_logp`` and ``vocab_stats`` from its old,
      reference and current passes.
    model_inputs: ``batch -> tree`` of [B, ...] arrays the statistics pass
      reads.
    stats: ``(fns, params, inputs, *, needs, old, temperature, token_chunk,
      vocab_chunk, compute_dtype) -> dict`` of [B, N] statistics of the
      ``policy_batch`` tokens (``logp``, ``entropy`` and the reductions of
      ``needs``, as
      :func:`~entropy_rl.core.token_stats.stats_for_needs`); ``old``: the
      old-policy pass (no gradient; ``needs.old_vocab`` reductions).
  """

  policy_batch: Callable[[Any], core_types.PolicyBatch]
  model_inputs: Callable[[Any], Any]
  stats: Callable[..., dict[str, Array]]


def _select(ok: Array, new: Any, old: Any) -> Any:
  return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)


def apply_gradients(optimizer: optax.GradientTransformation, params: Any,
                    opt_state: Any, grads: Any, loss: Array,
                    max_grad_norm: float | None = None
                    ) -> tuple[Any, Any, Array, Array]:
  """One guarded optimizer step.

  The update is applied only if the loss and the global gradient norm are
  finite; otherwise params and optimizer state are returned unchanged.
  Gradients are clipped to ``max_grad_norm`` (global norm) first.

  Returns:
    ``(params', opt_state', ok, grad_norm)``; ``ok`` is a bool scalar and
    ``grad_norm`` the norm before clipping.
  """
  gnorm = optax.tree.norm(grads)
  ok = jnp.isfinite(loss) & jnp.isfinite(gnorm)
  scale = jnp.ones((), jnp.float32)
  if max_grad_norm is not None and max_grad_norm > 0:
    scale = jnp.where(gnorm > max_grad_norm,
                      max_grad_norm / jnp.where(ok, gnorm, 1.0), 1.0)

  def update(_):
    clipped = jax.tree.map(lambda g: g * scale.astype(g.dtype), grads)
    updates, new_opt = optimizer.update(clipped, opt_state, params)
    return optax.apply_updates(params, updates), new_opt

  # A branch rather than selects over every parameter and moment: the
  # skipped step costs nothing, the taken one no extra pass over the state
  # (3% of a compiled 0.5B TPU step went to those selects).
  new_params, new_opt = jax.lax.cond(ok, update,
                                     lambda _: (params, opt_state), None)
  return new_params, new_opt, ok, gnorm


def _take_rows(tree: Any, idx: Array, rows: int) -> Any:
  """The rows ``idx`` of every leaf of ``tree`` whose leading axis is
  ``rows`` (the others, e.g. scalars, pass through)."""
  def take(x):
    if hasattr(x, "ndim") and x.ndim >= 1 and x.shape[0] == rows:
      return jnp.take(x, idx, axis=0)
    return x
  return jax.tree.map(take, tree)


def _mean_metrics(stacked: dict[str, Array]) -> dict[str, Array]:
  return {k: jnp.nanmean(v.astype(jnp.float32), 0) for k, v in stacked.items()}


def _merge_needs(a: core_types.Needs, extra_vocab) -> core_types.Needs:
  vocab = dict(a.vocab)
  for k, r in extra_vocab.items():
    if k in vocab and vocab[k] != r:
      raise ValueError(f"needs.vocab and needs.old_vocab declare different "
                       f"reductions named {k!r}")
    vocab[k] = r
  return core_types.Needs(a.fields, vocab, {})


def _rollout_policy_batch(ro: Rollout) -> core_types.PolicyBatch:
  mask = ro.response_mask.astype(jnp.float32)
  return core_types.PolicyBatch(
      logp=ro.logp, old_logp=ro.logp, advantages=jnp.zeros_like(ro.logp),
      mask=mask, entropy=ro.entropy, old_entropy=ro.entropy,
      rewards=None if ro.rewards is None else ro.rewards.astype(jnp.float32),
      group_ids=None if ro.group_ids is None else ro.group_ids.astype(
          jnp.int32),
      aux=ro.aux)


def _rollout_inputs(ro: Rollout) -> Rollout:
  return Rollout(ro.prompt, ro.prompt_mask, ro.response, ro.response_mask,
                 ro.logp)


# A Rollout: rows of concat(prompt, response), statistics of the response.
RLVR_LAYOUT = BatchLayout(_rollout_policy_batch, _rollout_inputs,
                          stats_pass.response_stats)


def _with_old(pb: core_types.PolicyBatch, old_logp, old_entropy, old_vocab,
              ref_logp) -> core_types.PolicyBatch:
  return pb._replace(logp=old_logp, old_logp=old_logp, entropy=old_entropy,
                     old_entropy=old_entropy, old_vocab_stats=old_vocab,
                     ref_logp=ref_logp)


def _rollout_metrics(pb: core_types.PolicyBatch) -> dict[str, Array]:
  m = pb.mask
  out = {"response_length": jnp.mean(m.sum(-1)),
         "sampler_logp": ops.masked_mean(pb.old_logp, m)}
  if pb.rewards is not None:
    out["reward"] = jnp.mean(pb.rewards)
  return out


def make_train_step(fns: Any, objective: objectives_lib.Objective,
                    transform: core_types.EntropyTransform,
                    optimizer: optax.GradientTransformation, *,
                    epochs: int = 1, minibatches: int = 1,
                    max_grad_norm: float | None = 1.0,
                    stat_scope: int | None = None, temperature: float = 1.0,
                    token_chunk: int = 1024, vocab_chunk: int = 4096,
                    compute_dtype: Any = None,
                    recompute_old_logp: bool = True,
                    fuse_old_pass: bool = True,
                    measure_entropy_change: bool = True,
                    shuffle: bool = True,
                    layout: BatchLayout = RLVR_LAYOUT) -> StepFn:
  """Builds the RL update ``train_step(state, batch) -> (state, metrics)``.

  Args:
    fns: model functions (``hidden(params, tokens, positions, mask, cache)``
      and ``head(params)``).
    objective: the policy-gradient :class:`~entropy_rl.Objective`.
    transform: the entropy transform (a chain including the advantage
      estimator, e.g. ``named_chain(("advantages", grpo_advantages()), ...)``).
    optimizer: an optax transformation.
    epochs: passes over the rollout per update (PPO epochs).
    minibatches: row blocks per epoch (divides the rollout's rows); the old,
      reference and measurement passes also run in this many blocks.
    max_grad_norm: global-norm clip (None or 0: off).
    stat_scope: rows per statistics scope for ``policy_loss``.
    temperature: the sampler's temperature (the policy's logits are divided
      by it, as verl does).
    token_chunk, vocab_chunk, compute_dtype: chunking of the statistics pass.
    recompute_old_logp: recompute ``old_logp`` with the current parameters
      (True, verl) instead of using the sampler's log-probs.
    fuse_old_pass: with one gradient step per rollout and recomputed
      ``old_logp``, take the old statistics from the current pass.
    measure_entropy_change: run the new parameters over the batch after the
      update and report ``entropy_change`` (one forward pass).
    shuffle: shuffle rows between mini-batches (per epoch; one mini-batch
      is never shuffled).
    layout: what a batch is (:class:`BatchLayout`); default a
      :class:`~entropy_rl.training.types.Rollout`.

  Returns:
    The pure step; metrics are scalars (means over the gradient steps).
  """
  if epochs < 1 or minibatches < 1:
    raise ValueError(f"epochs ({epochs}) and minibatches ({minibatches}) must "
                     "be at least 1")
  needs = transform.needs
  need_ref = "ref_logp" in needs.fields
  n_steps = epochs * minibatches
  fused = fuse_old_pass and n_steps == 1 and recompute_old_logp
  kw = dict(temperature=temperature, token_chunk=token_chunk,
            vocab_chunk=vocab_chunk, compute_dtype=compute_dtype)
  cur_needs = _merge_needs(needs, needs.old_vocab) if fused else needs

  def stats(params, inputs, needs_, old):
    return layout.stats(fns, params, inputs, needs=needs_, old=old, **kw)

  def full_pass(params, inputs, needs_):
    return stats_pass.map_rows(lambda r: stats(params, r, needs_, True),
                               inputs, minibatches)

  def ref_pass(state, inputs):
    if not need_ref:
      return None
    if state.ref_params is None:
      raise ValueError("the transform reads ref_logp (a KL term) but the "
                       "train state has no ref_params")
    return sg(full_pass(state.ref_params, inputs, core_types.Needs())["logp"])

  def loss_fn(params, pb, inputs, tstate, rng, step):
    st = stats(params, inputs, needs, False)
    b = pb._replace(logp=st["logp"], entropy=st["entropy"],
                    vocab_stats=stats_pass.reductions_of(st, needs.vocab))
    loss, (tstate, m) = loss_lib.policy_loss(
        b, transform, tstate, objective=objective, rng=rng, step=step,
        stat_scope=stat_scope)
    return loss, (tstate, m)

  def fused_loss_fn(params, batch, ref_logp, tstate, k_prep, k_loss, step):
    st = stats(params, layout.model_inputs(batch), cur_needs, False)
    old_ent = sg(st["entropy"])
    pb = _with_old(layout.policy_batch(batch), sg(st["logp"]), old_ent,
                   sg(stats_pass.reductions_of(st, needs.old_vocab)),
                   ref_logp)
    pb, tstate, prep_m = loss_lib.prepare_batch(pb, transform, tstate,
                                                rng=k_prep, step=step)
    b = pb._replace(logp=st["logp"], entropy=st["entropy"],
                    vocab_stats=stats_pass.reductions_of(st, needs.vocab))
    loss, (tstate, m) = loss_lib.policy_loss(
        b, transform, tstate, objective=objective, rng=k_loss, step=step,
        stat_scope=stat_scope)
    return loss, (tstate, m, prep_m, old_ent)

  def measure(params, inputs, mask, old_entropy):
    if not measure_entropy_change:
      return {}
    new = full_pass(params, inputs, core_types.Needs())["entropy"]
    before = ops.masked_mean(old_entropy, mask)
    after = ops.masked_mean(new, mask)
    return {"entropy_before": before, "entropy_after": after,
            "entropy_change": after - before}

  def finish(state, params, opt_state, tstate, skipped, metrics):
    nonfinite = state.nonfinite_steps + skipped
    metrics.update(skipped_steps=skipped.astype(jnp.float32),
                   nonfinite_steps=nonfinite.astype(jnp.float32))
    new_state = state._replace(step=state.step + 1, params=params,
                               opt_state=opt_state, transform_state=tstate,
                               nonfinite_steps=nonfinite)
    return new_state, metrics

  def fused_step(state, batch):
    k_prep = types.step_key(state, "prepare")
    k_loss = jax.random.fold_in(types.step_key(state, "loss"), 0)
    inputs = layout.model_inputs(batch)
    ref_logp = ref_pass(state, inputs)
    grad_fn = jax.value_and_grad(fused_loss_fn, has_aux=True)
    (loss, (tstate, m, prep_m, old_ent)), grads = grad_fn(
        state.params, batch, ref_logp, state.transform_state, k_prep, k_loss,
        state.step)
    params, opt_state, ok, gnorm = apply_gradients(
        optimizer, state.params, state.opt_state, grads, loss, max_grad_norm)
    tstate = _select(ok, tstate, state.transform_state)
    base = layout.policy_batch(batch)
    metrics = {**_rollout_metrics(base), **prep_m, **m, "grad_norm": gnorm}
    metrics.update(measure(params, inputs, base.mask, old_ent))
    return finish(state, params, opt_state, tstate,
                  (~ok).astype(jnp.int32), metrics)

  def multi_step(state, batch):
    base = layout.policy_batch(batch)
    inputs = layout.model_inputs(batch)
    rows = base.mask.shape[0]
    if rows % minibatches:
      raise ValueError(f"rollout rows ({rows}) must divide into "
                       f"{minibatches} minibatches")
    need_old_pass = (recompute_old_logp or bool(needs.old_vocab) or (
        base.old_entropy is None and ("old_entropy" in needs.fields or
                                      measure_entropy_change)))
    if need_old_pass:
      old = full_pass(state.params, inputs, _old_needs(needs))
      old_logp = old["logp"] if recompute_old_logp else base.old_logp
      old_ent = old["entropy"]
      old_vocab = stats_pass.reductions_of(old, needs.old_vocab)
    else:
      old_logp, old_ent, old_vocab = base.old_logp, base.old_entropy, None
    old_logp, old_ent = sg(old_logp), None if old_ent is None else sg(old_ent)
    pb = _with_old(base, old_logp, old_ent, old_vocab,
                   ref_pass(state, inputs))
    pb, tstate, prep_m = loss_lib.prepare_batch(
        pb, transform, state.transform_state,
        rng=types.step_key(state, "prepare"), step=state.step)
    k_shuf = types.step_key(state, "shuffle")
    k_loss = types.step_key(state, "loss")
    mb = rows // minibatches

    def epoch_rows(e):
      if shuffle and minibatches > 1:
        perm = jax.random.permutation(jax.random.fold_in(k_shuf, e), rows)
      else:
        perm = jnp.arange(rows)
      return perm.reshape(minibatches, mb)

    idx = jnp.concatenate([epoch_rows(e) for e in range(epochs)], 0)

    def body(carry, xs):
      params, opt_state, tstate, skipped = carry
      i, rows_i = xs
      mb_pb = _take_rows(pb, rows_i, rows)
      mb_in = _take_rows(inputs, rows_i, rows)
      (loss, (new_ts, m)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          params, mb_pb, mb_in, tstate, jax.random.fold_in(k_loss, i),
          state.step)
      params, opt_state, ok, gnorm = apply_gradients(
          optimizer, params, opt_state, grads, loss, max_grad_norm)
      tstate = _select(ok, new_ts, tstate)
      m = {**m, "grad_norm": gnorm}
      return (params, opt_state, tstate, skipped + (~ok).astype(jnp.int32)), m

    carry = (state.params, state.opt_state, tstate, jnp.zeros((), jnp.int32))
    (params, opt_state, tstate, skipped), ms = jax.lax.scan(
        body, carry, (jnp.arange(n_steps), idx))
    metrics = {**_rollout_metrics(base), **prep_m, **_mean_metrics(ms)}
    if old_ent is not None:
      metrics.update(measure(params, inputs, base.mask, old_ent))
    return finish(state, params, opt_state, tstate, skipped, metrics)

  return fused_step if fused else multi_step


def _old_needs(needs: core_types.Needs) -> core_types.Needs:
  """The old pass's declaration: the old-policy reductions only."""
  return core_types.Needs(needs.fields, {}, needs.old_vocab)


# ------------------------------------------------------------------------ SFT


def make_sft_step(fns: Any, optimizer: optax.GradientTransformation, *,
                  max_grad_norm: float | None = 1.0, token_chunk: int = 1024,
                  vocab_chunk: int = 4096, compute_dtype: Any = None
                  ) -> Callable[[TrainState, types.SFTBatch],
                                tuple[TrainState, dict[str, Array]]]:
  """Supervised warm-up: token-mean cross-entropy on ``loss_mask`` tokens.

  ``L = −Σ_t m_t log π(x_t | x_<t) / Σ_t m_t`` over the solution tokens, with
  the same chunked statistics pass (no [N, V] logits). Non-finite steps are
  skipped and counted as in the RL step.

  Returns:
    ``sft_step(state, batch) -> (state, metrics)`` with ``sft_nll``,
    ``sft_token_acc`` (greedy next-token accuracy), ``sft_entropy``,
    ``grad_norm``.
  """

  def loss_fn(params, batch: types.SFTBatch):
    mask = batch.mask.astype(bool)
    tokens = batch.tokens.astype(jnp.int32)
    hidden, _ = fns.hidden(params, tokens,
                           decoder_lib.positions_from_mask(mask), mask, None)
    st = token_stats_lib.stats_for_needs(
        hidden[:, :-1], fns.head(params), tokens[:, 1:], core_types.Needs(),
        token_chunk=token_chunk, vocab_chunk=vocab_chunk,
        compute_dtype=compute_dtype)
    lm = batch.loss_mask[:, 1:].astype(jnp.float32)
    nll = -ops.masked_mean(st["logp"], lm)
    greedy = (st["logp"] + st["lse"] >= st["max_logit"] - 1e-6)
    metrics = {"sft_nll": nll,
               "sft_token_acc": ops.masked_mean(greedy, lm),
               "sft_entropy": ops.masked_mean(sg(st["entropy"]), lm)}
    return nll, metrics

  def sft_step(state: TrainState, batch: types.SFTBatch):
    (loss, m), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, batch)
    params, opt_state, ok, gnorm = apply_gradients(
        optimizer, state.params, state.opt_state, grads, loss, max_grad_norm)
    skipped = (~ok).astype(jnp.int32)
    nonfinite = state.nonfinite_steps + skipped
    m = {**{k: sg(v) for k, v in m.items()}, "grad_norm": gnorm,
         "nonfinite_steps": nonfinite.astype(jnp.float32)}
    return state._replace(step=state.step + 1, params=params,
                          opt_state=opt_state, nonfinite_steps=nonfinite), m

  return sft_step
