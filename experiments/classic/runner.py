"""Runs a ``classic`` config (``kind = "classic"``) for experiments/main.py.

The algorithm runs once per run, ``num_seeds`` seeds vmapped
(:func:`entropy_rl.classic_builders.build`). Each run (the config, or each
of its ``variants`` in ``<workdir>/<name>``) writes ``metrics.jsonl``: one
line per curve index (at most about 1,000 lines, evenly strided) with the
seed mean of every curve and its per-seed values (``<curve>/seeds``). The
summary of a run holds ``final``: each curve's mean over its last 10%
(seeds and trailing axes averaged). The plot (``curves.png``, or
``compare.png`` with variants) shows each curve's mean ± 95% CI over
seeds; a config's optional ``hlines`` ({curve: y}) draws dashed reference
lines (e.g. DORAEMON's success threshold α).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from typing import Any, Callable

import jax
import numpy as np

from entropy_rl import builders
from entropy_rl import classic_builders

MAX_ROWS = 1000


def run(config: Any, workdir: str, *, log: Callable[..., Any] = print
        ) -> tuple[dict[str, Any], dict[str, str]]:
  """Runs ``config`` (each variant in ``workdir/<name>``).

  Returns:
    ``(summary, dirs)``: ``summary["runs"][name]`` per run (``"run"``
    without variants) and the run directories by name.
  """
  summary: dict[str, Any] = {"runs": {}}
  dirs = {}
  for name, cfg in builders.variants(config):
    run_dir = os.path.join(workdir, name) if name else workdir
    summary["runs"][name or "run"] = run_config(cfg, run_dir, log=log)
    dirs[name or "run"] = run_dir
  summary["status"] = "done"
  return summary, dirs


def _mean(v: np.ndarray) -> float:
  """``nanmean``, NaN without a warning when every value is NaN (e.g. no
  episode has ended yet)."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    return float(np.nanmean(v))


def _seeds_by_time(v: np.ndarray) -> np.ndarray:
  """A curve [seeds, T, ...] as [seeds, T] (trailing axes averaged)."""
  v = np.asarray(v, np.float64)
  return v.reshape(v.shape[0], v.shape[1], -1).mean(-1)


def run_config(config: Any, workdir: str, *,
               log: Callable[..., Any] = print) -> dict[str, Any]:
  """Runs one config; writes ``metrics.jsonl``; returns its summary."""
  os.makedirs(workdir, exist_ok=True)
  t0 = time.time()
  curves = classic_builders.build(config)(classic_builders.seed_keys(config))
  curves = {k: _seeds_by_time(v)
            for k, v in jax.tree.map(np.asarray, curves).items()}
  seconds = time.time() - t0
  length = max(v.shape[1] for v in curves.values())
  stride = max(1, -(-length // MAX_ROWS))
  with open(os.path.join(workdir, "metrics.jsonl"), "w",
            encoding="utf-8") as f:
    for t in range(0, length, stride):
      row: dict[str, Any] = {"step": t, "phase": "rl"}
      for k, v in curves.items():
        if t < v.shape[1]:
          row[k] = _mean(v[:, t])
          row[k + "/seeds"] = v[:, t].tolist()
      f.write(json.dumps(row) + "\n")
  final = {k: _mean(v[:, -max(1, v.shape[1] // 10):])
           for k, v in curves.items()}
  np.savez(os.path.join(workdir, "curves.npz"), **curves)
  log(f"[{config.algorithm.kind}] {length} steps x {config.num_seeds} seeds "
      f"in {seconds:.1f}s: " + " ".join(f"{k}={v:.4g}"
                                         for k, v in final.items()))
  return {"status": "done", "step": length, "seconds": seconds,
          "seeds": config.num_seeds, "eval": {}, "final": final}


def plot(dirs: dict[str, str], out: str, *,
         hlines: dict[str, float] | None = None, title: str = "") -> str:
  """Each curve's mean ± 95% CI over seeds, one panel per curve, every run
  of ``dirs`` (name -> run directory with ``curves.npz``) in each panel."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  runs = {}
  for name, d in dirs.items():
    with np.load(os.path.join(d, "curves.npz")) as z:
      runs[name] = {k: z[k] for k in z.files}
  keys = []
  for c in runs.values():
    keys += [k for k in c if k not in keys]
  fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.5),
                           squeeze=False)
  hlines = hlines or {}
  for ax, k in zip(axes[0], keys):
    if k in hlines:
      ax.axhline(hlines[k], color="k", ls="--", lw=0.8)
    for name, c in runs.items():
      if k not in c:
        continue
      v = c[k]
      m = np.nanmean(v, 0)
      ci = 1.96 * np.nanstd(v, 0) / np.sqrt(max(v.shape[0], 1))
      x = np.arange(v.shape[1])
      ax.plot(x, m, label=name if len(runs) > 1 else None)
      ax.fill_between(x, m - ci, m + ci, alpha=0.25)
    ax.set_title(k, fontsize=9)
  if len(runs) > 1:
    axes[0][0].legend(fontsize=8)
  seeds = next(iter(next(iter(runs.values())).values())).shape[0]
  fig.suptitle(f"{title}: mean ± 95% CI over {seeds} seeds")
  fig.tight_layout()
  fig.savefig(out, dpi=100)
  plt.close(fig)
  return out
