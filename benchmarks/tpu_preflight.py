r"""TPU table and long-trace memory from the pre-flight (ESTIMATES).

Compiles the RL train step and the rollout sampler of
``experiments/configs/grpo.py:0.5b`` (Qwen2.5 shapes, bf16 compute, float32
parameters and AdamW) for named TPU slices on this machine
(``entropy_rl.training.preflight`` / ``entropy_rl.aot``) and prints one JSON
object per line. Nothing runs on a TPU: memory is the TPU compiler's own
buffer assignment, times are estimates of the compiled programs (XLA:TPU's
per-instruction cycle estimates, loops times their trip counts, Pallas
kernels at max(HBM traffic, FLOPs at peak), collectives at the ICI
bandwidth, not overlapped).

  python benchmarks/tpu_preflight.py table --out bench_results/tpu_table.jsonl
  python benchmarks/tpu_preflight.py seq --out bench_results/tpu_seq.jsonl \
      --plot docs/images/tpu_memory_vs_T.png
  python benchmarks/tpu_preflight.py target
  python benchmarks/tpu_preflight.py render bench_results/tpu_table.jsonl

* ``table``: model {0.5b, 1.5b, 7b} x slice {v5e-1, v5e-8, v6e-8, v5p-8} x
  mesh (data, fsdp; fsdp x tensor for 7b): the train step on 2 rows of
  512 + 512 tokens per chip (8 rows on one chip: one GRPO group), and the
  decode of 256 prompts per chip (128 prompt + 256 new tokens, one sample
  each): fits?, memory per chip, estimated step time, MFU, tokens/s.
  The train step's layers are scanned with ``remat="block"`` (compiles in
  about a minute), the decode's unrolled.
* ``seq``: peak temporary memory of the 0.5B train step on one v5e chip
  at T = 2k ... 32k tokens per row, a fixed 32k tokens per step, for the
  materialised-attention path (``attention="xla"``, no remat: the path
  before the attention kernels) and the default path (``"auto"`` = splash
  on TPU, ``remat="block"``). A program that does not fit reports the
  compiler's own figure of what it needed.
* ``target``: the issue's targets on v5e (0.5B, B = 16 x 1024, fsdp = 8,
  unrolled layers; B = 64 x 1024; the ``:0.5b`` config; 1.5B B = 16 x 1024;
  the sampler, B = 256 on one chip).

Rows already in ``--out`` are skipped (the runs resume).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODELS = ("0.5b", "1.5b", "7b")
TOPOLOGIES = ("v5e-1", "v5e-8", "v6e-8", "v5p-8")


def base_config(preset: str, overrides: dict):
  """grpo.py:0.5b with the model ``preset`` and nested overrides."""
  from experiments.configs import grpo  # pylint: disable=import-outside-toplevel
  from entropy_rl import builders  # pylint: disable=import-outside-toplevel
  c = grpo.get_config("0.5b")
  c.model.preset = preset
  builders.deep_update(c, overrides)
  return c


def meshes(model: str, chips: int):
  """(label, mesh dict) pairs of a table row."""
  if chips == 1:
    return [("single", {"data": 1, "fsdp": 1, "tensor": 1})]
  out = [("data", {"data": chips, "fsdp": 1, "tensor": 1}),
         ("fsdp", {"data": 1, "fsdp": chips, "tensor": 1})]
  if model == "7b":
    t = min(4, chips)
    out.append((f"fsdp{chips // t}xtensor{t}",
                {"data": 1, "fsdp": chips // t, "tensor": t}))
  return out


def run_one(config, topology: str, mesh_sizes: dict, programs, **extra):
  """One pre-flight: a JSON-able row."""
  import jax  # pylint: disable=import-outside-toplevel
  from entropy_rl import aot  # pylint: disable=import-outside-toplevel
  from entropy_rl import builders  # pylint: disable=import-outside-toplevel
  from entropy_rl.training import preflight  # pylint: disable=import-outside-toplevel
  topo = aot.topology(topology)
  mesh = aot.mesh_for(topo, mesh_sizes)
  exp = builders.build_experiment(config, abstract=True)
  t0 = time.time()
  out = {"topology": topology, "chip": topo.chip.name,
         "chips": topo.num_chips, "mesh": mesh_sizes, **extra}
  with jax.set_mesh(mesh):
    for name in programs:
      build = (preflight.train_program if name == "train"
               else preflight.rollout_program)
      r = preflight.run_program(build(exp, mesh), topo, mesh)
      rep = r.report
      out[name] = {
          "fits": r.fits, "rows": r.rows,
          "memory_gib": None if rep is None else round(
              rep.memory.total_bytes / 2**30, 3),
          "temp_gib": None if rep is None else round(
              rep.memory.temp_bytes / 2**30, 3),
          "needs_gib": _needs(r.error),
          "params_gib": round(r.params_bytes / 2**30, 3),
          "optimizer_gib": round(r.optimizer_bytes / 2**30, 3),
          "est_ms": None if r.estimated_seconds is None else round(
              r.estimated_seconds * 1e3, 2),
          "compute_ms": None if rep is None else round(
              rep.compute_seconds * 1e3, 2),
          "collective_ms": None if rep is None else round(
              rep.collective_seconds * 1e3, 2),
          "mfu": None if r.mfu is None else round(r.mfu, 4),
          "tokens_per_s": None if r.tokens_per_second is None else round(
              r.tokens_per_second),
          "flags": list(r.flags), "notes": list(r.notes)}
  out["compile_s"] = round(time.time() - t0, 1)
  return out


def _needs(error):
  """The GiB a refused program needed (from the compiler's message)."""
  if not error:
    return None
  import re  # pylint: disable=import-outside-toplevel
  m = re.search(r"needs ([0-9.]+) GiB", error)
  return float(m.group(1)) if m else None


def _done(path):
  if not path or not os.path.exists(path):
    return set()
  with open(path, encoding="utf-8") as f:
    return {json.loads(line)["key"] for line in f if line.strip()}


def _emit(row, path):
  print(json.dumps(row), flush=True)
  if path:
    with open(path, "a", encoding="utf-8") as f:
      f.write(json.dumps(row) + "\n")


def table(args):
  from entropy_rl import aot  # pylint: disable=import-outside-toplevel
  done = _done(args.out)
  for model in args.models.split(","):
    for topology in args.topologies.split(","):
      chips = aot.topology(topology).num_chips
      rows = max(8, 2 * chips)
      for label, sizes in meshes(model, chips):
        key = f"table/{model}/{topology}/{label}"
        if key in done:
          continue
        train_cfg = base_config(model, _train_overrides(rows, 512, 512))
        row = run_one(train_cfg, topology, sizes, ("train",), key=key,
                      model=model, mesh_label=label)
        if label in ("single", "data") or (label.startswith("fsdp") and
                                           "tensor" in label):
          roll_cfg = base_config(model, _rollout_overrides(256 * chips))
          row["rollout"] = run_one(roll_cfg, topology, sizes,
                                   ("rollout",))["rollout"]
        _emit(row, args.out)


def _train_overrides(rows, p, n, remat="block", scan=True, attention="auto",
                     minibatches=1):
  return {"model": {"scan_layers": scan, "remat": remat,
                    "attention": attention},
          "data": {"prompts_per_step": rows // 8, "num_samples": 8,
                   "max_prompt_len": p},
          "sampling": {"max_new_tokens": n},
          "train": {"minibatches": minibatches,
                    "measure_entropy_change": False}}


def _rollout_overrides(prompts, p=128, n=256):
  # Unrolled layers: the decode's layer loop is straight-line code (no
  # per-step slicing of stacked parameters); scanned layers decode through
  # per-layer cache buffers too, somewhat slower (see BENCHMARKS.md).
  return {"model": {"scan_layers": False},
          "data": {"prompts_per_step": prompts, "num_samples": 1,
                   "max_prompt_len": p},
          "sampling": {"max_new_tokens": n, "block_size": 32}}


def seq(args):
  done = _done(args.out)
  rows = []
  for length in (int(x) for x in args.lengths.split(",")):
    b = max(1, args.tokens // length)
    for label, attention, remat in (("materialised", "xla", "none"),
                                    ("kernel+remat", "auto", "block")):
      key = f"seq/{label}/{length}"
      if key in done:
        continue
      cfg = base_config("0.5b", _train_overrides(
          8 * b, length // 2, length // 2, remat=remat, attention=attention))
      # one row per GRPO group would be 8x the tokens: one sample per prompt
      cfg.data.num_samples = 1
      cfg.data.prompts_per_step = b
      row = run_one(cfg, args.topology, {"data": 1, "fsdp": 1, "tensor": 1},
                    ("train",), key=key, path=label, seq_len=length, rows=b)
      rows.append(row)
      _emit(row, args.out)
  if args.plot:
    plot_seq(args.out, args.plot)


def plot_seq(path, out):
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  with open(path, encoding="utf-8") as f:
    rows = [json.loads(line) for line in f if line.strip()]
  fig, ax = plt.subplots(figsize=(6, 4))
  for label, style in (("materialised", "o-"), ("kernel+remat", "s-")):
    pts = sorted((r["seq_len"], r["train"]["temp_gib"] or
                  r["train"]["needs_gib"], r["train"]["fits"])
                 for r in rows if r.get("path") == label)
    if not pts:
      continue
    xs, ys, fits = zip(*pts)
    ax.plot(xs, ys, style, label=label)
    for x, y, ok in pts:
      if not ok:
        ax.annotate("does not fit", (x, y), fontsize=7)
  ax.axhline(16, color="grey", lw=0.8, ls="--")
  ax.set_xscale("log", base=2)
  ax.set_yscale("log", base=2)
  ax.set_xlabel("tokens per row T (32k tokens per step)")
  ax.set_ylabel("compiled temporaries per chip (GiB)")
  ax.set_title("Qwen2.5-0.5B train step on one v5e chip (AOT, estimate)")
  ax.legend()
  fig.tight_layout()
  fig.savefig(out, dpi=120)


def target(args):
  done = _done(args.out)
  jobs = [
      ("target/0.5b/b16/fsdp8/unrolled", "0.5b", "v5e-8",
       {"data": 1, "fsdp": 8, "tensor": 1},
       _train_overrides(16, 512, 512, remat="none", scan=False), "train"),
      ("target/0.5b/b16/fsdp8/scan", "0.5b", "v5e-8",
       {"data": 1, "fsdp": 8, "tensor": 1},
       _train_overrides(16, 512, 512), "train"),
      ("target/0.5b/b64/fsdp8", "0.5b", "v5e-8",
       {"data": 1, "fsdp": 8, "tensor": 1},
       _train_overrides(64, 512, 512), "train"),
      ("target/0.5b/config/fsdp8", "0.5b", "v5e-8",
       {"data": 1, "fsdp": 8, "tensor": 1}, {}, "train"),
      ("target/1.5b/b16/fsdp8", "1.5b", "v5e-8",
       {"data": 1, "fsdp": 8, "tensor": 1},
       _train_overrides(16, 512, 512), "train"),
      ("target/0.5b/sampler/v5e-1", "0.5b", "v5e-1",
       {"data": 1, "fsdp": 1, "tensor": 1}, _rollout_overrides(256),
       "rollout"),
      ("target/0.5b/sampler-8k/v5e-1", "0.5b", "v5e-1",
       {"data": 1, "fsdp": 1, "tensor": 1},
       _rollout_overrides(16, p=512, n=8192), "rollout"),
  ]
  for key, model, topology, sizes, overrides, program in jobs:
    if key in done or (args.only and args.only not in key):
      continue
    _emit(run_one(base_config(model, overrides), topology, sizes,
                  (program,), key=key, model=model), args.out)


def _cell(r, field):
  """One program's cell: fits + memory, or what it needed."""
  if r is None:
    return ""
  if field == "fits":
    if r["fits"]:
      return f"{r['memory_gib']:.1f}"
    need = r.get("needs_gib")
    return f"no ({need:.0f})" if need else "no"
  v = r.get(field)
  if v is None or not r["fits"]:
    return "–"
  if field == "mfu":
    return f"{100 * v:.1f}%"
  if field == "tokens_per_s":
    return f"{v / 1e3:.1f}k"
  return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def render(args):
  """Markdown table of ``table`` rows (BENCHMARKS.md)."""
  with open(args.input, encoding="utf-8") as f:
    rows = [json.loads(line) for line in f if line.strip()]
  print("| model | slice | mesh | train: GiB/chip (no: needed) | est. ms | "
        "MFU | decode: GiB/chip | est. tokens/s (slice) |")
  print("|---|---|---|---|---|---|---|---|")
  for row in rows:
    if not row["key"].startswith("table/"):
      continue
    tr, ro = row.get("train"), row.get("rollout")
    print(f"| {row['model']} | {row['topology']} | {row['mesh_label']} | "
          f"{_cell(tr, 'fits')} | {_cell(tr, 'est_ms')} | {_cell(tr, 'mfu')} "
          f"| {_cell(ro, 'fits')} | {_cell(ro, 'tokens_per_s')} |")


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  sub = ap.add_subparsers(dest="cmd", required=True)
  t = sub.add_parser("table")
  t.add_argument("--models", default=",".join(MODELS))
  t.add_argument("--topologies", default=",".join(TOPOLOGIES))
  s = sub.add_parser("seq")
  s.add_argument("--lengths", default="2048,4096,8192,16384,32768")
  s.add_argument("--tokens", type=int, default=32768)
  s.add_argument("--topology", default="v5e-1")
  s.add_argument("--plot", default="")
  g = sub.add_parser("target")
  g.add_argument("--only", default="")
  for p in (t, s, g):
    p.add_argument("--out", default="")
  r = sub.add_parser("render")
  r.add_argument("input")
  args = ap.parse_args(argv)
  {"table": table, "seq": seq, "target": target,
   "render": render}[args.cmd](args)


if __name__ == "__main__":
  main()
