r"""Runs one experiment config: RLVR, multi-turn agent or classic RL.

  python -m experiments.main --config=experiments/configs/steer.py:tiny \
      --workdir=runs/steer --config.train.num_steps=100
  python -m experiments.main --config=experiments/configs/agent_epo.py:tiny \
      --workdir=runs/agent_epo --config.regularizers.epo.entropy_coef=0.01
  python -m experiments.main --config=experiments/configs/classic_sac.py:tiny \
      --workdir=runs/classic_sac --config.num_seeds=4

An RLVR method config's argument is ``<size>[,paper]``: ``:paper`` (or
``:smollm2,paper``) restores the paper's hyperparameters where the toy
defaults differ; each config's docstring cites its source and says which
values differ and why (``experiments/configs/base.py``).

``config.kind`` picks the runner: ``"rlvr"`` (the default; SFT warm-up,
then RL, ``entropy_rl.builders``), ``"agent"`` (multi-turn agents,
``entropy_rl.agent_builders``, ``experiments/agents/runner.py``) or
``"classic"`` (seed-vmapped classic RL, ``entropy_rl.classic_builders``,
``experiments/classic/runner.py``). Every kind runs its ``variants`` side by
side (each in ``<workdir>/<name>``) and is swept by ``experiments.sweep``.

Every config field can be overridden with ``--config.<path>=<value>``; the
config is locked, so a misspelt key fails with a did-you-mean message, and
a negative or zero size names its key (``config.train.num_steps must be
>= 1, got -1``).

Preemption (RLVR): re-running with the same ``--workdir`` resumes from the
last checkpoint. SIGTERM / SIGINT during the SFT or RL steps finish the
current step, save a checkpoint, write ``summary.json`` with status
``"preempted"`` and exit with status 143 (``EXIT_PREEMPTED``: "preempted,
checkpoint saved, re-run to resume"); before the first step (building,
compiling) a signal ends the process at once. Agent and classic runs keep
no checkpoints: a signal ends them at once (no ``summary.json``) and a
re-run starts over.

Exit status: 0 finished; 143 preempted (RLVR, re-run to resume); 2 a bad
flag or config override; 1 any other error.

Outputs in the workdir: ``config.json``, ``summary.json`` and, per run,
``metrics.jsonl`` (RLVR: also ``tb/`` (TensorBoard) and ``checkpoints/``)
and PNG curves (``curves.png``, or ``compare.png`` when the config has
variants; agents: ``compare.png`` and ``turn_entropy.png``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Sequence

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

# The program's flags, registered by define_flags() when this module runs as
# a program: importing it for run_experiment / load_config registers no
# global flag (another entry point, e.g. experiments.preflight, may define
# its own --config in the same process).
_CONFIG = _WORKDIR = _PLOT = None


def define_flags() -> None:
  """Registers ``--config``, ``--workdir`` and ``--plot`` on absl's FLAGS."""
  global _CONFIG, _WORKDIR, _PLOT
  _CONFIG = config_flags.DEFINE_config_file(
      "config", None, "Experiment config file (path[:size]).",
      lock_config=True)
  _WORKDIR = flags.DEFINE_string("workdir", None, "Run directory.")
  _PLOT = flags.DEFINE_bool("plot", True, "Write PNG curves at the end.")

KINDS = ("rlvr", "agent", "classic")
# The exit status of a run a signal stopped after saving a checkpoint
# (128 + SIGTERM, also after SIGINT): re-run with the same --workdir.
EXIT_PREEMPTED = 143


def load_config(config_arg: str, overrides: Sequence[str] = ()) -> Any:
  """The locked config of ``path[:arg]`` with ``--config.<path>=<value>``
  overrides applied, exactly as on the command line (an unknown key raises
  with ml_collections' did-you-mean)."""
  fv = flags.FlagValues()
  argv = ["main", f"--config={config_arg}", *overrides]
  holder = config_flags.DEFINE_config_file(
      "config", None, "Experiment config file.", flag_values=fv,
      lock_config=True, sys_argv=argv)
  fv(argv)
  return holder.value


def run_experiment(config: Any, workdir: str, *,
                   plot: bool | None = None) -> dict[str, Any]:
  """Runs ``config`` (and its variants) in ``workdir``; returns a summary.

  Args:
    config: an experiment config; ``config.kind`` (default ``"rlvr"``)
      picks the runner.
    workdir: the run directory (created).
    plot: write PNG curves (default: the ``--plot`` flag, else True).

  Returns:
    ``{"runs": {name: run summary}, "status", "seconds"}`` (also written to
    ``summary.json``), plus ``"plot"`` (the PNG path) when plotted. Status
    ``"preempted"``: a signal stopped the run after a checkpoint (RLVR;
    SFT stopped: ``"sft": {"step", "workdir"}`` and no runs).
  """
  kind = config.get("kind", "rlvr")
  if kind not in KINDS:
    raise ValueError(f"unknown config kind {kind!r}; valid: "
                     f"{', '.join(KINDS)}")
  if plot is None:
    plot = _PLOT is None or not (_PLOT.present and not _PLOT.value)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
    f.write(config.to_json_best_effort(indent=1))
  t0 = time.time()
  summary, draw = _RUNNERS[kind](config, workdir)
  summary["seconds"] = time.time() - t0
  with open(os.path.join(workdir, "summary.json"), "w",
            encoding="utf-8") as f:
    json.dump(summary, f, indent=1, default=float)
  if not plot or draw is None:
    return summary
  try:
    summary["plot"] = draw()
  except Exception as e:  # pylint: disable=broad-except
    print(f"plotting failed: {e!r}", file=sys.stderr)
  return summary


def _run_rlvr(config: Any, workdir: str):
  """SFT in ``workdir/sft`` then RL in ``workdir``; with variants one shared
  SFT, then each variant's RL in ``workdir/<name>``."""
  # Imported here so that `--help` and config errors stay fast.
  from entropy_rl import builders  # pylint: disable=import-outside-toplevel
  from entropy_rl.training import loop  # pylint: disable=import-outside-toplevel
  from experiments import plot  # pylint: disable=import-outside-toplevel

  runs = builders.variants(config)
  base = builders.build_experiment(runs[0][1])
  print(loop.describe(base), flush=True)
  try:
    params = loop.run_sft(base, os.path.join(workdir, "sft"))
  except loop.Preempted as e:
    print(str(e), flush=True)
    return {"runs": {}, "status": "preempted",
            "sft": {"step": e.step, "workdir": e.workdir}}, None
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

  def draw():
    out = os.path.join(workdir, "compare.png" if len(dirs) > 1
                       else "curves.png")
    plot.plot_runs(dirs, out, sft_dir=os.path.join(workdir, "sft"))
    return out
  return summary, draw


def _run_agent(config: Any, workdir: str):
  from experiments.agents import runner  # pylint: disable=import-outside-toplevel
  summary, dirs = runner.run(config, workdir)
  return summary, lambda: runner.plot(dirs, workdir)[0]


def _run_classic(config: Any, workdir: str):
  from experiments.classic import runner  # pylint: disable=import-outside-toplevel
  summary, dirs = runner.run(config, workdir)
  hlines = config.get("hlines")
  out = os.path.join(workdir, "compare.png" if len(dirs) > 1
                     else "curves.png")
  return summary, lambda: runner.plot(
      dirs, out, hlines=hlines.to_dict() if hlines else None,
      title=config.algorithm.kind)


_RUNNERS = {"rlvr": _run_rlvr, "agent": _run_agent, "classic": _run_classic}


def print_summary(summary: dict[str, Any]) -> None:
  """One line per run: step, held-out and final training metrics."""
  keys = ("eval/accuracy", "eval/pass@1", "eval/pass@4", "eval/entropy")
  train = ("accuracy", "entropy", "entropy_change")
  print(f"status {summary['status']} in {summary['seconds']:.0f}s")
  for name, r in summary["runs"].items():
    final = r.get("final", {})
    ev = " ".join(f"{k}={r['eval'][k]:.3f}" for k in keys
                  if k in r.get("eval", {}))
    tr = " ".join(f"{k}={final[k]:.3f}" for k in train if k in final) or (
        " ".join(f"{k}={v:.4g}" for k, v in list(final.items())[:6]))
    print(f"  {name}: step {r['step']} {ev} | train {tr}")
  if "plot" in summary:
    print(f"  curves: {summary['plot']}")
  if summary["status"] == "preempted":
    print(f"  preempted: checkpoint saved; re-run with the same --workdir "
          f"to resume (exit status {EXIT_PREEMPTED})")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  if _WORKDIR.value is None:
    raise app.UsageError("--workdir is required")
  logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes
  config = _CONFIG.value
  dist = config.get("distributed")  # RLVR configs only
  if dist is not None and dist.initialize:
    from entropy_rl import parallel  # pylint: disable=import-outside-toplevel
    parallel.initialize_distributed(
        dist.coordinator_address or None, dist.num_processes or None,
        dist.process_id if dist.num_processes else None, force=True)
  from entropy_rl.training import checkpoint  # pylint: disable=import-outside-toplevel
  try:
    summary = run_experiment(config, _WORKDIR.value)
  except (checkpoint.CheckpointCorruptError,
          checkpoint.CheckpointSaveError) as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    return 1
  print_summary(summary)
  return EXIT_PREEMPTED if summary["status"] == "preempted" else 0


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
  define_flags()
  app.run(main, flags_parser=parse_flags)
