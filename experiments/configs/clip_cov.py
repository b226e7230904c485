"""Clip-Cov: detach a random subset of high-covariance tokens.

Cui et al. 2025, "The Entropy Mechanism of Reinforcement Learning for
Reasoning Language Models", https://arxiv.org/abs/2505.22617; values from
methods_rlvr.md §3(e) (authors' code
github.com/PRIME-RL/Entropy-Mechanism-of-RL, ``recipe/dapo/7b_clip_cov.sh``):
Clip-Cov's own objective (PPO surrogate with the selected tokens detached,
token-mean, no dual clip), token fraction r = 2e-4, covariance band
ω = (1, 5), PPO clip ε_l = ε_h = 1 (so clip(ρ, 0, 2): Clip-Cov is the only
clip that bites), GRPO advantages, dynamic sampling.

Toy value: r = 2e-4 of the tiny preset's ~400-token mini-batches selects
max(⌊r·N⌋, 1) = 1 token, a different method from "2 in 10,000"; the tiny
size uses r = 2e-2. ``:paper`` (and the smollm2 / 0.5b sizes) use 2e-4.

  python -m experiments.main --config=experiments/configs/clip_cov.py:tiny \
      --workdir=runs/clip_cov
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = base.get_config(arg)
  size, paper = base.parse_arg(arg)
  c.objective = ml_collections.ConfigDict(dict(
      kind="clip_cov", eps_low=1.0, eps_high=1.0, agg="token-mean"))
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("advantages", "clip_cov"),
      advantages=dict(kind="grpo_advantages"),
      clip_cov=dict(kind="clip_cov", ratio=0.02, cov_low=1.0, cov_high=5.0)))
  if paper or size != "tiny":
    c.regularizers.clip_cov.ratio = 2e-4
  c.rollout.dynamic_sampling.update(enabled=True, max_rounds=3)
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  del arg
  return [{"regularizers.clip_cov.ratio": r} for r in (0.005, 0.02, 0.05)]
