r"""Runs a config's ``get_sweep()`` locally and collects one results table.

  python -m experiments.sweep --config=experiments/configs/steer.py:tiny \
      --workdir=runs/sweep_steer [--parallel=2] [--dry_run] \
      [--set=train.num_steps=100 ...]
  python -m experiments.sweep --config=experiments/configs/agent_epo.py:tiny \
      --workdir=runs/sweep_epo
  python -m experiments.sweep \
      --config=experiments/configs/classic_mdqn.py:tiny --workdir=runs/mdqn

Every family (RLVR, ``agent_*``, ``classic_*``) has a ``get_sweep()``.
Before anything runs, every point's overrides are applied to the locked
config (a misspelt key fails at once, with a did-you-mean).

Each sweep point (a dict of dotted config paths -> values) becomes one
``python -m experiments.main`` process with ``--config.<path>=<value>``
flags, in ``<workdir>/<point name>``; ``--parallel=N`` runs N processes at a
time (default 1: in sequence). A point whose ``summary.json`` says done is
skipped on a re-run (an interrupted one resumes from its checkpoint). At the
end ``results.md`` / ``results.json`` hold one row per point (its overrides
and final metrics) and ``compare.png`` the curves of all points.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import runpy
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

COLUMNS = ("eval/accuracy", "eval/pass@1", "eval/pass@4", "eval/entropy",
           "accuracy", "entropy", "entropy_change", "pred_entropy_change",
           # agent runs
           "success", "episode_return", "action_entropy", "tool_use_rate")


def load_sweep(config_arg: str) -> list[dict[str, Any]]:
  """``get_sweep(arg)`` of ``path[:arg]`` ([{}] when the file has none)."""
  path, _, arg = config_arg.partition(":")
  if not os.path.isfile(path):
    raise ValueError(f"--config: no config file {path!r}")
  module = runpy.run_path(path)  # the config file's globals
  if "get_sweep" not in module:
    return [{}]
  get_sweep = module["get_sweep"]
  points = get_sweep(arg) if arg else get_sweep()
  if not isinstance(points, (list, tuple)) or not all(
      isinstance(p, dict) for p in points):
    raise ValueError(f"{path}: get_sweep() must return a list of dicts")
  return list(points) or [{}]


def check_points(config_arg: str, points: Sequence[dict],
                 extra: Sequence[str] = ()) -> None:
  """Applies every point's overrides to the locked config, as
  ``experiments.main`` will (raises on an unknown key, with a
  did-you-mean)."""
  from experiments import main as main_lib  # pylint: disable=import-outside-toplevel
  for p in points:
    main_lib.load_config(config_arg, [
        f"--config.{k}={format_value(v)}" for k, v in p.items()] + [
            f"--config.{s}" for s in extra])


def format_value(v: Any) -> str:
  """A value as ``--config.x=`` expects it (tuples as Python literals)."""
  if isinstance(v, (tuple, list)):
    return "(" + ", ".join(repr(x) for x in v) + ("," if len(v) == 1 else "") \
        + ")"
  if isinstance(v, str):
    return v
  return repr(v)


def point_name(point: dict[str, Any]) -> str:
  """A directory name for a sweep point, e.g. ``seed=1,steer.w_min=0.8``."""
  if not point:
    return "default"
  parts = []
  for k, v in point.items():
    key = k.split(".", 1)[1] if k.count(".") > 1 else k
    parts.append(f"{key}={format_value(v)}")
  return re.sub(r"[^\w.,=+-]", "_", ",".join(parts))[:120]


def commands(config_arg: str, workdir: str, points: Sequence[dict],
             extra: Sequence[str] = (), python: str = sys.executable
             ) -> list[tuple[str, list[str]]]:
  """``[(name, argv)]``: one ``experiments.main`` command per point."""
  out = []
  for p in points:
    name = point_name(p)
    argv = [python, "-m", "experiments.main", f"--config={config_arg}",
            f"--workdir={os.path.join(workdir, name)}"]
    argv += [f"--config.{k}={format_value(v)}" for k, v in p.items()]
    argv += [f"--config.{s}" for s in extra]
    out.append((name, argv))
  return out


def is_done(run_dir: str) -> bool:
  """Whether ``run_dir/summary.json`` says the run finished (status done)."""
  try:
    with open(os.path.join(run_dir, "summary.json"), encoding="utf-8") as f:
      return json.load(f).get("status") == "done"
  except (OSError, ValueError, AttributeError):
    return False


def run_all(cmds: list[tuple[str, list[str]]], workdir: str,
            parallel: int = 1, *, labels: dict[str, str] | None = None,
            ready: Callable[[str, set[str], dict[str, int]], bool] | None
            = None, tag: str = "sweep") -> dict[str, int]:
  """Runs the commands, ``parallel`` at a time; returns exit codes.

  Each command runs in ``<workdir>/<name>`` (its output in ``log.txt``); a
  name whose ``summary.json`` says done is skipped (exit code 0), an
  unfinished one re-runs and resumes from its checkpoint. Progress lines:
  ``[3/12] <label> ... done in 41 s``.

  Args:
    cmds: ``[(name, argv)]``.
    workdir: the parent directory of the runs.
    parallel: processes at a time (1: in sequence).
    labels: display names (default: the names).
    ready: ``ready(name, running names, exit codes so far)`` says whether a
      pending command may start now (e.g. after another that prepares a
      shared directory); when nothing runs and nothing is ready, the first
      pending command starts anyway.
    tag: the prefix of the start / exit lines.
  """
  labels = labels or {}
  total = len(cmds)
  index = {n: i + 1 for i, (n, _) in enumerate(cmds)}
  finished = {n for n, _ in cmds if is_done(os.path.join(workdir, n))}
  for n, _ in cmds:
    if n in finished:
      print(f"[{index[n]}/{total}] {labels.get(n, n)} ... done before "
            "(skipped)", flush=True)
  pending = [(n, a) for n, a in cmds if n not in finished]
  codes = {n: 0 for n in finished}
  running: list[tuple[str, subprocess.Popen, Any, float]] = []
  while pending or running:
    while pending and len(running) < max(parallel, 1):
      names = {r[0] for r in running}
      pick = next((i for i, (n, _) in enumerate(pending)
                   if ready is None or ready(n, names, codes)), None)
      if pick is None and not running:
        pick = 0
      if pick is None:
        break
      name, argv = pending.pop(pick)
      os.makedirs(os.path.join(workdir, name), exist_ok=True)
      log = open(os.path.join(workdir, name, "log.txt"), "a",
                 encoding="utf-8")
      print(f"[{index[name]}/{total}] {labels.get(name, name)} ... started "
            f"[{tag}]", flush=True)
      running.append((name, subprocess.Popen(argv, stdout=log,
                                             stderr=subprocess.STDOUT), log,
                      time.time()))
    time.sleep(0.5)
    for item in list(running):
      name, proc, log, t0 = item
      if proc.poll() is not None:
        log.close()
        codes[name] = proc.returncode
        dt = time.time() - t0
        what = ("done" if proc.returncode == 0 else
                f"exited {proc.returncode} (see "
                f"{os.path.join(workdir, name, 'log.txt')})")
        print(f"[{index[name]}/{total}] {labels.get(name, name)} ... {what} "
              f"in {dt:.0f} s", flush=True)
        running.remove(item)
  return codes


def collect(workdir: str, names: Sequence[str],
            points: Sequence[dict]) -> list[dict[str, Any]]:
  """One row per point: its overrides and its runs' final metrics."""
  rows = []
  for name, p in zip(names, points):
    path = os.path.join(workdir, name, "summary.json")
    try:
      with open(path, encoding="utf-8") as f:
        summary = json.load(f)
    except (OSError, ValueError):
      rows.append({"point": name, **p, "status": "missing"})
      continue
    for run, r in summary.get("runs", {}).items():
      row = {"point": name, "run": run, **p, "status": r.get("status"),
             "step": r.get("step")}
      final = r.get("final", {})
      for k in COLUMNS:
        v = r.get("eval", {}).get(k, final.get(k))
        if v is not None:
          row[k] = v
      if not any(k in row for k in COLUMNS):  # classic runs: their curves
        row.update({k: v for k, v in final.items()
                    if isinstance(v, (int, float))})
      rows.append(row)
  return rows


def table(rows: list[dict[str, Any]]) -> str:
  """A markdown table of the rows."""
  if not rows:
    return "(no results)\n"
  cols = []
  for r in rows:
    cols += [k for k in r if k not in cols]
  fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
  lines = ["| " + " | ".join(cols) + " |",
           "|" + "|".join("---" for _ in cols) + "|"]
  for r in rows:
    lines.append("| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |")
  return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--config", required=True, help="config file[:size]")
  ap.add_argument("--workdir", required=True, help="sweep directory")
  ap.add_argument("--parallel", type=int, default=1,
                  help="processes at a time (1: in sequence)")
  ap.add_argument("--set", action="append", default=[],
                  help="extra override for every point, e.g. "
                  "train.num_steps=50 (repeatable)")
  ap.add_argument("--dry_run", action="store_true",
                  help="print the commands only")
  args = ap.parse_args(argv)
  points = load_sweep(args.config)
  try:
    check_points(args.config, points, args.set)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    msg = str(e).strip("'\"").replace("\\n", " ").replace('\\"', '"')
    msg = msg.replace("\\'", "'")
    print(f"error: bad sweep override: {msg}", file=sys.stderr)
    return 2
  cmds = commands(args.config, args.workdir, points, args.set)
  if args.dry_run:
    for _, a in cmds:
      print(" ".join(a))
    return 0
  os.makedirs(args.workdir, exist_ok=True)
  codes = run_all(cmds, args.workdir, args.parallel)
  rows = collect(args.workdir, [n for n, _ in cmds], points)
  md = table(rows)
  with open(os.path.join(args.workdir, "results.md"), "w",
            encoding="utf-8") as f:
    f.write(md)
  with open(os.path.join(args.workdir, "results.json"), "w",
            encoding="utf-8") as f:
    json.dump(rows, f, indent=1)
  print(md)
  try:
    from experiments import plot  # pylint: disable=import-outside-toplevel
    runs = {}
    for name, _ in cmds:
      d = os.path.join(args.workdir, name)
      sub = plot.find_runs(d) if os.path.isdir(d) else {}
      runs.update({(f"{name}/{k}" if len(sub) > 1 else name): v
                   for k, v in sub.items()})
    if runs:
      print(plot.plot_runs(runs, os.path.join(args.workdir, "compare.png")))
  except Exception as e:  # pylint: disable=broad-except
    print(f"plotting failed: {e!r}", file=sys.stderr)
  return 0 if all(c == 0 for c in codes.values()) else 1


if __name__ == "__main__":
  sys.exit(main())
