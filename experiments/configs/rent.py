"""RENT: negative entropy as the only reward (unsupervised).

Prabhudesai et al. 2025, https://arxiv.org/abs/2505.22660; values from
methods_rlvr.md §13a(e) (authors' code github.com/satrams/rent-rl,
``verl/trainer/config/exps/entropy.yaml``): GRPO advantages, PPO clip
ε = 0.2, token-mean, KL loss 0.001 (low_var_kl = k3) to the reference (here
the SFT policy). Dual clip: not in the spec; off. The format option
(entropy_base = 7 when no answer is extracted) is off, as the base tasks
have no answer-extraction flag; n = 5 in the paper, data.num_samples here.

  python -m experiments.main --config=experiments/configs/rent.py:tiny \
      --workdir=runs/rent
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = base.get_config(arg)
  c.objective = ml_collections.ConfigDict(dict(
      kind="grpo", eps=0.2, agg="token-mean"))
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("rent", "kl"),
      rent=dict(kind="rent"),
      kl=dict(kind="kl_penalty", coef=0.001, estimator="k3")))
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  del arg
  return [{"seed": s} for s in (0, 1)]
