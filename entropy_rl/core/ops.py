"""Small masked array helpers shared by objectives and transforms."""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp

from entropy_rl.core import types

Array = types.Array
sg = jax.lax.stop_gradient


def masked_mean(x: Array, mask: Array) -> Array:
  """Σ x·m / max(Σ m, 1) over all entries (m may be bool or float)."""
  m = mask.astype(jnp.float32)
  return jnp.sum(jnp.where(m > 0, x, 0.0) * m) / jnp.maximum(jnp.sum(m), 1.0)


def masked_std(x: Array, mask: Array) -> Array:
  """Population standard deviation of the valid entries."""
  mu = masked_mean(x, mask)
  return jnp.sqrt(masked_mean((x - mu) ** 2, mask))


def masked_min(x: Array, mask: Array) -> Array:
  return jnp.min(jnp.where(mask > 0, x, jnp.inf))


def masked_max(x: Array, mask: Array) -> Array:
  return jnp.max(jnp.where(mask > 0, x, -jnp.inf))


def masked_quantiles(x: Array, mask: Array, qs: Sequence[float]) -> Array:
  """Linear-interpolation quantiles of the valid entries (NaN if none)."""
  flat = jnp.where(mask > 0, x, jnp.nan).ravel()
  return jnp.nanquantile(flat, jnp.asarray(qs, jnp.float32))


def finite_or(x: Array, fill: float = 0.0) -> Array:
  """Replaces non-finite entries of ``x`` by ``fill``."""
  return jnp.where(jnp.isfinite(x), x, fill)


def topk_mask(score: Array, valid: Array, k: Array | int, k_max: int) -> Array:
  """Mask of the ``k`` highest-scoring valid entries.

  Static shapes: ``k`` may be traced but must satisfy ``k <= k_max`` where
  ``k_max`` is a static Python int; ``lax.top_k`` with that bound costs O(N)
  instead of a full sort.

  Args:
    score: [...] scores.
    valid: [...] bool, entries that may be selected.
    k: number to select (traced or static).
    k_max: static upper bound on ``k``.

  Returns:
    [...] bool mask with at most ``min(k, #valid)`` entries set.
  """
  flat = jnp.where(valid, score, -jnp.inf).ravel()
  k_max = max(1, min(int(k_max), flat.size))
  _, idx = jax.lax.top_k(flat, k_max)
  keep = (jnp.arange(k_max) < k) & valid.ravel()[idx]
  return jnp.zeros(flat.shape, bool).at[idx].set(keep).reshape(score.shape)


def static_k_max(frac: float, size: int) -> int:
  """Static bound ``max(1, floor(frac · size))`` for :func:`topk_mask`."""
  return max(1, min(size, math.floor(frac * size) + 1))


def check_shape(name: str, x: Array | None, shape: tuple[int, ...]) -> None:
  """Raises ValueError naming ``name`` if ``x`` has not ``shape``."""
  if x is None:
    return
  if tuple(x.shape) != tuple(shape):
    raise ValueError(
        f"{name} has shape {tuple(x.shape)}, expected {tuple(shape)}")


def add_metrics(batch: types.PolicyBatch, **metrics: Array) -> types.PolicyBatch:
  """Returns ``batch`` with stop-gradient scalar metrics added."""
  new = dict(batch.metrics or {})
  new.update({k: sg(jnp.asarray(v, jnp.float32)) for k, v in metrics.items()})
  return batch._replace(metrics=new)


def add_loss_term(batch: types.PolicyBatch, name: str,
                  value: Array) -> types.PolicyBatch:
  """Returns ``batch`` with a new loss term; an existing name raises."""
  terms = dict(batch.loss_terms or {})
  if name in terms:
    raise ValueError(f"loss term {name!r} already exists; pass term=... to "
                     "give this transform another name")
  terms[name] = value
  return batch._replace(loss_terms=terms)


def group_reduce(values: Array, group_ids: Array, num_groups: int,
                 mask: Array | None = None):
  """Per-group sum and count of ``values`` [B]; returns ([G], [G])."""
  w = jnp.ones_like(values) if mask is None else mask.astype(values.dtype)
  s = jax.ops.segment_sum(values * w, group_ids, num_segments=num_groups)
  n = jax.ops.segment_sum(w, group_ids, num_segments=num_groups)
  return s, n
