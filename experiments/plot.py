r"""Entropy, accuracy and ΔH curves of one run, its variants or a sweep.

  python -m experiments.plot --workdir=runs/default          # -> compare.png
  python -m experiments.plot --workdir=runs/sweep_steer --out=sweep.png

A directory holding ``metrics.jsonl`` is one run; otherwise every
sub-directory holding one is a run (variants of one experiment, or the runs
of a sweep). Panels: token entropy, accuracy (train and held-out greedy),
realised vs predicted entropy change per step, and reward (or the SFT loss
when there is an ``sft/`` run).
"""

from __future__ import annotations

import os
from typing import Mapping

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from entropy_rl.training import metrics as metrics_lib  # pylint: disable=wrong-import-position

def find_runs(workdir: str) -> dict[str, str]:
  """``{name: dir}`` of the runs under ``workdir`` (see module doc)."""
  if os.path.exists(os.path.join(workdir, "metrics.jsonl")):
    return {os.path.basename(os.path.normpath(workdir)) or "run": workdir}
  runs = {}
  for name in sorted(os.listdir(workdir)):
    d = os.path.join(workdir, name)
    if name != "sft" and os.path.exists(os.path.join(d, "metrics.jsonl")):
      runs[name] = d
  return runs


def series(records, phase: str, key: str) -> tuple[np.ndarray, np.ndarray]:
  """Steps and values of ``key`` in the records of ``phase`` (the last
  record of a step wins)."""
  pts = {}
  for r in records:
    if r.get("phase") == phase and r.get(key) is not None:
      pts[int(r["step"])] = float(r[key])
  steps = np.asarray(sorted(pts), np.float64)
  return steps, np.asarray([pts[int(s)] for s in steps], np.float64)


def smooth(y: np.ndarray, window: int) -> np.ndarray:
  if window <= 1 or len(y) < 2:
    return y
  w = min(window, len(y))
  c = np.cumsum(np.insert(y, 0, 0.0))
  head = c[1:w] / np.arange(1, w)
  return np.concatenate([head, (c[w:] - c[:-w]) / w])


def plot_runs(runs: Mapping[str, str], out: str, *, smooth_window: int = 5,
              sft_dir: str | None = None, title: str | None = None) -> str:
  """Draws the comparison figure of ``runs`` ({name: dir}) into ``out``."""
  data = {n: metrics_lib.read_jsonl(os.path.join(d, "metrics.jsonl"))
          for n, d in runs.items()}
  sft = []
  if sft_dir and os.path.exists(os.path.join(sft_dir, "metrics.jsonl")):
    sft = metrics_lib.read_jsonl(os.path.join(sft_dir, "metrics.jsonl"))
  fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
  (ax_h, ax_acc), (ax_dh, ax_r) = axes
  ax_pred = ax_dh.twinx()  # the prediction is per unit step size
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for i, (name, recs) in enumerate(data.items()):
    col = colors[i % len(colors)]
    s, y = series(recs, "rl", "entropy")
    if len(s):
      ax_h.plot(s, smooth(y, smooth_window), color=col, label=name)
    s, y = series(recs, "rl", "accuracy")
    if len(s):
      ax_acc.plot(s, smooth(y, smooth_window), color=col, alpha=0.5, lw=1,
                  label=f"{name} (train, sampled)")
    s, y = series(recs, "eval", "eval/accuracy")
    if len(s):
      ax_acc.plot(s, y, "o-", color=col, label=f"{name} (held-out, greedy)")
    s, y = series(recs, "rl", "entropy_change")
    if len(s):
      ax_dh.plot(s, smooth(y, smooth_window), color=col,
                 label=f"{name} realised")
    s, y = series(recs, "rl", "pred_entropy_change")
    if len(s):
      ax_pred.plot(s, smooth(y, smooth_window), "--", color=col, alpha=0.6,
                   label=f"{name} −cov(logp, A) (right axis)")
    s, y = series(recs, "rl", "reward")
    if len(s):
      ax_r.plot(s, smooth(y, smooth_window), color=col, label=name)
  ax_h.set(title="token entropy of rollouts (nats)", xlabel="RL step")
  ax_acc.set(title="accuracy", xlabel="RL step", ylim=(-0.02, 1.02))
  ax_dh.set(title="entropy change per step: realised (left) vs "
            "first-order prediction (right)", xlabel="RL step")
  ax_dh.title.set_fontsize(9)
  ax_pred.tick_params(labelsize=7)
  handles = [h for a in (ax_dh, ax_pred)
             for h in a.get_legend_handles_labels()[0]]
  if handles:
    ax_dh.legend(handles=handles, fontsize=7)
  ax_dh.axhline(0.0, color="k", lw=0.5)
  ax_r.set(title="mean reward", xlabel="RL step")
  if sft:
    s, y = series(sft, "sft", "sft_nll")
    if len(s):
      inset = ax_r.inset_axes([0.55, 0.1, 0.4, 0.35])
      inset.plot(s, y, color="gray")
      inset.set_title("SFT loss", fontsize=8)
      inset.tick_params(labelsize=6)
  for ax in axes.flat:
    if ax is not ax_dh and ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
  fig.suptitle(title or " vs ".join(data))
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  fig.savefig(out, dpi=110)
  plt.close(fig)
  return out


def main(argv: list[str] | None = None) -> str:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--workdir", required=True,
                  help="a run, experiment or sweep directory")
  ap.add_argument("--out", default=None, help="PNG path (default: in workdir)")
  ap.add_argument("--smooth", type=int, default=5,
                  help="moving-average window")
  args = ap.parse_args(argv)
  runs = find_runs(args.workdir)
  if not runs:
    ap.error(f"no metrics.jsonl under {args.workdir}")
  out = args.out or os.path.join(
      args.workdir, "curves.png" if len(runs) == 1 else "compare.png")
  plot_runs(runs, out, smooth_window=args.smooth,
            sft_dir=os.path.join(args.workdir, "sft"))
  print(out)
  return out


if __name__ == "__main__":
  main()
