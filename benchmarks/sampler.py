"""Sampler throughput: entropy_rl.sampling vs transformers' ``generate``.

Builds a randomly initialised entropy_rl Qwen2-architecture decoder with the
dimensions of a preset of ``../shared/bench/hf_peer.py`` and times
``entropy_rl.sampling`` rollouts (prefill + KV-cache decode, categorical
sampling at T = 1, every row forced to run all ``--new-tokens`` steps: no end
token, no early stop), and runs the peer script with the same dimensions in
a subprocess (first, so the two never share the device) and reports the
ratio. Prints one JSON object per line; the last
one is the summary.

  python benchmarks/sampler.py                       # CPU: peer's tiny preset
  python benchmarks/sampler.py --preset qwen2.5-0.5b --batch 256 \\
      --prompt-len 128 --new-tokens 256 --dtype bfloat16   # GPU

Timing: ``compile_s`` is the ahead-of-time lower + compile of the whole
rollout program; ``seconds`` is the median of ``--repeats`` timed calls
after ``--warmup`` calls (like the peer: prefill + decode, B·N new tokens).
``peak_memory_bytes`` is the device allocator's peak on accelerators and the
process's peak RSS on CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.presets import DEFAULT_PEER  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks.presets import PRESETS  # pylint: disable=g-import-not-at-top,wrong-import-position


def parse_args(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
  for name in ("vocab", "hidden", "layers", "heads", "kv-heads",
               "intermediate"):
    ap.add_argument("--" + name, type=int, default=0,
                    help="override the preset's value")
  ap.add_argument("--batch", type=int, default=64,
                  help="prompts B (rows: B x --num-samples)")
  ap.add_argument("--num-samples", type=int, default=1,
                  help="samples per prompt n (GRPO's group size); the peer "
                  "generates for B·n rows, as its num_return_sequences "
                  "does")
  ap.add_argument("--share-prompt", choices=["auto", "on", "off"],
                  default="auto", help="decode against one shared prompt "
                  "cache (sampling.sample(share_prompt=)); auto: for n > 1")
  ap.add_argument("--buckets", type=int, default=0,
                  help="decode stretches over a growing cache "
                  "(sampling.sample(num_buckets=)); 0: the platform default "
                  "(4 on CPU, 1 on accelerators)")
  ap.add_argument("--prompt-len", type=int, default=32)
  ap.add_argument("--new-tokens", type=int, default=64)
  ap.add_argument("--warmup", type=int, default=1)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                  help="default: bfloat16 on GPU, float32 on CPU")
  ap.add_argument("--cache-dtype", choices=["float32", "bfloat16"],
                  default=None, help="default: the compute dtype")
  ap.add_argument("--block-size", type=int, default=16)
  ap.add_argument("--draw", choices=["cdf", "gumbel"], default="cdf")
  ap.add_argument("--scan-layers", action="store_true",
                  help="stack the layers and run them with lax.scan")
  ap.add_argument("--peer", default=str(DEFAULT_PEER),
                  help="path of hf_peer.py (default ../shared/bench/)")
  ap.add_argument("--no-peer", action="store_true")
  ap.add_argument("--profile", default="",
                  help="trace one more rollout into this folder and print "
                  "its busiest kernels (benchmarks/profiling.py)")
  ap.add_argument("--peer-last", action="store_true",
                  help="run the peer after our sampler (default: before, so "
                  "the two never share the device)")
  return ap.parse_args(argv)


def dims(args):
  v, d, l, h, kv, ff, tied = PRESETS[args.preset]
  return dict(vocab_size=args.vocab or v, hidden_size=args.hidden or d,
              num_layers=args.layers or l, num_heads=args.heads or h,
              num_kv_heads=args.kv_heads or kv,
              intermediate_size=args.intermediate or ff,
              tie_word_embeddings=tied)


def peak_memory_bytes(device) -> int:
  stats = None
  try:
    stats = device.memory_stats()
  except Exception:  # pylint: disable=broad-except
    pass
  if stats and "peak_bytes_in_use" in stats:
    return int(stats["peak_bytes_in_use"])
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def bench_ours(args):
  """Times entropy_rl's sampler; returns the JSON record."""
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx
  from entropy_rl import models
  from entropy_rl import sampling

  device = jax.devices()[0]
  on_cpu = device.platform == "cpu"
  dtype = args.dtype or ("float32" if on_cpu else "bfloat16")
  cfg = models.DecoderConfig(
      **dims(args), qkv_bias=True, rope_theta=10_000.0, rms_norm_eps=1e-6,
      max_position_embeddings=max(2048, args.prompt_len + args.new_tokens),
      dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(dtype),
      scan_layers=args.scan_layers)
  model = models.Decoder(cfg, rngs=nnx.Rngs(0))
  fns, params = models.as_functions(model)
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))

  b, p, n = args.batch, args.prompt_len, args.new_tokens
  rs = np.random.RandomState(1)
  prompts = jnp.asarray(rs.randint(0, cfg.vocab_size, (b, p)), jnp.int32)
  mask = jnp.ones((b, p), bool)
  sampler = sampling.make_sampler(
      fns, max_new_tokens=n,
      sampling=sampling.SamplingMethod((), args.draw), end_ids=(),
      num_samples=args.num_samples,
      settings=sampling.DecodeSettings(
          block_size=args.block_size, early_stop=False,
          share_prompt={"auto": None, "on": True,
                        "off": False}[args.share_prompt],
          num_buckets=args.buckets or None,
          cache_dtype=(jnp.dtype(args.cache_dtype) if args.cache_dtype
                       else None)))
  cache = sampler.init_cache(b, p)
  key = jax.random.key(0)

  t0 = time.perf_counter()
  compiled = sampler.generate.lower(params, prompts, mask, key, cache, (),
                                    ()).compile()
  compile_s = time.perf_counter() - t0

  times, cpu = [], []
  out = None
  for i in range(args.warmup + args.repeats):
    k = jax.random.fold_in(key, i)
    t0, c0 = time.perf_counter(), time.process_time()
    out, cache = compiled(params, prompts, mask, k, cache, (), ())
    jax.block_until_ready((out, cache))
    if i >= args.warmup:
      times.append(time.perf_counter() - t0)
      cpu.append(time.process_time() - c0)
  rows = b * args.num_samples
  assert out.tokens.shape == (rows, n), out.tokens.shape
  profile = None
  if args.profile:
    from benchmarks import profiling  # pylint: disable=g-import-not-at-top
    profile = profiling.traced(
        lambda: compiled(params, prompts, mask, key, cache, (), ()),
        args.profile)
    profile["per_decode_step_ms"] = profile.get("busy_ms_per_call", 0) / n
  assert bool(out.mask.all()), "every row must run all steps"
  t = sorted(times)[len(times) // 2]
  return {
      "what": "sampler", "impl": "entropy_rl", "tokens_per_s": rows * n / t,
      "seconds": t, "seconds_all": times,
      "cpu_seconds": sorted(cpu)[len(cpu) // 2], "compile_s": compile_s,
      "peak_memory_bytes": peak_memory_bytes(device), "batch": b,
      "num_samples": args.num_samples, "share_prompt": args.share_prompt,
      "num_buckets": sampling.sampler._num_buckets(args.buckets or None),
      "prompt_len": p, "new_tokens": n, "block_size": args.block_size,
      "draw": args.draw, "dtype": dtype,
      "cache_dtype": args.cache_dtype or dtype, "params": n_params,
      "scan_layers": args.scan_layers, "device": device.platform,
      "device_name": getattr(device, "device_kind", str(device)),
      "jax": jax.__version__, "cpu_count": os.cpu_count(),
      "xla_flags": os.environ.get("XLA_FLAGS", ""), "profile": profile,
  }


def run_peer(args):
  """Runs hf_peer.py with the same dimensions; returns its JSON records."""
  d = dims(args)
  cmd = [sys.executable, args.peer, "--preset", args.preset,
         "--batch", str(args.batch * args.num_samples),
         "--prompt-len", str(args.prompt_len),
         "--new-tokens", str(args.new_tokens), "--warmup", str(args.warmup),
         "--repeats", str(args.repeats)]
  for flag, key in (("--vocab", "vocab_size"), ("--hidden", "hidden_size"),
                    ("--layers", "num_layers"), ("--heads", "num_heads"),
                    ("--kv-heads", "num_kv_heads"),
                    ("--intermediate", "intermediate_size")):
    cmd += [flag, str(d[key])]
  if args.dtype:
    cmd += ["--dtype", args.dtype]
  t0 = time.perf_counter()
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
  records = []
  for line in proc.stdout.splitlines():
    line = line.strip()
    if line.startswith("{"):
      records.append(json.loads(line))
  if proc.returncode:
    records.append({"what": "peer_error", "returncode": proc.returncode,
                    "stderr_tail": proc.stderr[-2000:]})
  for r in records:
    r.setdefault("wall_s_total", time.perf_counter() - t0)
  return records


def main(argv=None):
  args = parse_args(argv)
  peer_records = []
  if not args.no_peer and not args.peer_last:
    peer_records = run_peer(args)
  ours = bench_ours(args)
  print(json.dumps(ours), flush=True)
  if not args.no_peer and args.peer_last:
    peer_records = run_peer(args)
  for r in peer_records:
    print(json.dumps(r), flush=True)
  gen = [r for r in peer_records if r.get("what") == "generate"]
  summary = {"what": "summary", "preset": args.preset,
             "ours_tokens_per_s": ours["tokens_per_s"],
             "compile_s": ours["compile_s"],
             "peak_memory_bytes": ours["peak_memory_bytes"],
             "device_name": ours["device_name"]}
  if gen:
    summary["peer_tokens_per_s"] = gen[0]["tokens_per_s"]
    summary["ratio"] = ours["tokens_per_s"] / gen[0]["tokens_per_s"]
  print(json.dumps(summary), flush=True)


if __name__ == "__main__":
  main()
