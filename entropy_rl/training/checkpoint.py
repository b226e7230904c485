"""Orbax checkpoints of the train state and the grain iterator, together.

One ``ocp.CheckpointManager`` (the v0 API, warning-free in orbax 0.12) per
directory. Each step saves a ``Composite`` of ``state`` (the train state,
``StandardSave``), ``data`` (the grain iterator position,
``grain.checkpoint.CheckpointSave``) and ``meta`` (JSON: the loop's own
counters). The preservation policy keeps the last ``keep`` checkpoints and
the ``keep_best`` best by a metric, so resuming continues exactly where the
run stopped: same parameters, optimizer and transform state, rng, and data
order.

Restores take an abstract target with concrete ``NamedSharding``s (from the
live, freshly initialised state), so arrays come back sharded as the mesh
says (env-notes 2d: AbstractMesh shardings fail).
"""

from __future__ import annotations

import math
import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm


def abstract_like(tree: Any) -> Any:
  """``ShapeDtypeStruct``s (with the arrays' shardings) of a live pytree."""
  def one(x):
    if isinstance(x, jax.Array):
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    return x
  return jax.tree.map(one, tree)


class Checkpointer:
  """Saves and restores ``(state, data iterator, meta)`` under a directory.

  Args:
    directory: where step folders go (created).
    keep: the last ``keep`` checkpoints are kept.
    keep_best: also keep the ``keep_best`` best by ``best_metric`` (0: off).
    best_metric: the metric name ranking checkpoints (``save(metrics=...)``).
    best_mode: ``"max"`` or ``"min"``.
    async_save: save in a background thread (``wait()`` / ``close()`` join).
  """

  def __init__(self, directory: str, *, keep: int = 2, keep_best: int = 1,
               best_metric: str = "eval/accuracy", best_mode: str = "max",
               async_save: bool = True):
    if best_mode not in ("max", "min"):
      raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
    if keep < 1:
      raise ValueError(f"keep must be at least 1, got {keep}")
    self.directory = os.path.abspath(directory)
    self.best_metric = best_metric
    worst = -math.inf if best_mode == "max" else math.inf

    def metric(m):
      v = (m or {}).get(best_metric, worst)
      return worst if v is None or v != v else float(v)

    policies = [ocm.LatestN(n=keep)]
    if keep_best:
      policies.append(ocm.BestN(get_metric_fn=metric,
                                reverse=best_mode == "min", n=keep_best,
                                keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocm.AnyPreservationPolicy(policies),
        enable_async_checkpointing=async_save, create=True)
    self._mngr = ocp.CheckpointManager(self.directory, options=options)

  @property
  def manager(self) -> ocp.CheckpointManager:
    return self._mngr

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._mngr.all_steps())

  def best_step(self) -> int | None:
    return self._mngr.best_step()

  def save(self, step: int, state: Any, *, data_iterator: Any = None,
           metrics: dict[str, float] | None = None,
           meta: dict[str, Any] | None = None, force: bool = False) -> bool:
    """Saves one checkpoint (asynchronously by default).

    Args:
      step: the checkpoint's step number.
      state: the train state pytree.
      data_iterator: a grain ``DatasetIterator`` whose position is saved.
      metrics: scalars for the best-checkpoint policy (JSON).
      meta: JSON-serialisable loop counters.
      force: save even if the manager's policy would skip this step.

    Returns:
      Whether a save was started.
    """
    items = {"state": ocp.args.StandardSave(state),
             "meta": ocp.args.JsonSave(dict(meta or {}))}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    metrics = {k: float(v) for k, v in (metrics or {}).items()}
    return self._mngr.save(int(step), args=ocp.args.Composite(**items),
                           metrics=metrics, force=force)

  def restore(self, target_state: Any, *, data_iterator: Any = None,
              step: int | None = None) -> tuple[Any, dict[str, Any]] | None:
    """Restores the latest (or a given) checkpoint, or returns None.

    Args:
      target_state: a live state (or abstract one with concrete shardings)
        giving structure, dtypes and shardings.
      data_iterator: a fresh grain iterator; its position is restored in
        place.
      step: the step to restore (default: the latest).

    Returns:
      ``(state, meta)`` or None when the directory holds no checkpoint.
    """
    step = self._mngr.latest_step() if step is None else step
    if step is None:
      return None
    items = {"state": ocp.args.StandardRestore(abstract_like(target_state)),
             "meta": ocp.args.JsonRestore()}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    out = self._mngr.restore(step, args=ocp.args.Composite(**items))
    return out["state"], dict(out["meta"] or {})

  def wait(self) -> None:
    self._mngr.wait_until_finished()

  def close(self) -> None:
    self._mngr.wait_until_finished()
    self._mngr.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc) -> None:
    self.close()
