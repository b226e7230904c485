"""KL-Cov: a KL penalty on the top-k covariance tokens, no clipping.

Cui et al. 2025, "The Entropy Mechanism of Reinforcement Learning for
Reasoning Language Models", https://arxiv.org/abs/2505.22617; values from
methods_rlvr.md §3(e) (authors' code
github.com/PRIME-RL/Entropy-Mechanism-of-RL, ``recipe/dapo/7b_kl_cov.sh``):
KL-Cov's own objective (−A·ρ, no PPO clip, token-mean) plus β·|ℓ − ℓ°| on
the top k = 0.2% of tokens by covariance (7B; 0.02% at 32B), β = 1, GRPO
advantages, no KL / entropy terms. Dynamic sampling: stated for the
Clip-Cov script only in the spec; off here.

Toy value: 2e-3 of the tiny preset's ~400-token mini-batches is max(⌊k·N⌋,
1) = 1 token; the tiny size uses k = 2e-2. ``:paper`` (and the smollm2 /
0.5b sizes) use 2e-3.

  python -m experiments.main --config=experiments/configs/kl_cov.py:tiny \
      --workdir=runs/kl_cov
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = base.get_config(arg)
  size, paper = base.parse_arg(arg)
  c.objective = ml_collections.ConfigDict(dict(kind="kl_cov",
                                               agg="token-mean"))
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("advantages", "kl_cov"),
      advantages=dict(kind="grpo_advantages"),
      kl_cov=dict(kind="kl_cov", k_fraction=0.02, beta=1.0)))
  if paper or size != "tiny":
    c.regularizers.kl_cov.k_fraction = 0.002
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  del arg
  return [{"regularizers.kl_cov.k_fraction": k} for k in (0.005, 0.02, 0.05)]
