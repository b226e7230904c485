r"""Multi-turn agent experiments: the default GRPO vs EPO vs EMPG comparison.

Default (no ``--config``): the E3 token game (sparse terminal reward
10·success, 12 turns) with a tiny decoder trained from scratch by GRPO,
EPO and EMPG (``experiments/configs/agent_{grpo,epo,empg}.py:tiny``), each
with the same seeds, steps and initial parameters::

  .venv/bin/python experiments/agents/run.py --workdir runs/agents

One config (any ``agent_*`` file and size)::

  .venv/bin/python experiments/agents/run.py \
      --config experiments/configs/agent_spear.py:calc --workdir runs/spear

Outputs: ``<workdir>/<method>/metrics.jsonl`` (one line per iteration:
seed means and per-seed values), ``summary.json`` (final and early
numbers, timings) and PNG plots: ``compare.png`` (success rate, action and
command-token entropy, answer turn) and ``turn_entropy.png`` (per-turn
action entropy over training, one panel per method).

Result (``experiments/agents/out/seed{0,1}``; 1 seed each, 250 iterations
of 64 episodes; 6.5 and 8 min wall on a shared 2-core CPU). Guessing the
hidden bit wins half the time; reading the tool and copying wins ~0.9.
GRPO's entropy collapses early (seed 0: 2.7 -> 1.4 nats by iteration 80,
tool use 46% -> 1-5% until iteration ~170, answering at turn 0; seed 1:
down to 0.10 nats, tool use 0%, stuck at the 0.5 guessing level). Smoothed
success reaches 0.75 at iteration 218 / never for GRPO, 141 / never for
EPO (which keeps 0.9-1.6 nats at least), 241 / 228 for EMPG (at least
0.6-1.5 nats). One or two seeds: a trend, not a benchmark.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

import jax  # pylint: disable=g-import-not-at-top
import numpy as np

from experiments.agents import build as build_lib

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")
DEFAULT_METHODS = ("grpo", "epo", "empg")


def load_config(spec: str):
  """``path[:size]`` -> (ConfigDict, name)."""
  path, _, arg = spec.partition(":")
  mod_spec = importlib.util.spec_from_file_location("agent_cfg", path)
  mod = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(mod)
  name = os.path.basename(path)[:-3]
  return mod.get_config(arg or None), name


def override(config, item: str) -> None:
  """Applies ``path=value`` (a Python literal, else a string)."""
  path, _, value = item.partition("=")
  try:
    value = ast.literal_eval(value)
  except (ValueError, SyntaxError):
    pass
  *parents, leaf = path.split(".")
  node = config
  for p in parents:
    node = node[p]
  node[leaf] = value


def run_config(config, workdir: str, *, num_steps: int | None = None,
               log=print) -> dict:
  """Trains one config; writes ``metrics.jsonl``; returns a summary."""
  os.makedirs(workdir, exist_ok=True)
  if num_steps is not None:
    config.train.num_steps = num_steps
  with open(os.path.join(workdir, "config.json"), "w",
            encoding="utf-8") as f:
    f.write(config.to_json_best_effort(indent=1))
  t0 = time.time()
  exp = build_lib.build(config)
  states = exp.init()
  path = os.path.join(workdir, "metrics.jsonl")
  rows = []
  t_compile = None
  with open(path, "w", encoding="utf-8") as f:
    for i in range(config.train.num_steps):
      states, m = exp.iterate(states)
      m = build_lib.to_python(jax.device_get(m))
      if t_compile is None:
        t_compile = time.time() - t0
      row = {"step": i, "seconds": time.time() - t0}
      for k, v in m.items():
        a = np.asarray(v, np.float64)
        row[k] = _nan(np.nanmean, a, 0).tolist() if a.ndim > 1 else float(
            _nan(np.nanmean, a))
        row[k + "/seeds"] = v
      rows.append(row)
      f.write(json.dumps(row) + "\n")
      f.flush()
      if i % config.log_every == 0 or i == config.train.num_steps - 1:
        log(f"[{config.method}] step {i:4d} {row['seconds']:6.1f}s "
            f"success {row['success']:.3f} return "
            f"{row['episode_return']:.2f} H {row['action_entropy']:.3f} "
            f"H_cmd {row['command_entropy']:.3f} turns "
            f"{row['num_turns']:.2f} tools {row['n_tool_calls']:.2f}")
  total = time.time() - t0
  return summarize(rows, config, total, t_compile)


def _window(rows, key, lo, hi):
  vals = [r[key] for r in rows[lo:hi] if not isinstance(r[key], list)]
  return float(_nan(np.nanmean, vals)) if vals else float("nan")


def summarize(rows, config, seconds, compile_seconds) -> dict:
  n = len(rows)
  w = max(1, n // 10)
  keys = ("success", "success_with_tool", "tool_use_rate",
          "entropy_successful",
          "episode_return", "action_entropy", "command_entropy",
          "num_turns", "n_tool_calls", "answered")
  out = {"method": config.method, "steps": n, "seeds": config.num_seeds,
         "seconds": seconds, "first_iteration_seconds": compile_seconds}
  for k in keys:
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
    sm = _smooth([r["success"] for r in rows], 10)
    hit = np.nonzero(sm >= 0.75)[0]
    out["first_step_success_75"] = int(hit[0]) if hit.size else -1
  return out


def _smooth(x, w):
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


def read_rows(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def plot(dirs: dict[str, str], out_dir: str) -> list[str]:
  """``compare.png`` and ``turn_entropy.png`` from runs' metrics.jsonl."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

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
      mean = _smooth(_fill(_nan(np.nanmean, seeds, 1)), w)
      line, = ax.plot(steps, mean, label=name)
      if seeds.shape[1] > 1:
        lo = _smooth(_fill(_nan(np.nanmin, seeds, 1)), w)
        hi = _smooth(_fill(_nan(np.nanmax, seeds, 1)), w)
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


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--config", default=None,
                  help="path[:size] of one agent_* config (default: the "
                  "GRPO/EPO/EMPG comparison on the token game)")
  ap.add_argument("--workdir", default="runs/agents")
  ap.add_argument("--steps", type=int, default=None)
  ap.add_argument("--seeds", type=int, default=None)
  ap.add_argument("--methods", default=",".join(DEFAULT_METHODS))
  ap.add_argument("--size", default="tiny")
  ap.add_argument("--set", action="append", default=[],
                  help="config override path=value (repeatable), e.g. "
                  "--set env.token_game.max_turns=20")
  args = ap.parse_args(argv)
  os.makedirs(args.workdir, exist_ok=True)
  if args.config:
    specs = [args.config]
  else:
    specs = [os.path.join(CONFIGS, f"agent_{m}.py:{args.size}")
             for m in args.methods.split(",")]
  t0 = time.time()
  summary, dirs = {"runs": {}}, {}
  for spec in specs:
    config, name = load_config(spec)
    if args.seeds is not None:
      config.num_seeds = args.seeds
    for item in args.set:
      override(config, item)
    method = config.method
    run_dir = os.path.join(args.workdir, method)
    summary["runs"][method] = run_config(config, run_dir,
                                         num_steps=args.steps)
    dirs[method] = run_dir
    print(json.dumps(summary["runs"][method]), flush=True)
  summary["seconds"] = time.time() - t0
  summary["plots"] = plot(dirs, args.workdir)
  with open(os.path.join(args.workdir, "summary.json"), "w",
            encoding="utf-8") as f:
    json.dump(summary, f, indent=1)
  print(f"done in {summary['seconds']:.0f}s; plots: {summary['plots']}",
        flush=True)
  return summary


if __name__ == "__main__":
  main()
