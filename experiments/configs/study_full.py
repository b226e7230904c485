r"""THE METHOD STUDY: ten RLVR methods × three seeds on the default task.

Every method runs on the default experiment's task and budget (2-digit
arithmetic, 0.1M-parameter decoder, SFT warm-up shared per seed, 300 RL
steps of 64 prompts x 8 samples, lr 1e-4, 2 epochs x 4 mini-batches) with
held-out pass@k for k up to 16 (16 samples per prompt). One run takes
about 2 minutes on 2 idle CPU cores, so the 30 runs take about an hour in
sequence; ``--quick`` runs GRPO, Clip-Cov and KL-Cov for 2 seeds and 60
steps (about 6 minutes).

  python -m experiments.study --config=experiments/configs/study_full.py \
      --workdir=runs/study [--parallel=2]
  python -m experiments.study --config=experiments/configs/study_full.py \
      --workdir=runs/study --quick
"""

import ml_collections

_METHODS = ("grpo", "clip_cov", "kl_cov", "steer", "aepo", "dapo", "forking",
            "grpo_lambda", "rent", "em_rl")


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  size = arg or "tiny"
  c = ml_collections.ConfigDict()
  # The task and budget: these leaves of `base` are set on every method.
  c.base = f"experiments/configs/default.py:{size}"
  c.budget_keys = ("task", "data", "sft", "train.num_steps", "train.epochs",
                   "train.minibatches", "optimizer.learning_rate",
                   "sampling.max_new_tokens", "sampling.temperature")
  # Overrides of every method after the budget: held-out eval with pass@k
  # up to k = 16 (needs eval.num_samples >= 16).
  c.shared = ml_collections.ConfigDict({
      "eval": dict(every=10, num_samples=16, ks=(1, 2, 4, 8, 16)),
      "log": dict(progress=False)})
  # name -> experiment config path[:arg] (+ its own overrides).
  c.methods = ml_collections.ConfigDict({
      m: dict(config=f"experiments/configs/{m}.py:{size}", overrides={})
      for m in _METHODS})
  c.seeds = (0, 1, 2)
  # process: one experiments.main per (method, seed); vmap: one per method
  # with config.num_seeds (consecutive seeds, one shared SFT).
  c.seed_mode = "process"
  c.share_sft = True  # runs with equal warm-up settings share one SFT
  c.parallel = 1  # processes at a time
  c.collapse_fraction = 0.1  # collapse: entropy < 10% of its initial value
  c.final_window = 5  # "final" train metrics: mean of the last 5 steps
  # Claim thresholds (experiments/claims.py).
  c.claims = ml_collections.ConfigDict(dict(
      law_y="reward",  # y of R = -a e^H + b (an rl key or an eval/ key)
      law_r2=0.5,  # R² needed for the fit to count
      aepo_tolerance=0.1,  # nats around H* of the entropy proxy
      steer_band=0.5,  # max |H_t - H_0| / H_0
      match_margin=0.05,  # accuracy: "matches" = not worse by more
      length_key="eval/response_length"))
  # --quick: fewer methods, seeds and steps (in <workdir>/quick).
  c.quick = ml_collections.ConfigDict(dict(
      methods=("grpo", "clip_cov", "kl_cov"), seeds=(0, 1),
      shared=dict(train=dict(num_steps=60))))
  return c
