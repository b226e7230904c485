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

Damaged checkpoints (a truncated or overwritten file, a tree that no longer
matches) are detected on restore and after each save, reported with the
step, the file and the reason, and moved to ``<directory>/corrupt/<step>``
(never deleted); a restore then falls back to the newest older checkpoint
that restores. A save that fails (e.g. a full disk) raises
:class:`CheckpointSaveError` naming the step and the directory.
"""

from __future__ import annotations

import errno
import glob
import json
import math
import os
import re
import sys
import warnings
from typing import Any, NamedTuple

import grain
import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm

# Damaged step folders are moved here (inside the checkpoint directory; not
# a step name, so orbax's step listing skips it).
CORRUPT_DIR = "corrupt"
_REASON_CHARS = 300


class CheckpointWarning(UserWarning):
  """A checkpoint was found damaged and moved aside."""


class CheckpointProblem(NamedTuple):
  """Why one checkpoint step cannot be trusted.

  Attributes:
    step: the checkpoint's step.
    file: the damaged file, relative to the step folder (None: unknown).
    reason: the error, shortened.
  """
  step: int
  file: str | None
  reason: str

  def describe(self) -> str:
    where = f" (file {self.file})" if self.file else ""
    return f"step {self.step}{where}: {self.reason}"


class CheckpointCorruptError(RuntimeError):
  """No checkpoint of a directory restores.

  Attributes:
    directory: the checkpoint directory.
    failures: a :class:`CheckpointProblem` per step tried, newest first.
  """

  def __init__(self, directory: str, failures: list[CheckpointProblem]):
    self.directory = directory
    self.failures = tuple(failures)
    tried = "\n".join(f"  {p.describe()}" for p in self.failures)
    super().__init__(
        f"no checkpoint in {directory} restores ({len(self.failures)} "
        f"tried, newest first):\n{tried}\nThey were left in place. If the "
        f"target changed (another model or config), restore with the old "
        f"one; to start over, move these step folders away.")


class CheckpointSaveError(RuntimeError):
  """Writing a checkpoint failed; earlier checkpoints are untouched.

  Attributes:
    step: the step being saved.
    directory: the checkpoint directory.
    no_space: whether the device ran out of space.
  """

  def __init__(self, step: int, directory: str, reason: str,
               no_space: bool, kept: list[int]):
    self.step, self.directory, self.no_space = step, directory, no_space
    what = ("no space left on device" if no_space else "writing failed")
    kept_s = (f"the checkpoints saved before ({', '.join(map(str, kept))}) "
              f"are kept" if kept else "no earlier checkpoint exists")
    super().__init__(
        f"{what} while saving checkpoint step {step} in {directory}: "
        f"{reason}; {kept_s}. An unfinished '{step}.orbax-checkpoint-tmp*' "
        f"folder may remain there.")


def _shorten(text: str, limit: int = _REASON_CHARS) -> str:
  """One line of at most ``limit`` characters: the start and the end
  (nested tensorstore errors put the root cause last)."""
  text = text.split(" [tensorstore_spec", 1)[0]
  text = " ".join(text.split())
  if len(text) <= limit:
    return text
  head = limit // 3
  return f"{text[:head]} ... {text[-(limit - head - 5):]}"


def _chain(exc: BaseException) -> list[BaseException]:
  out = []
  while exc is not None and exc not in out:
    out.append(exc)
    exc = exc.__cause__ or exc.__context__
  return out


def _reason(exc: BaseException) -> str:
  return _shorten(f"{type(exc).__name__}: {exc}")


_QUOTED = re.compile(r"""["'](/[^"']+)["']""")


def _file_in_error(exc: BaseException, step_dir: str) -> str | None:
  """The file under ``step_dir`` that an error (or its causes) names: the
  last file named, else the last folder (with a trailing ``/``)."""
  files, dirs = [], []
  for e in _chain(exc):
    for name in [getattr(e, "filename", None), *_QUOTED.findall(str(e))]:
      if not isinstance(name, str):
        continue
      rel = os.path.relpath(os.path.normpath(name), step_dir)
      if rel == "." or rel.startswith(".."):
        continue
      if name.endswith("/"):
        dirs.append(rel + "/")
      else:
        files.append(rel)
  found = files or dirs
  return found[-1] if found else None


def _no_space(exc: BaseException) -> bool:
  for e in _chain(exc):
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
      return True
    text = str(e)
    if ("No space left on device" in text or "ENOSPC" in text or
        "os_error_code='28'" in text):
      return True
  return False


def _key_name(k: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def _array_paths(tree: Any) -> list[tuple[str, ...]]:
  """Key paths (as orbax's metadata writes them) of a tree's arrays."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return [tuple(_key_name(k) for k in path) for path, x in leaves
          if hasattr(x, "shape") and hasattr(x, "dtype")]


def _read_json(step_dir: str, rel: str) -> Any:
  with open(os.path.join(step_dir, rel), "rb") as f:
    return json.loads(f.read().decode("utf-8"))


def _check_ocdbt(state_dir: str) -> None:
  """Opens the state's OCDBT database and lists its keys (reads the
  manifest and b-tree nodes, not the array chunks)."""
  import tensorstore as ts  # pylint: disable=import-outside-toplevel
  kv = ts.KvStore.open({"driver": "ocdbt",
                        "base": f"file://{state_dir}/"}).result()
  if not kv.list().result():
    raise ValueError("the OCDBT database lists no keys")


def check_step(step_dir: str, *, items: tuple[str, ...] = ("state", "meta"),
               array_paths: list[tuple[str, ...]] | None = None,
               committed: bool = False) -> tuple[str | None, str] | None:
  """Cheap structural check of one step folder (no array data is read).

  Checks that the ``items`` folders exist, that every JSON file parses
  (``meta/metadata``, ``data/*.json``, ``state/_METADATA``,
  ``state/array_metadatas/*``; with ``committed`` also orbax's
  ``_CHECKPOINT_METADATA``), that the OCDBT manifest and b-tree of
  ``state`` open, and, given ``array_paths``, that ``state/_METADATA``
  lists each of them.

  Args:
    step_dir: the step folder.
    items: the items the step must hold.
    array_paths: key paths of the saved tree's arrays, as strings (None:
      not compared).
    committed: also check orbax's commit metadata.

  Returns:
    None if it looks whole, else ``(file relative to step_dir or None,
    reason)`` of the first problem.
  """
  if not os.path.isdir(step_dir):
    return None, f"the step folder {step_dir} does not exist"
  for item in items:
    if not os.path.isdir(os.path.join(step_dir, item)):
      return f"{item}/", f"the '{item}' item is missing"
  jsons = []
  if committed:
    jsons.append("_CHECKPOINT_METADATA")
  if "meta" in items:
    jsons.append("meta/metadata")
  if "data" in items:
    data = sorted(os.path.relpath(p, step_dir) for p in
                  glob.glob(os.path.join(step_dir, "data", "*.json")))
    if not data:
      return "data/", "no iterator state file (data/*.json)"
    jsons += data
  if "state" in items:
    jsons.append("state/_METADATA")
    jsons += sorted(os.path.relpath(p, step_dir) for p in glob.glob(
        os.path.join(step_dir, "state", "array_metadatas", "*")))
  parsed = {}
  for rel in jsons:
    try:
      parsed[rel] = _read_json(step_dir, rel)
    except (OSError, ValueError) as e:  # JSON and Unicode errors included
      return rel, _reason(e)
  if "state" in items:
    meta = parsed["state/_METADATA"]
    tree = meta.get("tree_metadata") if isinstance(meta, dict) else None
    if not isinstance(tree, dict):
      return "state/_METADATA", "no 'tree_metadata' mapping"
    if array_paths is not None:
      stored = {tuple(str(k.get("key")) for k in v.get("key_metadata", ()))
                for v in tree.values() if isinstance(v, dict)}
      missing = [p for p in array_paths if p not in stored]
      if missing:
        return "state/_METADATA", (
            f"{len(missing)} saved array(s) not listed, e.g. "
            f"{'/'.join(missing[0])}")
    if meta.get("use_ocdbt", True):
      state_dir = os.path.join(step_dir, "state")
      if not os.path.isfile(os.path.join(state_dir, "manifest.ocdbt")):
        return "state/manifest.ocdbt", "missing"
      try:
        _check_ocdbt(state_dir)
      except Exception as e:  # pylint: disable=broad-except
        return _file_in_error(e, step_dir) or "state/", _reason(e)
  return None


def _mismatch(restored: Any, target: Any) -> str | None:
  """Where a restored tree differs from its target (structure, shapes,
  dtypes), or None."""
  if jax.tree.structure(restored) != jax.tree.structure(target):
    return (f"the restored tree's structure differs from the target's "
            f"({jax.tree.structure(restored).num_leaves} vs "
            f"{jax.tree.structure(target).num_leaves} leaves)")
  for (path, r), t in zip(jax.tree_util.tree_flatten_with_path(restored)[0],
                          jax.tree.leaves(target)):
    if not hasattr(t, "shape"):
      continue
    got = (tuple(getattr(r, "shape", ())), getattr(r, "dtype", type(r)))
    want = (tuple(t.shape), t.dtype)
    if got != want:
      return (f"{jax.tree_util.keystr(path)} restored as {got[1]}{list(got[0])}"
              f", the target is {want[1]}{list(want[0])}")
  return None


def abstract_like(tree: Any) -> Any:
  """``ShapeDtypeStruct``s (with the arrays' shardings) of a live pytree."""
  def one(x):
    if isinstance(x, jax.Array):
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    return x
  return jax.tree.map(one, tree)


class _Pending(NamedTuple):
  step: int
  items: tuple[str, ...]
  array_paths: list[tuple[str, ...]]


class Checkpointer:
  """Saves and restores ``(state, data iterator, meta)`` under a directory.

  What is guaranteed:

  * **Restore verifies.** ``restore()`` first checks the step folder's
    files (every item present, every JSON file parses, the OCDBT manifest
    and b-tree of ``state`` open) and then restores; a step whose check or
    restore raises (orbax, tensorstore, JSON, grain), or whose restored
    tree differs from the target in structure, shape or dtype, has failed.
  * **Fallback.** Without ``step=``, the newest step that restores is
    returned. Each newer step that failed is reported (a
    :class:`CheckpointWarning` naming the step, the file where known and
    the reason) and moved to ``<directory>/corrupt/<step>`` (``.1``,
    ``.2``, ... if taken): it is never deleted and never listed again. The
    data iterator is restored in place each time, so after a fallback it
    holds the restored step's position.
  * **Nothing restores.** If every step fails (or the one given by
    ``step=``), :class:`CheckpointCorruptError` names each step tried, the
    file where known and the reason, and nothing is moved (a wrong target,
    e.g. a changed config, must not empty the directory).
  * **Saves are checked.** When a save has finished (at once for
    synchronous saves; for asynchronous ones at the next ``save()``,
    ``wait()``, ``restore()`` or ``close()``), its step folder gets the
    same cheap check plus orbax's commit metadata and the saved tree's
    array names in ``state/_METADATA`` (array data is not re-read). A step
    that fails is reported and moved aside like a damaged one. (Single
    process runs only; multi-process runs check on restore.)
  * **Failed saves stop clearly.** An error while writing (surfaced by
    orbax at the same points) raises :class:`CheckpointSaveError`: "no
    space left on device while saving checkpoint step N in <directory>"
    for a full disk. The step is not committed, and the steps saved before
    are neither deleted nor changed (orbax removes old steps only after a
    save commits).

  Not guaranteed: array chunks whose bytes changed but still decode (OCDBT
  keeps no checksums of its own) restore as they are; a save found damaged
  after orbax committed it may already have made orbax delete an older
  step beyond ``keep``.

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
    self._async = async_save
    self._pending: _Pending | None = None
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

  @property
  def corrupt_directory(self) -> str:
    """Where damaged step folders are moved."""
    return os.path.join(self.directory, CORRUPT_DIR)

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._mngr.all_steps())

  def best_step(self) -> int | None:
    return self._mngr.best_step()

  def step_directory(self, step: int) -> str:
    return os.path.join(self.directory, str(int(step)))

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

    Raises:
      CheckpointSaveError: this save (synchronous) or the previous one
        (asynchronous, surfaced here) failed.
    """
    step = int(step)
    if not force and not self._mngr.should_save(step):
      return False
    self._finish_pending()
    items = {"state": ocp.args.StandardSave(state),
             "meta": ocp.args.JsonSave(dict(meta or {}))}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    metrics = {k: float(v) for k, v in (metrics or {}).items()}
    self._pending = _Pending(step, tuple(items), _array_paths(state))
    try:
      started = self._mngr.save(step, args=ocp.args.Composite(**items),
                                metrics=metrics, force=force)
    except Exception as e:  # pylint: disable=broad-except
      self._pending = None
      raise self._save_error(step, e) from e
    if not started:
      self._pending = None
    elif not self._async:
      self._finish_pending()
    return started

  def restore(self, target_state: Any, *, data_iterator: Any = None,
              step: int | None = None) -> tuple[Any, dict[str, Any]] | None:
    """Restores the newest checkpoint that restores (or a given one).

    Args:
      target_state: a live state (or abstract one with concrete shardings)
        giving structure, dtypes and shardings.
      data_iterator: a fresh grain iterator; its position is restored in
        place.
      step: the step to restore (default: the latest that restores; a
        given step is not replaced by another).

    Returns:
      ``(state, meta)`` or None when the directory holds no checkpoint.

    Raises:
      CheckpointCorruptError: no step tried restores.
    """
    self._finish_pending()
    if step is not None:
      steps = [int(step)]
    else:
      steps = sorted(self._mngr.all_steps(), reverse=True)
      if not steps:
        return None
    failures = []
    for s in steps:
      out = self._try_restore(s, target_state, data_iterator)
      if isinstance(out, CheckpointProblem):
        failures.append(out)
        continue
      for problem in failures:
        self._report_and_move(problem, f"restoring step {s} instead")
      return out
    raise CheckpointCorruptError(self.directory, failures)

  def wait(self) -> None:
    """Waits for an asynchronous save, then checks it.

    Raises:
      CheckpointSaveError: the save failed.
    """
    self._finish_pending()

  def close(self) -> None:
    try:
      self._finish_pending()
    finally:
      self._mngr.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  # ------------------------------------------------------------ internals

  def _try_restore(self, step: int, target_state: Any, data_iterator: Any
                   ) -> tuple[Any, dict[str, Any]] | CheckpointProblem:
    step_dir = self.step_directory(step)
    items = ("state", "meta") + (("data",) if data_iterator is not None
                                 else ())
    bad = check_step(step_dir, items=items)
    if bad is not None:
      return CheckpointProblem(step, *bad)
    args = {"state": ocp.args.StandardRestore(abstract_like(target_state)),
            "meta": ocp.args.JsonRestore()}
    if data_iterator is not None:
      args["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    try:
      out = self._mngr.restore(step, args=ocp.args.Composite(**args))
    except Exception as e:  # pylint: disable=broad-except
      return CheckpointProblem(step, _file_in_error(e, step_dir), _reason(e))
    diff = _mismatch(out["state"], target_state)
    if diff is not None:
      return CheckpointProblem(step, "state/", diff)
    meta = out["meta"]
    if meta is not None and not isinstance(meta, dict):
      return CheckpointProblem(step, "meta/metadata",
                               f"not a JSON object: {_shorten(repr(meta))}")
    return out["state"], dict(meta or {})

  def _finish_pending(self) -> None:
    """Joins the running save (raising its error) and checks it."""
    pending, self._pending = self._pending, None
    if pending is None:
      return
    try:
      self._mngr.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(pending.step, e) from e
    if jax.process_count() > 1:
      return  # hosts could disagree on the files' state; a move is collective
    step_dir = self.step_directory(pending.step)
    if not os.path.isdir(step_dir) and pending.step not in self.all_steps():
      return  # already removed by the preservation policy
    bad = check_step(step_dir, items=pending.items,
                     array_paths=pending.array_paths, committed=True)
    if bad is not None:
      self._report_and_move(CheckpointProblem(pending.step, *bad),
                            "it was just written and fails its check")

  def _save_error(self, step: int, exc: BaseException) -> CheckpointSaveError:
    tmp = glob.glob(os.path.join(self.directory,
                                 f"{step}.orbax-checkpoint-tmp*"))
    step_dir = tmp[0] if tmp else self.step_directory(step)
    file = _file_in_error(exc, step_dir)
    reason = _reason(exc)
    if file and file not in reason:
      reason = f"{file}: {reason}"
    try:
      self._mngr.reload()
      kept = [s for s in self.all_steps() if s != step]
    except Exception:  # pylint: disable=broad-except
      kept = []
    return CheckpointSaveError(step, self.directory, reason,
                               _no_space(exc), kept)

  def _report_and_move(self, problem: CheckpointProblem, then: str) -> None:
    """Warns about a damaged step and moves its folder aside."""
    src = self.step_directory(problem.step)
    dst = self._move_aside(src)
    msg = (f"checkpoint step {problem.step} in {self.directory} is damaged"
           f"{f' (file {problem.file})' if problem.file else ''}: "
           f"{problem.reason}; {then}. Moved it to {dst} (kept, not read "
           f"again).")
    print(f"WARNING: {msg}", file=sys.stderr, flush=True)
    warnings.warn(msg, CheckpointWarning, stacklevel=3)

  def _move_aside(self, src: str) -> str:
    """Renames a step folder into ``corrupt/``; returns the new path."""
    name = os.path.basename(src)
    dst = os.path.join(self.corrupt_directory, name)
    n = 0
    while os.path.exists(dst):
      n += 1
      dst = os.path.join(self.corrupt_directory, f"{name}.{n}")
    if jax.process_index() == 0 and os.path.exists(src):
      os.makedirs(self.corrupt_directory, exist_ok=True)
      os.rename(src, dst)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"entropy_rl_ckpt_move_{name}")
    self._mngr.reload()
    return dst
