#!/usr/bin/env bash
# The GPU benchmark suite of entropy_rl (issue "performance on accelerators").
#
#   bash benchmarks/device_suite.sh [RESULTS_DIR]     # or RESULTS_DIR=... / $OUT
#   SUITE=options bash benchmarks/device_suite.sh [RESULTS_DIR]  # see below
#
# One prepared run, under 8 minutes on an H100: (a) the sampler, (b) the
# policy-gradient train step, (c) the chunked token statistics, each for the
# Qwen2.5-0.5B dimensions in bfloat16, and (d) the transformers peer with the
# same dimensions (run by (a) and (b) in the same invocation, before our
# code so the two never share the device). Every benchmark prints JSON; the
# JSON lines are also collected into RESULTS_DIR/results.jsonl, the whole
# output into RESULTS_DIR/log.txt.
#
# The GPU machine has no network. Python packages its image lacks are
# installed from wheels carried with the working tree, in WHEELS (default
# .devrun/whl; fill it here with
#   pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 \
#       --platform manylinux_2_17_x86_64 -d .devrun/whl grain array-record \
#       portpicker importlib_resources ml-collections tensorboardX gguf
# ). Do not carry jax or flax: the image's flax matches its jax (flax 0.12.8
# fails to import under jax 0.11.2). The peer script is PEER (default ../shared/bench/hf_peer.py; copy it
# into the tree, e.g. .devrun/hf_peer.py, when the tree travels alone).
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS_DIR=${1:-${RESULTS_DIR:-${OUT:-bench_results}}}
WHEELS=${WHEELS:-.devrun/whl}
PEER=${PEER:-../shared/bench/hf_peer.py}
[ -f "$PEER" ] || PEER=.devrun/hf_peer.py
PY=${PYTHON:-python3}
mkdir -p "$RESULTS_DIR"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

nvidia-smi -L 2>/dev/null | tee "$RESULTS_DIR/device.txt"
if ! $PY -c "import entropy_rl.models, entropy_rl.sampling, entropy_rl.training" \
    2>/dev/null && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  rm -rf /tmp/er_site  # a warm machine keeps the last call's packages
  $PY -m pip install -q --no-index --no-deps --target /tmp/er_site "$WHEELS"/*.whl
  export PYTHONPATH=$PYTHONPATH:/tmp/er_site
fi
$PY -c "import jax; print('jax', jax.__version__, jax.devices())" \
  | tee -a "$RESULTS_DIR/device.txt"

Q="--preset qwen2.5-0.5b --dtype bfloat16"
run() {  # [VAR=... ] run SECONDS NAME CMD... (env assignments apply to CMD)
  local t=$1 name=$2; shift 2
  echo "=== $name: $*"
  echo "=== $name: $*" >> "$RESULTS_DIR/log.txt"
  timeout "$t" "$@" 2>&1 | tee -a "$RESULTS_DIR/log.txt" \
    | grep '^{' | tee -a "$RESULTS_DIR/results.jsonl"
}
if [ "${SUITE:-main}" = options ]; then
  # SUITE=options (about 4 minutes): the sampler options measured on CPU
  # only so far -- decode stretches over a growing cache (--buckets, 1 by
  # default on accelerators) and one shared prompt cache for GRPO groups
  # (--share-prompt, on by default for n > 1) -- against their baselines.
  S="$PY benchmarks/sampler.py $Q --prompt-len 128 --new-tokens 256 --repeats 3"
  run 100 sampler_b256_buckets4 $S --batch 256 --no-peer --buckets 4
  run 60 sampler_b256_buckets1 $S --batch 256 --no-peer --buckets 1
  G="$PY benchmarks/sampler.py $Q --batch 32 --num-samples 8 --prompt-len 384 --new-tokens 256 --repeats 3"
  run 120 sampler_grpo_shared $G --peer "$PEER"
  run 60 sampler_grpo_repeated $G --share-prompt off --no-peer
  echo "results: $RESULTS_DIR/results.jsonl"
  exit 0
fi
# (a)+(d) sampler at B = 256 and 64 with the peer, the first with a kernel
# profile (trace in /tmp, summary as JSON); (b)+(d) train step at B = 16
# (with the 3-transform chain overhead and a profile) and 32; (c) token stats.
run 200 sampler_b256 $PY benchmarks/sampler.py $Q --batch 256 --prompt-len 128 \
  --new-tokens 256 --repeats 3 --peer "$PEER" --profile /tmp/prof_sampler
run 150 train_b16 $PY benchmarks/train_step.py $Q --batch 16 --prompt-len 128 \
  --new-tokens 256 --token-chunk 8192 --vocab-chunk 8192 --peak-tflops 989 \
  --peer "$PEER" --profile /tmp/prof_train
run 60 token_stats $PY benchmarks/token_stats.py --tokens 32768 --vocab 151936 \
  --hidden 896 --dtype bfloat16 --token-chunk 8192 --vocab-chunk 8192 \
  --repeats 5 --warmup 1 --max-run-gib 60
run 100 sampler_b64 $PY benchmarks/sampler.py $Q --batch 64 --prompt-len 128 \
  --new-tokens 256 --repeats 3 --peer "$PEER"
run 100 train_b32 $PY benchmarks/train_step.py $Q --batch 32 --prompt-len 128 \
  --new-tokens 256 --token-chunk 8192 --vocab-chunk 8192 --peak-tflops 989 \
  --peer "$PEER" --no-chain
# Variants (no peer): cuBLAS instead of XLA's Triton GEMMs.
NOTRITON="--xla_gpu_enable_triton_gemm=false"
XLA_FLAGS="$NOTRITON" run 60 sampler_b256_cublas $PY benchmarks/sampler.py $Q \
  --batch 256 --prompt-len 128 --new-tokens 256 --repeats 3 --no-peer
XLA_FLAGS="$NOTRITON" run 80 train_b16_cublas $PY benchmarks/train_step.py $Q \
  --batch 16 --prompt-len 128 --new-tokens 256 --token-chunk 8192 \
  --vocab-chunk 8192 --peak-tflops 989 --no-peer --no-chain
echo "results: $RESULTS_DIR/results.jsonl"
