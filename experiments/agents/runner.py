"""Runs an ``agent`` config (``kind = "agent"``) for experiments/main.py.

Each run (the config, or each of its ``variants`` in ``<workdir>/<name>``)
writes ``metrics.jsonl``: one line per iteration with ``step``,
``seconds``, the seed means of every metric and their per-seed values
(``<metric>/seeds``). The summary of a run holds its status, step count,
``final`` (the means over the last 10% of the iterations) and the early vs
late numbers of the E3 study (``summarize``).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from typing import Any, Callable

import jax
import numpy as np

from entropy_rl import agent_builders
from entropy_rl import builders

FINAL = ("success", "success_with_tool", "tool_use_rate",
         "entropy_successful", "episode_return", "action_entropy",
         "command_entropy", "num_turns", "n_tool_calls", "answered")


def run(config: Any, workdir: str, *, log: Callable[..., Any] = print
        ) -> tuple[dict[str, Any], dict[str, str]]:
  """Trains ``config`` (each variant in ``workdir/<name>``).

  Returns:
    ``(summary, dirs)``: ``summary["runs"][name]`` per run (``"run"``
    without variants) and the run directories by plot label.
  """
  summary: dict[str, Any] = {"runs": {}}
  dirs = {}
  for name, cfg in builders.variants(config):
    run_dir = os.path.join(workdir, name) if name else workdir
    summary["runs"][name or "run"] = run_config(cfg, run_dir, log=log)
    dirs[name or cfg.name] = run_dir
  summary["status"] = "done"
  return summary, dirs


def run_config(config: Any, workdir: str, *,
               log: Callable[..., Any] = print) -> dict[str, Any]:
  """Trains one config; writes ``metrics.jsonl``; returns its summary."""
  os.makedirs(workdir, exist_ok=True)
  t0 = time.time()
  exp = agent_builders.build(config)
  states = exp.init()
  rows = []
  t_compile = None
  with open(os.path.join(workdir, "metrics.jsonl"), "w",
            encoding="utf-8") as f:
    for i in range(config.train.num_steps):
      states, m = exp.iterate(states)
      m = agent_builders.to_python(jax.device_get(m))
      if t_compile is None:
        t_compile = time.time() - t0
      row = {"step": i, "phase": "rl", "seconds": time.time() - t0}
      for k, v in m.items():
        a = np.asarray(v, np.float64)
        row[k] = _nan(np.nanmean, a, 0).tolist() if a.ndim > 1 else float(
            _nan(np.nanmean, a))
        row[k + "/seeds"] = v
      rows.append(row)
      f.write(json.dumps(row) + "\n")
      f.flush()
      if i % config.log_every == 0 or i == config.train.num_steps - 1:
        log(f"[{config.name}] step {i:4d} {row['seconds']:6.1f}s "
            f"success {row['success']:.3f} return "
            f"{row['episode_return']:.2f} H {row['action_entropy']:.3f} "
            f"H_cmd {row['command_entropy']:.3f} turns "
            f"{row['num_turns']:.2f} tools {row['n_tool_calls']:.2f}")
  out = summarize(rows, config, time.time() - t0, t_compile)
  n = len(rows)
  w = max(1, n // 10)
  out.update(status="done", step=n, eval={}, final={
      k: _window(rows, k, n - w, n) for k in FINAL if rows and k in rows[0]})
  return out


def read_rows(path: str) -> list[dict[str, Any]]:
  """The rows of a ``metrics.jsonl``."""
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def _window(rows, key, lo, hi):
  vals = [r[key] for r in rows[lo:hi] if not isinstance(r[key], list)]
  return float(_nan(np.nanmean, vals)) if vals else float("nan")


def summarize(rows, config, seconds, compile_seconds) -> dict[str, Any]:
  """Early vs late means, the entropy minimum and spikes, and the first
  iteration whose smoothed success reaches 0.75."""
  n = len(rows)
  w = max(1, n // 10)
  out = {"method": config.name, "order": list(config.regularizers.order),
         "steps": n, "seeds": config.num_seeds, "seconds": seconds,
         "first_iteration_seconds": compile_seconds}
  for k in FINAL:
    if rows and k in rows[0]:
      out[f"{k}_first10pct"] = _window(rows, k, 0, w)
      out[f"{k}_last10pct"] = _window(rows, k, n - w, n)
  if rows and "action_entropy" in rows[0]:
    ent = np.asarray([r["action_entropy"] for r in rows], np.float64)
    out["min_action_entropy"] = float(np.nanmin(ent))
    out["step_of_min_action_entropy"] = int(np.nanargmin(ent))
    # Spec E3's EPO check: iteration-to-iteration changes of the per-turn
    # entropy (std over iterations, mean over turns) and entropy spikes
    # (a rise of the mean action entropy by > 0.1 nats in one iteration).
    h = np.asarray([r["turn_entropy"] for r in rows], np.float64)  # [N, T]
    d = np.diff(h, axis=0)
    out["turn_entropy_change_std"] = float(_nan(np.nanmean, _nan(
        np.nanstd, d, 0)))
    out["entropy_spikes"] = int(np.sum(np.diff(ent) > 0.1))
  if rows and "success" in rows[0]:
    sm = smooth([r["success"] for r in rows], 10)
    hit = np.nonzero(sm >= 0.75)[0]
    out["first_step_success_75"] = int(hit[0]) if hit.size else -1
  return out


def smooth(x, w):
  """Trailing moving average of width ``w`` (padded with the first value)."""
  x = np.asarray(x, np.float64)
  if w <= 1 or len(x) < w:
    return x
  k = np.ones(w) / w
  pad = np.concatenate([np.full(w - 1, x[0]), x])
  return np.convolve(pad, k, mode="valid")


def _nan(fn, x, axis=None):
  """``fn`` (np.nanmean/nanmin/nanmax) without all-NaN warnings."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    return fn(x, axis)


def _fill(x):
  """Forward-fills NaNs (e.g. no episode with a tool call that step)."""
  x = np.asarray(x, np.float64).copy()
  last = np.nan
  for i, v in enumerate(x):
    if np.isnan(v):
      x[i] = last
    else:
      last = v
  return np.nan_to_num(x, nan=0.0)


def plot(dirs: dict[str, str], out_dir: str) -> list[str]:
  """``compare.png`` and ``turn_entropy.png`` from runs' metrics.jsonl."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  runs = {k: read_rows(os.path.join(d, "metrics.jsonl"))
          for k, d in dirs.items()}
  panels = (("success", "success rate"),
            ("success_with_tool", "success | ≥1 tool call"),
            ("tool_use_rate", "episodes with a tool call"),
            ("action_entropy", "action entropy (nats/token)"),
            ("command_entropy", "command-token entropy (nats)"),
            ("num_turns", "turns per episode"))
  first = next(iter(runs.values()))
  panels = tuple(p for p in panels if first and p[0] + "/seeds" in first[0])
  cols = 3
  nrows = -(-len(panels) // cols)
  fig, axes = plt.subplots(nrows, cols, figsize=(4.4 * cols, 3.3 * nrows),
                           squeeze=False, constrained_layout=True)
  axes = axes.ravel()
  for ax in axes[len(panels):]:
    ax.axis("off")
  for name, rows in runs.items():
    steps = [r["step"] for r in rows]
    w = max(1, len(rows) // 20)
    for ax, (k, title) in zip(axes, panels):
      seeds = np.asarray([r[k + "/seeds"] for r in rows], np.float64)
      mean = smooth(_fill(_nan(np.nanmean, seeds, 1)), w)
      line, = ax.plot(steps, mean, label=name)
      if seeds.shape[1] > 1:
        lo = smooth(_fill(_nan(np.nanmin, seeds, 1)), w)
        hi = smooth(_fill(_nan(np.nanmax, seeds, 1)), w)
        ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.15)
      ax.set_title(title)
      ax.set_xlabel("iteration")
  axes[0].legend()
  p1 = os.path.join(out_dir, "compare.png")
  fig.savefig(p1, dpi=80)
  plt.close(fig)

  fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs) + 1, 3.4),
                           squeeze=False, constrained_layout=True)
  vmax = max(np.nanmax(np.asarray([r["turn_entropy"] for r in rows],
                                  np.float64)) for rows in runs.values())
  for ax, (name, rows) in zip(axes[0], runs.items()):
    h = np.asarray([r["turn_entropy"] for r in rows], np.float64)  # [N, T]
    im = ax.imshow(h.T, aspect="auto", origin="lower", vmin=0.0, vmax=vmax,
                   cmap="viridis", interpolation="nearest")
    ax.set_title(f"{name}: action entropy per turn")
    ax.set_xlabel("iteration")
    ax.set_ylabel("turn")
  fig.colorbar(im, ax=axes[0].tolist(), shrink=0.9, label="nats/token")
  p2 = os.path.join(out_dir, "turn_entropy.png")
  fig.savefig(p2, dpi=80)
  plt.close(fig)
  return [p1, p2]
