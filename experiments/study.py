r"""A method study: methods × seeds on one task and budget, one report.

  python -m experiments.study --config=experiments/configs/study_full.py \
      --workdir=runs/study [--quick] [--methods=grpo,clip_cov] \
      [--seeds=0,1] [--parallel=2] [--set=train.num_steps=100] \
      [--dry_run] [--report_only]

The study config (``experiments/configs/study_*.py``) names the methods
(``name -> config path[:arg]`` plus overrides), the seeds, the budget (the
``budget_keys`` of its ``base`` config copied onto every method, plus its
``shared`` overrides: steps, eval with pass@k for k up to 16, ...) and the
claim thresholds.

How runs are laid out. Each (method, seed) is one ``experiments.main``
process (``experiments.sweep``'s runner) in ``<workdir>/<method>/seed=<s>``
with ``--config.seed=<s>``: the RLVR loop's own seed vmapping
(``num_seeds``) shares one SFT warm-up and one data order across seeds, so
``seed_mode="vmap"`` is offered too (one process per method, in
``<workdir>/<method>/seeds=<a>-<b>``, needing consecutive seeds) and
both layouts are read back alike. Methods run in sequence, or
``parallel`` processes at a time. With ``share_sft`` (default) the runs
whose warm-up settings are equal (model, tokenizer, task, data, sft and
seed) share one SFT directory (``<workdir>/_sft/<key>``, linked as each
run's ``sft/``): the first of them trains it and the others wait, then load
it. Re-running skips runs whose ``summary.json`` says done and resumes
interrupted ones from their checkpoints; ``--methods`` / ``--seeds`` pick a
subset, ``--quick`` the config's ``quick`` subset (fewer methods, seeds and
steps: a separate run directory tree, ``<workdir>/quick``).

Outputs: ``results.md`` (one row per method: final and area-under-curve
token entropy, held-out greedy accuracy, pass@k, response length, steps to
collapse; mean ± 95% t-interval over seeds, then every paper claim of
``experiments.claims`` with its verdict: reproduced / not reproduced /
inconclusive), ``results.json`` (per seed and aggregated) and
``study_curves.png`` / ``study_passk.png``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import runpy
import sys
from typing import Any, Mapping, NamedTuple, Sequence

from experiments import aggregate as agg
from experiments import claims as claims_lib
from experiments import sweep

# Sections that decide the SFT warm-up (runs equal on these share it).
SFT_KEYS = ("seed", "model", "tokenizer", "task", "data", "sft", "mesh",
            "optimizer.max_grad_norm", "train.token_chunk",
            "train.vocab_chunk", "train.compute_dtype")

# results.md columns: (metric, header).
COLUMNS = (("entropy/final", "entropy (final)"),
           ("entropy/auc", "entropy (AUC)"),
           ("eval/accuracy", "held-out acc (greedy)"))
TAIL = (("eval/response_length", "response length"),
        ("steps_to_collapse", "steps to collapse"))


class Job(NamedTuple):
  """One ``experiments.main`` process of the study."""
  method: str
  seeds: tuple[int, ...]
  name: str  # run directory relative to the workdir
  argv: list[str]
  sft_key: str | None  # runs with equal keys share a warm-up
  sft_steps: int


# ------------------------------------------------------------------- config


def load_study(config_arg: str) -> Any:
  """``get_config(arg)`` of a study config ``path[:arg]``."""
  path, _, arg = config_arg.partition(":")
  if not os.path.isfile(path):
    raise ValueError(f"--config: no study config file {path!r}")
  module = runpy.run_path(path)
  if "get_config" not in module:
    raise ValueError(f"{path}: a study config needs get_config()")
  return module["get_config"](arg) if arg else module["get_config"]()


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
  if hasattr(node, "items") and not isinstance(node, (str, bytes)):
    out = {}
    for k, v in node.items():
      out.update(_flatten(v, f"{prefix}{k}."))
    return out
  return {prefix[:-1]: node}


def _get(config: Any, dotted: str) -> Any:
  node = config
  for p in dotted.split("."):
    node = node[p]
  return node


def budget_overrides(study: Any) -> dict[str, Any]:
  """The leaves of ``study.budget_keys`` in ``study.base`` (dotted path ->
  value), the shared task and budget of every method."""
  if not study.get("base"):
    return {}
  from experiments import main as main_lib  # pylint: disable=import-outside-toplevel
  base = main_lib.load_config(study.base)
  out = {}
  for key in study.get("budget_keys", ()):
    out.update(_flatten(_get(base, key), key + "."))
  return out


def method_overrides(study: Any, method: str,
                     extra: Sequence[str] = ()) -> list[str]:
  """``--config.<k>=<v>`` flags of a method: budget, shared, its own, then
  ``extra`` (``k=v`` strings, e.g. from ``--set``)."""
  if method not in study.methods:
    raise ValueError(f"unknown method {method!r}; the study has "
                     f"{', '.join(study.methods)}")
  values = budget_overrides(study)
  values.update(_flatten(study.get("shared", {})))
  values.update(_flatten(study.methods[method].get("overrides", {})))
  values = {k: v for k, v in values.items() if k}
  return ([f"--config.{k}={sweep.format_value(v)}"
           for k, v in values.items()] + [f"--config.{s}" for s in extra])


def _sft_key(config: Any) -> str | None:
  if int(config.sft.steps) <= 0:
    return None
  blob = {}
  for k in SFT_KEYS:
    try:
      v = _get(config, k)
    except (KeyError, AttributeError):
      continue
    blob[k] = v.to_dict() if hasattr(v, "to_dict") else v
  h = hashlib.sha1(json.dumps(blob, sort_keys=True, default=str).encode())
  return f"seed={int(config.seed)}-{h.hexdigest()[:10]}"


def plan(study: Any, workdir: str, methods: Sequence[str],
         seeds: Sequence[int], extra: Sequence[str] = (),
         python: str = sys.executable) -> list[Job]:
  """The jobs of ``methods`` × ``seeds``; every override is applied to the
  locked config first (an unknown key raises, naming the method)."""
  from experiments import main as main_lib  # pylint: disable=import-outside-toplevel
  mode = study.get("seed_mode", "process")
  if mode not in ("process", "vmap"):
    raise ValueError(f"study seed_mode must be 'process' or 'vmap', got "
                     f"{mode!r}")
  seeds = list(seeds)
  if mode == "vmap" and seeds != list(range(seeds[0], seeds[0] + len(seeds))):
    raise ValueError(f"seed_mode='vmap' runs seeds s, s+1, ... in one "
                     f"process; got {seeds}; use seed_mode='process'")
  groups = ([(s,) for s in seeds] if mode == "process" else [tuple(seeds)])
  jobs = []
  for m in methods:
    flags = method_overrides(study, m, extra)
    cfg_arg = study.methods[m].config
    for group in groups:
      seed_flags = [f"--config.seed={group[0]}"]
      if mode == "vmap":
        seed_flags.append(f"--config.num_seeds={len(group)}")
        name = f"{m}/seeds={group[0]}-{group[-1]}"
      else:
        name = f"{m}/seed={group[0]}"
      try:
        cfg = main_lib.load_config(cfg_arg, flags + seed_flags)
      except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"study method {m!r} ({cfg_arg}): bad override: "
                         f"{e}") from e
      _check_eval(cfg, m)
      argv = [python, "-m", "experiments.main", f"--config={cfg_arg}",
              f"--workdir={os.path.join(workdir, name)}", "--noplot",
              *flags, *seed_flags]
      key = _sft_key(cfg) if study.get("share_sft", True) else None
      jobs.append(Job(m, group, name, argv, key, int(cfg.sft.steps)))
  return jobs


def _check_eval(cfg: Any, method: str) -> None:
  ks = tuple(int(k) for k in cfg.eval.ks)
  n = int(cfg.eval.num_samples)
  if ks and max(ks) > n:
    raise ValueError(f"study method {method!r}: eval.ks={ks} needs "
                     f"eval.num_samples >= {max(ks)}, got {n}")


# -------------------------------------------------------------------- runs


def _sft_finished(sft_dir: str, steps: int) -> bool:
  from entropy_rl.training import metrics as metrics_lib  # pylint: disable=import-outside-toplevel
  recs = metrics_lib.read_jsonl(os.path.join(sft_dir, "metrics.jsonl"))
  return any(r.get("phase") == "sft" and r.get("step", 0) >= steps
             for r in recs)


def link_sft(jobs: Sequence[Job], workdir: str) -> None:
  """Links each sharing run's ``sft/`` to ``<workdir>/_sft/<key>`` (a run
  that already has its own ``sft/`` keeps it)."""
  for j in jobs:
    if j.sft_key is None:
      continue
    shared = os.path.join(workdir, "_sft", j.sft_key)
    os.makedirs(shared, exist_ok=True)
    run_dir = os.path.join(workdir, j.name)
    os.makedirs(run_dir, exist_ok=True)
    link = os.path.join(run_dir, "sft")
    if not os.path.lexists(link):
      os.symlink(os.path.relpath(shared, run_dir), link)


def make_ready(jobs: Sequence[Job], workdir: str):
  """``ready(name, running, codes)`` for ``sweep.run_all``: a run waits
  while another run sharing its SFT directory runs, until that warm-up is
  finished."""
  by_name = {j.name: j for j in jobs}

  def ready(name: str, running: set[str], codes: Mapping[str, int]) -> bool:
    del codes
    j = by_name[name]
    if j.sft_key is None:
      return True
    if _sft_finished(os.path.join(workdir, "_sft", j.sft_key), j.sft_steps):
      return True
    return not any(by_name[r].sft_key == j.sft_key for r in running
                   if r in by_name)
  return ready


def run_jobs(jobs: Sequence[Job], workdir: str, parallel: int = 1
             ) -> dict[str, int]:
  """Runs the jobs through ``experiments.sweep.run_all``."""
  link_sft(jobs, workdir)
  labels = {j.name: f"{j.method} seed{'s' if len(j.seeds) > 1 else ''} "
            f"{','.join(map(str, j.seeds))}" for j in jobs}
  return sweep.run_all([(j.name, j.argv) for j in jobs], workdir, parallel,
                       labels=labels, ready=make_ready(jobs, workdir),
                       tag="study")


# ----------------------------------------------------------------- collect

_RUN_DIR = re.compile(r"^seeds?=(\d+)(?:-(\d+))?$")


def collect(workdir: str, methods: Sequence[str],
            seeds: Sequence[int] | None = None):
  """Per-seed records of the finished runs under ``workdir``.

  Returns:
    ``(records, configs, status)``: ``{method: {seed: records}}``,
    ``{method: config.json}`` and ``{run dir: status}`` of every run found
    (finished or not; only finished ones enter ``records``).
  """
  from entropy_rl.training import metrics as metrics_lib  # pylint: disable=import-outside-toplevel
  records: dict[str, dict[int, list]] = {}
  configs: dict[str, dict] = {}
  status: dict[str, str] = {}
  for m in methods:
    mdir = os.path.join(workdir, m)
    if not os.path.isdir(mdir):
      continue
    for sub in sorted(os.listdir(mdir)):
      match = _RUN_DIR.match(sub)
      run_dir = os.path.join(mdir, sub)
      if not match or not os.path.isdir(run_dir):
        continue
      done = sweep.is_done(run_dir)
      status[f"{m}/{sub}"] = "done" if done else "unfinished"
      if not done:
        continue
      first = int(match.group(1))
      recs = metrics_lib.read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
      for idx, rows in agg.split_seeds(recs).items():
        seed = first + (idx or 0)
        if seeds is not None and seed not in seeds:
          continue
        records.setdefault(m, {}).setdefault(seed, rows)
      if m not in configs:
        try:
          with open(os.path.join(run_dir, "config.json"),
                    encoding="utf-8") as f:
            configs[m] = json.load(f)
        except (OSError, ValueError):
          pass
  return records, configs, status


def per_seed_metrics(records: Mapping[str, Mapping[int, list]], *,
                     collapse_fraction: float, final_window: int
                     ) -> dict[str, dict[int, dict[str, float | None]]]:
  return {m: {s: agg.run_metrics(r, collapse_fraction=collapse_fraction,
                                 final_window=final_window)
              for s, r in sorted(by_seed.items())}
          for m, by_seed in records.items()}


# ------------------------------------------------------------------ report


def table(per_seed: Mapping[str, Mapping[int, Mapping[str, Any]]]) -> str:
  """results.md's table: one row per method, cells ``mean ± half (n)``."""
  if not per_seed:
    return "(no finished runs)\n"
  passk = agg.pass_keys({k for by in per_seed.values()
                         for v in by.values() for k in v})
  cols = list(COLUMNS) + [(k, k[5:]) for k in passk] + list(TAIL)
  lines = ["| method | " + " | ".join(h for _, h in cols) + " |",
           "|---" * (len(cols) + 1) + "|"]
  for m, by_seed in per_seed.items():
    a = agg.aggregate(by_seed)
    cells = []
    for k, _ in cols:
      iv = a.get(k, agg.Interval(float("nan"), None, 0))
      if k == "steps_to_collapse":
        never = agg.never_count(by_seed)
        cell = "never" if iv.n == 0 and never else iv.format(1)
        if never and iv.n:
          cell += f"; never in {never}/{never + iv.n}"
      else:
        cell = iv.format()
      cells.append(cell)
    lines.append(f"| {m} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def plot(records: Mapping[str, Mapping[int, list]],
         per_seed: Mapping[str, Mapping[int, Mapping[str, Any]]],
         workdir: str) -> list[str]:
  """``study_curves.png`` (entropy and held-out accuracy, mean and 95%
  band over seeds) and ``study_passk.png`` (pass@k vs k)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  def band(ax, curves, color, label):
    steps = sorted(set.intersection(*[set(s.tolist()) for s, _ in curves]))
    if not steps:
      return
    ys = np.asarray([[dict(zip(s.tolist(), y.tolist()))[t] for t in steps]
                     for s, y in curves])
    ivs = [agg.mean_ci(col) for col in ys.T]
    mean = np.asarray([i.mean for i in ivs])
    half = np.asarray([i.half or 0.0 for i in ivs])
    ax.plot(steps, mean, color=color, label=f"{label} (n={len(curves)})")
    ax.fill_between(steps, mean - half, mean + half, color=color, alpha=0.2)

  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  fig, (ax_h, ax_a) = plt.subplots(1, 2, figsize=(12, 4.5))
  for i, (m, by_seed) in enumerate(records.items()):
    col = colors[i % len(colors)]
    band(ax_h, [agg.series(r, "entropy") for r in by_seed.values()], col, m)
    band(ax_a, [agg.series(r, "eval/accuracy", "eval")
                for r in by_seed.values()], col, m)
  ax_h.set(title="token entropy (mean, 95% band over seeds)",
           xlabel="RL step")
  ax_a.set(title="held-out greedy accuracy", xlabel="RL step")
  for ax in (ax_h, ax_a):
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7)
  fig.tight_layout()
  curves = os.path.join(workdir, "study_curves.png")
  fig.savefig(curves, dpi=110)
  plt.close(fig)

  fig, ax = plt.subplots(figsize=(6, 4.5))
  for i, (m, by_seed) in enumerate(per_seed.items()):
    a = agg.aggregate(by_seed)
    keys = [k for k in agg.pass_keys(a) if a[k].n]
    if not keys:
      continue
    ks = [int(k.split("@")[1]) for k in keys]
    ax.errorbar(ks, [a[k].mean for k in keys],
                yerr=[a[k].half or 0.0 for k in keys], marker="o",
                capsize=3, color=colors[i % len(colors)], label=m)
  ax.set(xscale="log", xlabel="k", ylabel="pass@k (held-out)",
         title="pass@k (mean ± 95% over seeds)")
  ax.set_xscale("log", base=2)
  ax.grid(alpha=0.3)
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=7)
  fig.tight_layout()
  passk = os.path.join(workdir, "study_passk.png")
  fig.savefig(passk, dpi=110)
  plt.close(fig)
  return [curves, passk]


def report(study: Any, workdir: str, methods: Sequence[str],
           seeds: Sequence[int] | None = None, *, draw: bool = True
           ) -> dict[str, Any]:
  """Aggregates the finished runs; writes results.md / .json and plots."""
  records, configs, status = collect(workdir, methods, seeds)
  per_seed = per_seed_metrics(
      records, collapse_fraction=float(study.get("collapse_fraction", 0.1)),
      final_window=int(study.get("final_window", 5)))
  settings = (study.claims.to_dict() if hasattr(study.get("claims"),
                                                "to_dict")
              else dict(study.get("claims", {})))
  data = claims_lib.StudyData(per_seed, records, configs)
  results = claims_lib.check_all(data, settings)
  unfinished = sorted(k for k, v in status.items() if v != "done")
  md = ["# Study results", "",
        f"Mean ± 95% t-interval over seeds (n = seeds); entropy AUC = "
        f"trapezoid area / step span; collapse = entropy below "
        f"{study.get('collapse_fraction', 0.1)} × its initial value.", "",
        table(per_seed)]
  if unfinished:
    md += [f"Unfinished runs (not aggregated): {', '.join(unfinished)}", ""]
  md += ["## Claims", "", claims_lib.report(results)]
  text = "\n".join(md)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "results.md"), "w", encoding="utf-8") as f:
    f.write(text)
  out = {
      "per_seed": {m: {str(s): v for s, v in by.items()}
                   for m, by in per_seed.items()},
      "aggregate": {m: {k: iv._asdict() for k, iv in
                        agg.aggregate(by).items()}
                    for m, by in per_seed.items()},
      "never_collapsed": {m: agg.never_count(by)
                          for m, by in per_seed.items()},
      "claims": [{"name": c.name, "verdict": r.verdict.value,
                  "evidence": r.evidence, "quote": c.quote,
                  "number": c.number, "citation": c.citation}
                 for c, r in results],
      "runs": status}
  with open(os.path.join(workdir, "results.json"), "w",
            encoding="utf-8") as f:
    json.dump(out, f, indent=1, default=float)
  print(text)
  if draw and records:
    try:
      out["plots"] = plot(records, per_seed, workdir)
      print("\n".join(out["plots"]))
    except Exception as e:  # pylint: disable=broad-except
      print(f"plotting failed: {e!r}", file=sys.stderr)
  return out


# -------------------------------------------------------------------- main


def select(study: Any, methods: str | None, seeds: str | None,
           quick: bool) -> tuple[list[str], list[int], list[str]]:
  """The methods, seeds and extra overrides a command line asks for."""
  all_methods = list(study.methods)
  chosen_m = list(study.quick.methods) if quick else all_methods
  chosen_s = [int(s) for s in (study.quick.seeds if quick else study.seeds)]
  extra = ([f"{k}={sweep.format_value(v)}" for k, v in
            _flatten(study.quick.get("shared", {})).items()]
           if quick else [])
  if methods:
    chosen_m = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in chosen_m if m not in study.methods]
    if unknown:
      raise ValueError(f"--methods: unknown {', '.join(unknown)}; the study "
                       f"has {', '.join(all_methods)}")
  if seeds:
    try:
      chosen_s = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError as e:
      raise ValueError(f"--seeds: expected integers like 0,1,2, got "
                       f"{seeds!r}") from e
  return chosen_m, chosen_s, extra


def main(argv: list[str] | None = None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--config", required=True, help="study config[:arg]")
  ap.add_argument("--workdir", required=True, help="study directory")
  ap.add_argument("--methods", default=None, help="comma-separated subset")
  ap.add_argument("--seeds", default=None, help="comma-separated subset")
  ap.add_argument("--parallel", type=int, default=None,
                  help="processes at a time (default: the config's)")
  ap.add_argument("--quick", action="store_true",
                  help="the config's quick subset (in <workdir>/quick)")
  ap.add_argument("--set", action="append", default=[],
                  help="extra override for every run, e.g. "
                  "train.num_steps=50 (repeatable)")
  ap.add_argument("--report_only", action="store_true",
                  help="re-aggregate the runs already there")
  ap.add_argument("--dry_run", action="store_true",
                  help="print the commands only")
  args = ap.parse_args(argv)
  try:
    study = load_study(args.config)
    methods, seeds, extra = select(study, args.methods, args.seeds,
                                   args.quick)
    workdir = os.path.join(args.workdir, "quick") if args.quick else (
        args.workdir)
    jobs = [] if args.report_only else plan(
        study, workdir, methods, seeds, extra + list(args.set))
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if args.dry_run:
    for j in jobs:
      print(" ".join(j.argv))
    return 0
  codes = {}
  if jobs:
    parallel = args.parallel or int(study.get("parallel", 1))
    print(f"study: {len(methods)} methods x {len(seeds)} seeds = "
          f"{len(jobs)} runs in {workdir} ({parallel} at a time)",
          flush=True)
    os.makedirs(workdir, exist_ok=True)
    codes = run_jobs(jobs, workdir, parallel)
  report(study, workdir, methods, seeds)
  return 0 if all(c == 0 for c in codes.values()) else 1


if __name__ == "__main__":
  sys.exit(main())
