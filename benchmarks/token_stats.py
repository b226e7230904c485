r"""Chunked vs naive per-token log-prob + entropy: time and memory.

Measures the forward + backward pass of

    L(h, W) = Σ_n a_n·logp_n + b_n·entropy_n,   z = h·W   (h [N, D], W [D, V])

with respect to h and W, once through
:func:`entropy_rl.core.token_stats.token_stats` (chunked) and once through
:func:`~entropy_rl.core.token_stats.token_stats_naive` ([N, V] logits). For
each it prints one JSON object: the compiled program's temporary memory
(``compiled.memory_analysis().temp_size_in_bytes``, the "extra" memory beyond
arguments and outputs) and the median wall time (and process CPU time, all
threads: steadier on a shared host) of ``--repeats`` runs after ``--warmup``
runs. A variant whose temp + argument + output bytes exceed
``--max-run-gib`` is compiled but not run (``"ran": false`` with the reason).
A last object per vocabulary compares the two.

Usage::

  nice python benchmarks/token_stats.py       # 8192 x {32768, 151936} x 896
  python benchmarks/token_stats.py --quick    # small, seconds
  python benchmarks/token_stats.py --vocab 32768 --dtype bfloat16 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from entropy_rl.core import token_stats as ts

MIB = 2**20


def _args() -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--tokens", type=int, default=8192)
  p.add_argument("--vocab", type=str, default="32768,151936",
                 help="comma-separated vocabulary sizes")
  p.add_argument("--hidden", type=int, default=896)
  p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--warmup", type=int, default=1)
  p.add_argument("--token-chunk", type=int, default=1024)
  p.add_argument("--vocab-chunk", type=int, default=4096)
  p.add_argument("--variants", type=str, default="chunked,naive")
  p.add_argument("--max-run-gib", type=float, default=16.0,
                 help="compile only a variant whose memory exceeds this")
  p.add_argument("--quick", action="store_true",
                 help="1024 tokens x 8192 vocab x 128 hidden, 2 repeats")
  a = p.parse_args()
  if a.quick:
    a.tokens, a.vocab, a.hidden, a.repeats = 1024, "8192", 128, 2
  return a


def _problem(n: int, d: int, v: int, dtype):
  k = jax.random.split(jax.random.key(0), 5)
  h = jax.random.normal(k[0], (n, d), jnp.float32).astype(dtype)
  w = (jax.random.normal(k[1], (d, v), jnp.float32) * 3.0 / math.sqrt(d)
       ).astype(dtype)
  y = jax.random.randint(k[2], (n,), 0, v)
  a = jax.random.normal(k[3], (n,))
  b = jax.random.normal(k[4], (n,))
  return h, w, y, a, b


def _loss_and_grad(stats_fn):
  def loss(h, w, y, a, b):
    s = stats_fn(h, w, y)
    return jnp.sum(a * s["logp"] + b * s["entropy"])

  return jax.value_and_grad(loss, (0, 1))


def _rel(x, y) -> float:
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  return float(np.max(np.abs(x - y)) / (np.max(np.abs(y)) + 1e-30))


def _measure(name, fn, inputs, cfg, args):
  """Compiles, reports memory, runs (if it fits) and times ``fn``."""
  t0 = time.perf_counter()
  compiled = jax.jit(fn).lower(*inputs).compile()
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  total = (mem.temp_size_in_bytes + mem.argument_size_in_bytes
           + mem.output_size_in_bytes)
  rec = dict(cfg, variant=name, compile_s=round(compile_s, 2),
             temp_mib=round(mem.temp_size_in_bytes / MIB, 1),
             argument_mib=round(mem.argument_size_in_bytes / MIB, 1),
             output_mib=round(mem.output_size_in_bytes / MIB, 1))
  result = None
  if total > args.max_run_gib * 2**30:
    rec.update(ran=False, skip_reason=(
        f"needs {total / 2**30:.1f} GiB > --max-run-gib {args.max_run_gib}: "
        "memory from memory_analysis (compile only), not run"))
  else:
    times, cpu = [], []
    for i in range(args.warmup + args.repeats):
      t0, c0 = time.perf_counter(), time.process_time()
      result = jax.block_until_ready(compiled(*inputs))
      if i >= args.warmup:
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    rec.update(ran=True, times_s=[round(t, 3) for t in times],
               median_s=round(statistics.median(times), 3),
               median_cpu_s=round(statistics.median(cpu), 3))
  print(json.dumps(rec), flush=True)
  return rec, result


def main() -> None:
  args = _args()
  dtype = jnp.dtype(args.dtype)
  variants = {
      "chunked": lambda h, w, y: ts.token_stats(
          h, w, y, token_chunk=args.token_chunk, vocab_chunk=args.vocab_chunk),
      "naive": ts.token_stats_naive,
  }
  names = [v for v in args.variants.split(",") if v]
  for v in (int(x) for x in args.vocab.split(",")):
    inputs = _problem(args.tokens, args.hidden, v, dtype)
    cfg = dict(bench="token_stats_logp_entropy_fwd_bwd",
               backend=jax.default_backend(),
               device=jax.devices()[0].device_kind,
               jax=jax.__version__,
               tokens=args.tokens, vocab=v, hidden=args.hidden,
               dtype=args.dtype, token_chunk=args.token_chunk,
               vocab_chunk=args.vocab_chunk,
               nv_f32_mib=round(args.tokens * v * 4 / MIB, 1))
    recs, results = {}, {}
    for name in names:
      recs[name], results[name] = _measure(
          name, _loss_and_grad(variants[name]), inputs, cfg, args)
    if {"chunked", "naive"} <= set(recs):
      c, n = recs["chunked"], recs["naive"]
      summary = dict(cfg, variant="summary",
                     temp_ratio=round(c["temp_mib"] / max(n["temp_mib"], 1e-9),
                                      4))
      if c["ran"] and n["ran"]:
        summary["time_ratio"] = round(c["median_s"] / n["median_s"], 3)
        summary["cpu_time_ratio"] = round(
            c["median_cpu_s"] / max(n["median_cpu_s"], 1e-9), 3)
        (lc, gc), (ln, gn) = results["chunked"], results["naive"]
        summary.update(rel_err_loss=abs(float(lc) - float(ln)) / abs(float(ln)),
                       rel_err_grad_h=_rel(gc[0], gn[0]),
                       rel_err_grad_w=_rel(gc[1], gn[1]))
      print(json.dumps(summary), flush=True)
    del results


if __name__ == "__main__":
  main()
