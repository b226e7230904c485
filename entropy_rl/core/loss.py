"""``prepare_batch`` and ``policy_loss``: the function a train step differentiates.

``policy_loss`` fills the batch's knobs, runs the transform's loss-side
``update`` once per statistics scope, evaluates the objective and adds the
transforms' loss terms::

    X = sg(weights) · objective.token_loss(batch')           # [B, T]
    loss = agg(X) + Σ_[B,T] terms agg(term) + Σ_scalar terms term

It also reports the entropy observability shared by every method: entropy mean
and quantiles, cov(ℓ, A) and the first-order entropy change it predicts
(Cui et al. 2025, "The Entropy Mechanism of RL for Reasoning LMs",
https://arxiv.org/abs/2505.22617: ΔH ≈ −η·Cov(log π, A) for natural PG).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from entropy_rl.core import objectives as objectives_lib
from entropy_rl.core import ops
from entropy_rl.core import types

Array = types.Array
PolicyBatch = types.PolicyBatch
Clip = types.Clip
sg = jax.lax.stop_gradient

_TOKEN_FIELDS = ("logp", "old_logp", "advantages", "mask", "entropy",
                 "old_entropy", "ref_logp", "segment_ids", "weights")
_ROW_FIELDS = ("rewards", "group_ids", "traj_ids")
ENTROPY_QUANTILES = (0.1, 0.5, 0.9)


def validate_batch(batch: PolicyBatch, needs: types.Needs | None = None) -> None:
  """Checks ranks and shapes; raises ValueError naming the field and shapes."""
  for name in ("logp", "old_logp", "advantages", "mask"):
    if getattr(batch, name) is None:
      raise ValueError(f"PolicyBatch.{name} is required")
  if batch.logp.ndim != 2:
    raise ValueError(
        f"PolicyBatch.logp must have rank 2 [B, T], got shape "
        f"{tuple(batch.logp.shape)}")
  bt = tuple(batch.logp.shape)
  for name in _TOKEN_FIELDS:
    x = getattr(batch, name)
    if x is None:
      continue
    if name == "advantages" and tuple(x.shape) == bt[:1]:
      continue  # per-row advantages are broadcast over tokens
    if tuple(x.shape) != bt:
      raise ValueError(f"PolicyBatch.{name} has shape {tuple(x.shape)}, "
                       f"expected {bt} (the shape of logp)")
  for name in _ROW_FIELDS:
    x = getattr(batch, name)
    if x is not None and tuple(x.shape) != bt[:1]:
      raise ValueError(f"PolicyBatch.{name} has shape {tuple(x.shape)}, "
                       f"expected {bt[:1]} (one per row)")
  for group in ("vocab_stats", "old_vocab_stats", "aux"):
    for k, v in (getattr(batch, group) or {}).items():
      if tuple(v.shape[:1]) != bt[:1]:
        raise ValueError(f"PolicyBatch.{group}[{k!r}] has shape "
                         f"{tuple(v.shape)}, expected leading dim {bt[0]}")
  if needs is not None:
    missing = [f for f in sorted(needs.fields) if getattr(batch, f, None) is None]
    if missing:
      raise ValueError(f"the transform needs PolicyBatch fields {missing}, "
                       "which are None")
    for group, names in (("vocab_stats", needs.vocab),
                         ("old_vocab_stats", needs.old_vocab)):
      have = getattr(batch, group) or {}
      lacking = [n for n in names if n not in have]
      if lacking:
        raise ValueError(f"the transform needs {group} {lacking}; compute them "
                         "with token_stats(reductions=transform.needs...)")


def fill_batch(batch: PolicyBatch, objective: objectives_lib.Objective
               ) -> PolicyBatch:
  """Normalises a batch: float32 mask, [B, T] weights and clip, dict knobs."""
  shape = batch.logp.shape
  f32 = lambda x: jnp.broadcast_to(jnp.asarray(x, jnp.float32), shape)
  adv = jnp.asarray(batch.advantages, jnp.float32)
  if adv.ndim == 1:
    adv = adv[:, None]
  clip = batch.clip if batch.clip is not None else objective.clip
  return batch._replace(
      mask=jnp.asarray(batch.mask, jnp.float32),
      advantages=f32(adv),
      weights=f32(1.0) if batch.weights is None else f32(batch.weights),
      clip=Clip(*(f32(v) for v in clip)),
      loss_terms=dict(batch.loss_terms or {}),
      metrics=dict(batch.metrics or {}),
      vocab_stats=dict(batch.vocab_stats or {}),
      old_vocab_stats=dict(batch.old_vocab_stats or {}),
      aux=dict(batch.aux or {}))


def prepare_batch(batch: PolicyBatch, transform: types.EntropyTransform,
                  state: Any, *, rng: types.PRNGKey | None = None,
                  step: Array | int = 0, **extra: Any
                  ) -> tuple[PolicyBatch, Any, dict[str, Array]]:
  """Runs the transform's batch-side ``prepare`` on the whole rollout batch.

  Call it once per RL step after the old-policy pass and before slicing
  mini-batches. Nothing here is differentiated.

  Returns:
    ``(batch', state', metrics)``. ``batch'`` has the pytree structure it was
    given (fields that were None and that the transform did not write stay
    None; metrics and loss terms are the caller's), so it can be sliced and
    passed to :func:`policy_loss` without a retrace.

  Examples:
    GRPO's group advantages ``(r − mean) / std`` (sample std) are written in
    ``prepare``; one group of two rows with rewards 1 and 0:

    >>> import jax.numpy as jnp
    >>> import entropy_rl as er
    >>> from entropy_rl import regularizers
    >>> t = regularizers.grpo_advantages()
    >>> batch = er.PolicyBatch(
    ...     logp=jnp.zeros((2, 2)), old_logp=jnp.zeros((2, 2)),
    ...     advantages=jnp.zeros((2, 2)), mask=jnp.ones((2, 2)),
    ...     rewards=jnp.array([1.0, 0.0]), group_ids=jnp.array([0, 0]))
    >>> batch, state, _ = er.prepare_batch(batch, t, t.init(None))
    >>> print(batch.advantages.round(4))
    [[ 0.7071  0.7071]
     [-0.7071 -0.7071]]
  """
  validate_batch(batch)
  if transform.prepare is None:
    return batch, state, {}
  b = batch._replace(
      mask=jnp.asarray(batch.mask, jnp.float32),
      metrics={}, loss_terms=dict(batch.loss_terms or {}),
      aux=dict(batch.aux or {}),
      vocab_stats=dict(batch.vocab_stats or {}),
      old_vocab_stats=dict(batch.old_vocab_stats or {}))
  if b.advantages.ndim == 1:
    b = b._replace(advantages=jnp.broadcast_to(
        b.advantages[:, None], b.logp.shape) * b.mask)
  b, new_state = transform.prepare(b, state, rng=rng,
                                   step=jnp.asarray(step), **extra)
  b = jax.tree.map(sg, b)
  metrics = dict(b.metrics or {})
  # Keep the caller's pytree structure: dict fields the transform left empty
  # go back to None if they were None (no retrace downstream), and loss terms
  # never outlive prepare.
  restore = {}
  for name in ("aux", "vocab_stats", "old_vocab_stats"):
    if getattr(batch, name) is None and not getattr(b, name):
      restore[name] = None
  b = b._replace(metrics=batch.metrics, loss_terms=batch.loss_terms, **restore)
  return b, jax.tree.map(sg, new_state), metrics


def entropy_metrics(batch: PolicyBatch) -> dict[str, Array]:
  """Entropy mean/quantiles, cov(ℓ, A) and the predicted entropy change.

  ``cov_logp_adv = mean_valid[(ℓ − ℓ̄)(A − Ā)]`` and
  ``pred_entropy_change = −cov_logp_adv``, the natural-PG first-order
  entropy change per unit step size (Cui et al. 2025, §3 of the spec).
  """
  m = batch.mask
  metrics = {}
  ent = batch.entropy if batch.entropy is not None else batch.old_entropy
  if ent is not None:
    ent = sg(ent)
    metrics["entropy"] = ops.masked_mean(ent, m)
    qs = ops.masked_quantiles(ent, m, ENTROPY_QUANTILES)
    for q, v in zip(ENTROPY_QUANTILES, qs):
      metrics[f"entropy_q{int(q * 100):02d}"] = v
  lp = sg(batch.logp)
  a = batch.advantages
  cov = ops.masked_mean((lp - ops.masked_mean(lp, m)) *
                        (a - ops.masked_mean(a, m)), m)
  metrics["cov_logp_adv"] = cov
  metrics["pred_entropy_change"] = -cov
  metrics["nll"] = -ops.masked_mean(lp, m)
  metrics["approx_kl_old"] = ops.masked_mean(sg(batch.old_logp) - lp, m)
  return metrics


def _one_scope(batch, state, rng, transform, objective, step, extra):
  clip_before = batch.clip
  weights_before = batch.weights
  b, new_state = transform.update(batch, state, rng=rng, step=step, **extra)
  if "clip" not in objective.honours and b.clip is not clip_before:
    raise ValueError(f"a transform set per-token clip parameters, which the "
                     f"{objective.name} objective does not honour")
  if "weights" not in objective.honours and b.weights is not weights_before:
    raise ValueError(f"a transform set token weights, which the "
                     f"{objective.name} objective does not honour")
  mask = b.mask
  agg = lambda x: objectives_lib.aggregate(x, mask, objective.agg,
                                           objective.l_max, objective.smtsn)
  token_loss, indicators = objective.token_loss(b)
  pg_loss = agg(sg(b.weights) * token_loss)
  loss = pg_loss
  metrics = {"pg_loss": sg(pg_loss)}
  for name in sorted(b.loss_terms):
    term = b.loss_terms[name]
    if term.ndim == 2:
      value = agg(term)
    elif term.ndim == 0:
      value = term
    else:
      raise ValueError(f"loss term {name!r} has shape {term.shape}; expected "
                       "[B, T] or a scalar")
    loss = loss + value
    metrics[f"terms/{name}"] = sg(value)
  for k, v in indicators.items():
    metrics[f"{k}_frac"] = sg(ops.masked_mean(v, mask))
  metrics.update(entropy_metrics(b))
  metrics["weight_mean"] = sg(ops.masked_mean(b.weights, mask))
  metrics.update({k: sg(v) for k, v in b.metrics.items()})
  metrics["loss"] = sg(loss)
  metrics["nonfinite"] = (~jnp.isfinite(sg(loss))).astype(jnp.float32)
  return loss, (new_state, metrics)


def policy_loss(batch: PolicyBatch, transform: types.EntropyTransform,
                state: Any, *, objective: objectives_lib.Objective,
                rng: types.PRNGKey | None = None, step: Array | int = 0,
                stat_scope: int | None = None, **extra: Any
                ) -> tuple[Array, tuple[Any, dict[str, Array]]]:
  """The loss a train step differentiates.

  Args:
    batch: a :class:`PolicyBatch` ([B, T] per-token fields, [B] per-row).
    transform: the entropy transform (e.g. a :func:`chain`).
    state: its state.
    objective: an :class:`Objective`.
    rng: PRNG key for transforms that sample (one per scope).
    step: the global step (a scalar).
    stat_scope: rows per statistics scope. ``None`` takes every batch
      statistic over the whole batch; an int ``k`` (dividing B) reshapes the
      batch into B/k scopes and vmaps over them, reproducing the per-micro-batch
      statistics of verl-based reference code (``ppo_micro_batch_size_per_gpu``).
      Loss and metrics are averaged over scopes; float state leaves are
      averaged, others taken from the last scope.
    **extra: forwarded to the transform.

  Returns:
    ``(loss, (new_state, metrics))``. ``metrics["nonfinite"]`` is 1 when the
    loss is not finite, so the step can skip the update.

  Examples:
    On-policy (ratio 1) with zero advantages the surrogate is 0, so the loss
    is the entropy bonus alone, ``−0.01 · mean(H) = −0.01 · 0.8``:

    >>> import jax.numpy as jnp
    >>> import entropy_rl as er
    >>> from entropy_rl import regularizers
    >>> t = regularizers.entropy_bonus(0.01)
    >>> batch = er.PolicyBatch(
    ...     logp=jnp.zeros((2, 2)), old_logp=jnp.zeros((2, 2)),
    ...     advantages=jnp.zeros((2, 2)), mask=jnp.ones((2, 2)),
    ...     entropy=jnp.array([[0.6, 0.6], [1.0, 1.0]]))
    >>> loss, (state, metrics) = er.policy_loss(
    ...     batch, t, t.init(None), objective=er.grpo())
    >>> print(f"{float(loss):.4f}")
    -0.0080
  """
  validate_batch(batch, transform.needs)
  batch = fill_batch(batch, objective)
  step = jnp.asarray(step)
  if stat_scope is None:
    loss, (s, m) = _one_scope(batch, state, rng, transform, objective, step,
                              extra)
    return loss, (jax.tree.map(sg, s), m)
  rows = batch.logp.shape[0]
  if stat_scope <= 0 or rows % stat_scope:
    raise ValueError(f"stat_scope={stat_scope} must be a positive divisor of "
                     f"the batch size {rows}")
  k = rows // stat_scope
  scoped = jax.tree.map(lambda x: x.reshape((k, stat_scope) + x.shape[1:]),
                        batch)
  keys = None if rng is None else jax.random.split(rng, k)
  fn = lambda b, r: _one_scope(b, state, r, transform, objective, step, extra)
  losses, (states, metrics) = jax.vmap(
      fn, in_axes=(0, None if keys is None else 0))(scoped, keys)

  def reduce(x):
    if jnp.issubdtype(x.dtype, jnp.floating):
      return x.mean(0).astype(x.dtype)
    return x[-1]

  new_state = jax.tree.map(lambda x: sg(reduce(x)), states)
  metrics = jax.tree.map(lambda x: jnp.nanmean(x, 0), metrics)
  metrics["nonfinite"] = (~jnp.isfinite(jnp.mean(sg(losses)))).astype(
      jnp.float32)
  return losses.mean(), (new_state, metrics)
