r"""Runs one experiment config: SFT warm-up, then RL (side-by-side variants).

  python -m experiments.main --config=experiments/configs/steer.py:tiny \
      --workdir=runs/steer --config.train.num_steps=100

Every config field can be overridden with ``--config.<path>=<value>``; the
config is locked, so a misspelt key fails with a did-you-mean message.
Re-running with the same ``--workdir`` resumes from the last checkpoint.
SIGTERM / SIGINT save a checkpoint and exit cleanly.

Outputs in the workdir: ``config.json``, ``metrics.jsonl`` and ``tb/``
(TensorBoard) per run, ``checkpoints/``, ``summary.json`` and PNG curves
(``curves.png``; ``compare.png`` when the config has variants).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (path[:size]).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory.")
_PLOT = flags.DEFINE_bool("plot", True, "Write PNG curves at the end.")


def run_experiment(config: Any, workdir: str) -> dict[str, Any]:
  """Runs ``config`` (and its variants) in ``workdir``; returns a summary.

  Without ``config.variants``: SFT in ``workdir/sft`` then RL in
  ``workdir``. With variants: one shared SFT in ``workdir/sft``, then each
  variant's RL in ``workdir/<name>``, and ``compare.png``.
  """
  # Imported here so that `--help` and config errors stay fast.
  from entropy_rl import builders  # pylint: disable=import-outside-toplevel
  from entropy_rl.training import loop  # pylint: disable=import-outside-toplevel
  from experiments import plot  # pylint: disable=import-outside-toplevel

  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
    f.write(config.to_json_best_effort(indent=1))
  t0 = time.time()
  runs = builders.variants(config)
  base = builders.build_experiment(runs[0][1])
  print(loop.describe(base), flush=True)
  params = loop.run_sft(base, os.path.join(workdir, "sft"))
  summary: dict[str, Any] = {"runs": {}}
  dirs = {}
  for name, cfg in runs:
    exp = base if cfg is runs[0][1] else builders.build_experiment(
        cfg, reuse=base)
    run_dir = os.path.join(workdir, name) if name else workdir
    if name:
      print(f"--- {name}: {loop.describe(exp)}", flush=True)
    result = loop.run_rl(exp, run_dir, params)
    summary["runs"][name or "run"] = result
    dirs[name or "run"] = run_dir
    if result["status"] != "done":
      summary["status"] = result["status"]
      break
  summary.setdefault("status", "done")
  summary["seconds"] = time.time() - t0
  with open(os.path.join(workdir, "summary.json"), "w",
            encoding="utf-8") as f:
    json.dump(summary, f, indent=1, default=float)
  if _PLOT.present and not _PLOT.value:
    return summary
  try:
    out = os.path.join(workdir, "compare.png" if len(dirs) > 1
                       else "curves.png")
    plot.plot_runs(dirs, out, sft_dir=os.path.join(workdir, "sft"))
    summary["plot"] = out
  except Exception as e:  # pylint: disable=broad-except
    print(f"plotting failed: {e!r}", file=sys.stderr)
  return summary


def print_summary(summary: dict[str, Any]) -> None:
  keys = ("eval/accuracy", "eval/pass@1", "eval/pass@4", "eval/entropy")
  train = ("accuracy", "entropy", "entropy_change")
  print(f"status {summary['status']} in {summary['seconds']:.0f}s")
  for name, r in summary["runs"].items():
    ev = " ".join(f"{k}={r['eval'][k]:.3f}" for k in keys if k in r["eval"])
    tr = " ".join(f"{k}={r['final'][k]:.3f}" for k in train
                  if k in r.get("final", {}))
    print(f"  {name}: step {r['step']} {ev} | train {tr}")
  if "plot" in summary:
    print(f"  curves: {summary['plot']}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  if _WORKDIR.value is None:
    raise app.UsageError("--workdir is required")
  logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes
  config = _CONFIG.value
  if config.distributed.initialize:
    from entropy_rl import parallel  # pylint: disable=import-outside-toplevel
    parallel.initialize_distributed(
        config.distributed.coordinator_address or None,
        config.distributed.num_processes or None,
        config.distributed.process_id if config.distributed.num_processes
        else None, force=True)
  from entropy_rl.training import loop  # pylint: disable=import-outside-toplevel
  try:
    summary = run_experiment(config, _WORKDIR.value)
  except loop.Preempted as e:
    print(str(e), flush=True)
    return 0
  print_summary(summary)
  return 0


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing that turns a bad ``--config.x`` into a clean error
  (with ml_collections' did-you-mean) instead of a traceback."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    msg = str(e).strip("'\"").replace("\\n", " ").replace('\\"', '"')
    print(f"error: bad config override: {msg}", file=sys.stderr)
    sys.exit(2)
  except flags.Error as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
