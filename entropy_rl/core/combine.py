"""Composition of entropy transforms: ``chain`` and ``named_chain``."""

from __future__ import annotations

import collections
import zlib
from typing import Any, Sequence

import jax

from entropy_rl.core import types

EntropyTransform = types.EntropyTransform
PolicyBatch = types.PolicyBatch


def _merge_needs(needs: Sequence[types.Needs]) -> types.Needs:
  """The union of the members' needs; a reduction name declared twice must
  name equal reductions (reductions are values: equal settings, equal).
  Equal reductions are merged into one object, the first declared."""
  fields: set[str] = set()
  vocab: dict[str, types.VocabReduction] = {}
  old_vocab: dict[str, types.VocabReduction] = {}
  first: dict[types.VocabReduction, types.VocabReduction] = {}
  for n in needs:
    fields |= set(n.fields)
    for src, dst in ((n.vocab, vocab), (n.old_vocab, old_vocab)):
      for k, r in src.items():
        if k in dst and dst[k] != r:
          raise ValueError(
              f"two transforms declare different vocabulary reductions "
              f"named {k!r}: {dst[k]!r} and {r!r}")
        dst[k] = first.setdefault(r, r)
  return types.Needs(frozenset(fields), vocab, old_vocab)


def _member_rng(rng, index: int, name: str | None):
  if rng is None:
    return None
  if name is None:
    return jax.random.fold_in(rng, index)
  return jax.random.fold_in(rng, zlib.crc32(name.encode()) & 0x7FFFFFFF)


def _run(transforms, names, batch: PolicyBatch, states, phase: str, rng,
         **kwargs):
  new_states = []
  for i, (t, s) in enumerate(zip(transforms, states)):
    fn = t.update if phase == "update" else t.prepare
    if fn is None:
      new_states.append(s)
      continue
    name = None if names is None else names[i]
    before_terms = dict(batch.loss_terms or {})
    before_metrics = dict(batch.metrics or {})
    batch, s = fn(batch, s, rng=_member_rng(rng, i, name), **kwargs)
    terms = dict(batch.loss_terms or {})
    for k, v in before_terms.items():
      if terms.get(k) is not v:
        raise ValueError(f"transform {name or i} overwrote loss term {k!r}")
    if name is not None:
      metrics = dict(batch.metrics or {})
      terms = {**before_terms,
               **{f"{name}/{k}": v for k, v in terms.items()
                  if k not in before_terms}}
      metrics = {**before_metrics,
                 **{f"{name}/{k}": v for k, v in metrics.items()
                    if k not in before_metrics}}
      batch = batch._replace(loss_terms=terms, metrics=metrics)
    new_states.append(s)
  return batch, new_states


def chain(*transforms: EntropyTransform) -> EntropyTransform:
  """Applies transforms in order, like ``optax.chain``.

  The state is a tuple in argument order. Needs are merged (two different
  reductions under one name raise). Member ``i`` gets ``fold_in(rng, i)``.
  Overwriting an existing loss term raises. ``chain()`` is the identity.

  Args:
    *transforms: the transforms to apply, first to last.

  Returns:
    An :class:`EntropyTransform`.

  Examples:
    >>> import entropy_rl as er
    >>> from entropy_rl import regularizers
    >>> t = er.chain(regularizers.grpo_advantages(),
    ...              regularizers.entropy_bonus(0.01))
    >>> state = t.init(None)
    >>> type(state).__name__, len(state)
    ('tuple', 2)
  """

  def init_fn(params=None):
    return tuple(t.init(params) for t in transforms)

  def _phase(phase):
    def fn(batch, state, *, rng=None, **kwargs):
      if len(state) != len(transforms):
        raise ValueError(
            f"chain of {len(transforms)} transforms got a state of "
            f"{len(state)} entries")
      batch, s = _run(transforms, None, batch, state, phase, rng, **kwargs)
      return batch, tuple(s)
    return fn

  has_prepare = any(t.prepare is not None for t in transforms)
  return EntropyTransform(
      init_fn, _phase("update"), _phase("prepare") if has_prepare else None,
      _merge_needs([t.needs for t in transforms]))


def named_chain(*pairs: tuple[str, EntropyTransform]) -> EntropyTransform:
  """Like :func:`chain`, with named members (optax ``named_chain``).

  The state is an ``OrderedDict`` keyed by name. Loss terms and metrics a
  member adds are prefixed ``"name/"``. A member's rng is
  ``fold_in(rng, crc32(name))``, so adding or removing a member leaves the
  others' random streams unchanged.

  Args:
    *pairs: ``(name, transform)`` pairs; names must be unique.

  Returns:
    An :class:`EntropyTransform`.

  Examples:
    >>> import jax.numpy as jnp
    >>> import entropy_rl as er
    >>> from entropy_rl import regularizers
    >>> t = er.named_chain(("adv", regularizers.grpo_advantages()),
    ...                    ("bonus", regularizers.entropy_bonus(0.01)))
    >>> state = t.init(None)
    >>> list(state)
    ['adv', 'bonus']
    >>> batch = er.PolicyBatch(
    ...     logp=jnp.zeros((2, 2)), old_logp=jnp.zeros((2, 2)),
    ...     advantages=jnp.zeros((2, 2)), mask=jnp.ones((2, 2)),
    ...     entropy=jnp.array([[0.6, 0.6], [1.0, 1.0]]),
    ...     rewards=jnp.array([1.0, 0.0]), group_ids=jnp.array([0, 0]))
    >>> batch, state, _ = er.prepare_batch(batch, t, state)
    >>> loss, (state, metrics) = er.policy_loss(batch, t, state,
    ...                                         objective=er.grpo())
    >>> [k for k in metrics if k.startswith("bonus/")]
    ['bonus/entropy_coef']
  """
  names = [n for n, _ in pairs]
  dup = sorted({n for n in names if names.count(n) > 1})
  if dup:
    raise ValueError(f"named_chain got duplicate names {dup}")
  transforms = [t for _, t in pairs]

  def init_fn(params=None):
    return collections.OrderedDict((n, t.init(params)) for n, t in pairs)

  def _phase(phase):
    def fn(batch, state, *, rng=None, **kwargs):
      missing = [n for n in names if n not in state]
      if missing:
        raise ValueError(f"named_chain state lacks entries {missing}")
      batch, s = _run(transforms, names, batch, [state[n] for n in names],
                      phase, rng, **kwargs)
      return batch, collections.OrderedDict(zip(names, s))
    return fn

  has_prepare = any(t.prepare is not None for t in transforms)
  return EntropyTransform(
      init_fn, _phase("update"), _phase("prepare") if has_prepare else None,
      _merge_needs([t.needs for t in transforms]))


def identity() -> EntropyTransform:
  """The empty chain."""
  return chain()


def get_state(state: Any, name: str) -> Any:
  """Looks up a member's state by name in a (possibly nested) named chain."""
  if isinstance(state, collections.OrderedDict) or isinstance(state, dict):
    if name in state:
      return state[name]
    for v in state.values():
      found = get_state(v, name)
      if found is not None:
        return found
  elif isinstance(state, tuple) and not hasattr(state, "_fields"):
    for v in state:
      found = get_state(v, name)
      if found is not None:
        return found
  return None
