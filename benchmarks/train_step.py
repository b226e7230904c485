"""Train-step throughput: one policy-gradient step vs transformers + torch.

Times ``entropy_rl.training.make_train_step`` -- forward over prompt +
response, chunked per-token log-probs and full-vocabulary entropy of the
response, ``policy_loss`` (clipped surrogate 0.2 / 0.28, token-mean),
backward, AdamW -- on a randomly initialised decoder with the dimensions of a
``../shared/bench/hf_peer.py`` preset, runs the peer's ``--train`` step with
the same dimensions in a subprocess (first, so the two never share the
device), and reports tokens/s, model FLOP utilisation and the ratio. It also
times the same step with a 3-transform chain (STEER + Clip-Cov + entropy
bonus) against plain GRPO (interleaved) and reports the chain's overhead.
Prints one JSON object per line; the last one is the summary.

  nice python benchmarks/train_step.py                 # CPU: tiny, 64 x 96
  python benchmarks/train_step.py --preset qwen2.5-0.5b --batch 64 \\
      --prompt-len 128 --new-tokens 256 --dtype bfloat16 --peak-tflops 989

FLOPs are ``6 · params · B · (P + N)`` for both (the peer's formula). On CPU
the peak is measured (a 2048³ float32 matmul, the best XLA does here) unless
``--peak-tflops`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
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
  ap.add_argument("--batch", type=int, default=64)
  ap.add_argument("--prompt-len", type=int, default=32)
  ap.add_argument("--new-tokens", type=int, default=64)
  ap.add_argument("--warmup", type=int, default=1)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--chain-repeats", type=int, default=5,
                  help="interleaved timed pairs for the chain overhead")
  ap.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                  help="compute dtype (default bfloat16 on GPU, float32 "
                  "on CPU)")
  ap.add_argument("--token-chunk", type=int, default=2048)
  ap.add_argument("--vocab-chunk", type=int, default=8192)
  ap.add_argument("--scan-layers", action="store_true")
  ap.add_argument("--peak-tflops", type=float, default=0.0)
  ap.add_argument("--peer", default=str(DEFAULT_PEER))
  ap.add_argument("--no-peer", action="store_true")
  ap.add_argument("--no-chain", action="store_true")
  ap.add_argument("--xla-options", default="",
                  help="XLA options of the jitted step, as the config's "
                  "train.xla_options: name=value,... (e.g. "
                  "xla_cpu_experimental_ynn_fusion_type= for XLA:CPU's own "
                  "GEMMs)")
  ap.add_argument("--profile", default="",
                  help="trace one more step into this folder and print its "
                  "busiest kernels (benchmarks/profiling.py)")
  return ap.parse_args(argv)


def emit(obj):
  print(json.dumps(obj), flush=True)
  return obj


def run_peer(args, dtype: str):
  cmd = [sys.executable, args.peer, "--preset", args.preset, "--batch",
         str(args.batch), "--prompt-len", str(args.prompt_len),
         "--new-tokens", str(args.new_tokens), "--warmup", str(args.warmup),
         "--repeats", str(args.repeats), "--train", "--no-generate",
         "--dtype", dtype]
  if args.peak_tflops:
    cmd += ["--peak-tflops", str(args.peak_tflops)]
  p = subprocess.run(cmd, capture_output=True, text=True, check=False)
  out = {}
  for line in p.stdout.splitlines():
    try:
      rec = json.loads(line)
    except json.JSONDecodeError:
      continue
    if rec.get("what") == "train_step":
      out = rec
    elif "peer" in rec:
      out.setdefault("head", rec)
  if not out:
    out = {"error": (p.stderr or p.stdout)[-2000:]}
  return out


def measured_peak_tflops(jax, jnp) -> float:
  """Best float32 matmul rate XLA reaches here (TFLOP/s)."""
  n = 2048
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = float("inf")
  for _ in range(3):
    t = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * n ** 3 / best / 1e12


def main(argv=None):
  args = parse_args(argv)
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel

  import entropy_rl as er  # pylint: disable=import-outside-toplevel
  from entropy_rl import builders  # pylint: disable=import-outside-toplevel
  from entropy_rl import models  # pylint: disable=import-outside-toplevel
  from entropy_rl import regularizers as R  # pylint: disable=import-outside-toplevel
  from entropy_rl.training import step as step_lib  # pylint: disable=import-outside-toplevel
  from entropy_rl.training import types  # pylint: disable=import-outside-toplevel

  platform = jax.devices()[0].platform
  dtype = args.dtype or ("float32" if platform == "cpu" else "bfloat16")
  peer = None
  if not args.no_peer:
    peer = emit({"peer": run_peer(args, dtype)})["peer"]

  v, d, layers, heads, kv, ff, tied = PRESETS[args.preset]
  cfg = models.DecoderConfig.tiny(
      vocab_size=v, hidden_size=d, num_layers=layers, num_heads=heads,
      num_kv_heads=kv, intermediate_size=ff, tie_word_embeddings=tied,
      dtype=getattr(jnp, dtype), param_dtype=jnp.float32,
      scan_layers=args.scan_layers)
  fns, params = models.as_functions(models.Decoder(cfg, rngs=nnx.Rngs(0)))
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  b, p, n = args.batch, args.prompt_len, args.new_tokens
  rng = np.random.default_rng(2)
  ro = types.Rollout(
      prompt=jnp.asarray(rng.integers(0, v, (b, p)), jnp.int32),
      prompt_mask=jnp.ones((b, p), bool),
      response=jnp.asarray(rng.integers(0, v, (b, n)), jnp.int32),
      response_mask=jnp.ones((b, n), jnp.float32),
      logp=jnp.zeros((b, n)), entropy=None,
      rewards=jnp.asarray(rng.integers(0, 2, b), jnp.float32),
      group_ids=jnp.asarray(np.arange(b) // 8, jnp.int32))
  opt = optax.adamw(1e-6)
  objective = er.ppo_clip(0.2, 0.28)  # the peer's surrogate, token-mean
  chains = {
      "grpo": er.named_chain(("advantages", R.grpo_advantages())),
      "steer+clip_cov+bonus": er.named_chain(
          ("advantages", R.grpo_advantages()),
          ("steer", R.steer(0.8, 1.2)),
          ("clip_cov", R.clip_cov(2e-4)),
          ("bonus", R.entropy_bonus(1e-3))),
  }

  xla_options = dict(builders.parse_xla_options(args.xla_options))

  def build(transform):
    step = step_lib.make_train_step(
        fns, objective, transform, opt, measure_entropy_change=False,
        token_chunk=args.token_chunk, vocab_chunk=args.vocab_chunk)
    jitted = jax.jit(step, donate_argnums=(0,),
                     compiler_options=xla_options or None)
    state = types.init_train_state(params, opt, transform, 0)
    state = jax.tree.map(jnp.copy, state)
    t = time.perf_counter()
    compiled = jitted.lower(state, ro).compile()
    return compiled, state, time.perf_counter() - t

  def timed(compiled, state):
    t = time.perf_counter()
    state, m = compiled(state, ro)
    jax.block_until_ready((state, m))
    return state, time.perf_counter() - t

  tokens = b * (p + n)
  flops = 6 * n_params * tokens
  peak = args.peak_tflops or (measured_peak_tflops(jax, jnp)
                              if platform == "cpu" else 0.0)
  compiled, state, compile_s = build(chains["grpo"])
  for _ in range(args.warmup):
    state, _ = timed(compiled, state)
  times = []
  for _ in range(args.repeats):
    state, dt = timed(compiled, state)
    times.append(dt)
  t = statistics.median(times)
  ours = emit({
      "best_seconds": min(times), "tokens_per_s_best": tokens / min(times),
      "what": "train_step", "impl": "entropy_rl", "device": platform,
      "device_name": jax.devices()[0].device_kind, "dtype": dtype,
      "params": n_params, "preset": args.preset, "batch": b,
      "seq_len": p + n, "tokens_per_s": tokens / t, "seconds": t,
      "compile_s": compile_s, "model_tflops_per_s": flops / t / 1e12,
      "peak_tflops": peak, "mfu": flops / t / 1e12 / peak if peak else None,
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "xla_options": args.xla_options})

  if args.profile:
    from benchmarks import profiling  # pylint: disable=import-outside-toplevel
    box = [state]

    def one_step():
      box[0], metrics = compiled(box[0], ro)
      return box[0], metrics
    emit(profiling.traced(one_step, args.profile))
    state = box[0]

  summary = {"what": "summary", "tokens_per_s": ours["tokens_per_s"],
             "mfu": ours["mfu"], "peak_tflops": peak}
  if peer and "tokens_per_s" in peer:
    summary["peer_tokens_per_s"] = peer["tokens_per_s"]
    summary["speedup_vs_peer"] = ours["tokens_per_s"] / peer["tokens_per_s"]
    summary["peer_mfu"] = (peer["model_tflops_per_s"] / peak if peak
                           else None)

  if not args.no_chain:
    runs = {name: build(tr)[:2] for name, tr in chains.items()}
    states = {name: r[1] for name, r in runs.items()}
    for name in runs:  # warm-up
      states[name], _ = timed(runs[name][0], states[name])
    samples = {name: [] for name in runs}
    for _ in range(args.chain_repeats):
      for name in runs:
        states[name], dt = timed(runs[name][0], states[name])
        samples[name].append(dt)
    med = {name: statistics.median(s) for name, s in samples.items()}
    best = {name: min(s) for name, s in samples.items()}
    plain, chain = "grpo", "steer+clip_cov+bonus"
    summary["chain"] = emit({
        "what": "chain_overhead", "plain_seconds": med[plain],
        "chain_seconds": med[chain],
        "overhead_fraction": med[chain] / med[plain] - 1.0,
        # Best-of-N: robust when other processes share the machine (they
        # only ever add time).
        "plain_best_seconds": best[plain], "chain_best_seconds": best[chain],
        "overhead_fraction_best": best[chain] / best[plain] - 1.0,
        "plain_samples": samples[plain], "chain_samples": samples[chain]})
    summary["chain_overhead_fraction"] = med[chain] / med[plain] - 1.0
    summary["chain_overhead_fraction_best"] = best[chain] / best[plain] - 1.0
  emit(summary)
  return summary


if __name__ == "__main__":
  main()
