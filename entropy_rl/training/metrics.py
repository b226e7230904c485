"""Metrics out of the loop: JSONL + TensorBoard, a progress line, pass@k.

Every logged step appends one JSON object ``{"step": s, "phase": ..., k: v}``
to ``<workdir>/metrics.jsonl`` and writes the same scalars to TensorBoard
(tensorboardX) under ``<workdir>/tb``. ``plot.py`` and the sweep table read
the JSONL.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, Iterable, Mapping, Sequence

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

  Args:
    workdir: the run directory.
    tensorboard: also write TensorBoard event files (tensorboardX).
    filename: the JSONL file name.
  """

  def __init__(self, workdir: str, *, tensorboard: bool = True,
               filename: str = "metrics.jsonl"):
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, filename)
    self._f = open(self.path, "a", encoding="utf-8")
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
    self._f.write(json.dumps(record) + "\n")
    self._f.flush()
    if self._tb is not None:
      for k, v in values.items():
        if math.isfinite(v):
          self._tb.add_scalar(f"{phase}/{k}", v, int(step))
    return values

  def flush(self) -> None:
    self._f.flush()
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    self._f.close()
    if self._tb is not None:
      self._tb.close()


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """The records of a metrics file (a truncated last line is skipped)."""
  out = []
  if not os.path.exists(path):
    return out
  with open(path, encoding="utf-8") as f:
    for line in f:
      line = line.strip()
      if not line:
        continue
      try:
        out.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return out


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
