"""Metrics out of the loop: JSONL + TensorBoard, a progress line, pass@k.

Every logged step appends one JSON object ``{"step": s, "phase": ..., k: v}``
(one whole line) to ``<workdir>/metrics.jsonl`` and writes the same scalars
to TensorBoard (tensorboardX) under ``<workdir>/tb``. ``plot.py`` and the
sweep table read the JSONL.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import numpy as np

# Keys the progress line shows, in order, when present.
PROGRESS_KEYS = ("reward", "accuracy", "eval/accuracy", "entropy",
                 "entropy_change", "sft_nll", "response_length", "step_time")


def to_floats(metrics: Mapping[str, Any]) -> dict[str, float]:
  """Device scalars (or size-1 arrays) to Python floats; one device fetch."""
  host = jax.device_get(dict(metrics))
  out = {}
  for k, v in host.items():
    a = np.asarray(v)
    if a.size == 1:
      out[k] = float(a.reshape(()))
    elif a.ndim == 1:  # per-seed values: mean, plus one key per seed
      out[k] = float(np.nanmean(a))
      for i, x in enumerate(a):
        out[f"{k}@seed{i}"] = float(x)
  return out


class MetricWriter:
  """Appends metrics to JSONL and TensorBoard.

  Each record is one ``os.write`` of a whole line to a file opened for
  appending, so a killed process leaves at most one torn last line, which
  :func:`read_jsonl` skips; a writer opened on a file whose last line is torn
  starts a new line first. A resumed run first rewrites the file to the
  records it keeps (:func:`rewrite_jsonl`). :meth:`sync` puts the records on
  disk (the loop calls it before each checkpoint). TensorBoard event files
  are appended to as they are: after a resume they may hold a step twice.

  Args:
    workdir: the run directory.
    tensorboard: also write TensorBoard event files (tensorboardX).
    filename: the JSONL file name.
  """

  def __init__(self, workdir: str, *, tensorboard: bool = True,
               filename: str = "metrics.jsonl"):
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, filename)
    self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                       0o644)
    if not _ends_a_line(self.path):
      self._append("\n")
    self._tb = None
    if tensorboard:
      try:
        import tensorboardX  # pylint: disable=import-outside-toplevel
        self._tb = tensorboardX.SummaryWriter(os.path.join(workdir, "tb"))
      except ImportError:  # optional at run time
        self._tb = None

  def write(self, step: int, metrics: Mapping[str, Any],
            phase: str = "rl") -> dict[str, float]:
    """Writes one record; returns the float metrics."""
    values = to_floats(metrics)
    record = {"step": int(step), "phase": phase, **{
        k: (v if math.isfinite(v) else None) for k, v in values.items()}}
    self._append(json.dumps(record) + "\n")
    if self._tb is not None:
      for k, v in values.items():
        if math.isfinite(v):
          self._tb.add_scalar(f"{phase}/{k}", v, int(step))
    return values

  def _append(self, data: str) -> None:
    """One write of ``data`` (a whole line) at the end of the file."""
    buf = data.encode("utf-8")
    while buf:  # a regular file takes it in one call; loop on a short one
      buf = buf[os.write(self._fd, buf):]

  def sync(self) -> None:
    """Flushes TensorBoard and puts the JSONL records on disk (fsync)."""
    if self._tb is not None:
      self._tb.flush()
    os.fsync(self._fd)

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._fd >= 0:
      os.close(self._fd)
      self._fd = -1
    if self._tb is not None:
      self._tb.close()


def _ends_a_line(path: str) -> bool:
  """Whether ``path`` is empty or ends with a newline."""
  with open(path, "rb") as f:
    f.seek(0, os.SEEK_END)
    if f.tell() == 0:
      return True
    f.seek(-1, os.SEEK_END)
    return f.read(1) == b"\n"


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """The records of a metrics file: its lines that are whole JSON objects
  (a torn line, e.g. the last one of a killed run, is skipped)."""
  out = []
  if not os.path.exists(path):
    return out
  with open(path, encoding="utf-8", errors="replace") as f:
    for line in f:
      line = line.strip()
      if not line:
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        continue
      if isinstance(record, dict):
        out.append(record)
  return out


def rewrite_jsonl(path: str, keep: Callable[[dict[str, Any]], bool]
                  ) -> list[dict[str, Any]]:
  """Rewrites ``path`` to its records for which ``keep(record)`` holds.

  The file becomes exactly those well-formed records, one per line (a torn
  line is dropped). It is replaced atomically: the records go to
  ``<path>.tmp``, which is fsynced and renamed over ``path`` (then the
  directory is fsynced), so a kill at any point leaves either the old file
  or the new one. A missing file stays missing.

  Returns:
    The records kept.
  """
  if not os.path.exists(path):
    return []
  records = [r for r in read_jsonl(path) if keep(r)]
  tmp = path + ".tmp"
  try:
    with open(tmp, "w", encoding="utf-8") as f:
      f.writelines(json.dumps(r) + "\n" for r in records)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  dir_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
  try:
    os.fsync(dir_fd)
  finally:
    os.close(dir_fd)
  return records


class Progress:
  """A one-line progress display with the key numbers.

  On a terminal the line is rewritten in place (``\\r``); otherwise one line
  is printed every ``every`` updates.
  """

  def __init__(self, total: int, *, desc: str = "", every: int = 10,
               stream=None, keys: Sequence[str] = PROGRESS_KEYS):
    self.total, self.desc, self.every, self.keys = total, desc, every, keys
    self.stream = sys.stderr if stream is None else stream
    self.tty = getattr(self.stream, "isatty", lambda: False)()
    self.t0 = time.time()
    self._n = 0

  def line(self, step: int, metrics: Mapping[str, float]) -> str:
    frac = step / max(self.total, 1)
    bar = "#" * int(20 * frac) + "." * (20 - int(20 * frac))
    el = time.time() - self.t0
    eta = el / max(frac, 1e-9) - el if frac > 0 else 0.0
    shown = " ".join(f"{k.split('/')[-1] if k != 'eval/accuracy' else 'eval'}"
                     f"={metrics[k]:.3g}" for k in self.keys if k in metrics)
    return (f"{self.desc} [{bar}] {step}/{self.total} {el:.0f}s "
            f"eta {eta:.0f}s {shown}")

  def update(self, step: int, metrics: Mapping[str, float]) -> None:
    self._n += 1
    text = self.line(step, metrics)
    if self.tty:
      self.stream.write("\r" + text[:160].ljust(160))
      self.stream.flush()
    elif self._n % self.every == 0 or step >= self.total:
      self.stream.write(text + "\n")
      self.stream.flush()

  def close(self) -> None:
    if self.tty:
      self.stream.write("\n")
      self.stream.flush()


def pass_at_k(n: int, c: int, k: int) -> float:
  """Unbiased pass@k from n samples with c correct (Chen et al. 2021,
  https://arxiv.org/abs/2107.03374): ``1 − C(n−c, k) / C(n, k)``."""
  if k > n:
    raise ValueError(f"pass@{k} needs at least {k} samples, got n={n}")
  if n - c < k:
    return 1.0
  return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_pass_at_k(correct: np.ndarray, ks: Iterable[int]) -> dict[str, float]:
  """Mean pass@k over prompts from a [prompts, n] boolean matrix."""
  correct = np.asarray(correct, bool)
  n = correct.shape[1]
  cs = correct.sum(1)
  return {f"pass@{k}": float(np.mean([pass_at_k(n, int(c), k) for c in cs]))
          for k in ks if k <= n}
