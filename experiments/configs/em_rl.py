"""EM-RL: entropy minimisation as the reward, RLOO advantages.

Agarwal et al. 2025, "The Unreasonable Effectiveness of Entropy
Minimization in LLM Reasoning", https://arxiv.org/abs/2505.15134; values
from methods_rlvr.md §13b(e) (authors' code github.com/chotkrin/EM_PT,
``EM-RL/verl/examples/EM_RL_Trainers/*.sh``): reward −mean H° (token
variant) with RLOO advantages, PPO clip ε = 0.2 (no clip-higher),
token-mean, KL loss 0.001 (low_var_kl = k3) and verl's default
entropy_coeff = 0.001 left on (a small opposing entropy bonus). Dual clip:
not in the spec; off. n = 4 in the scripts; data.num_samples here.

  python -m experiments.main --config=experiments/configs/em_rl.py:tiny \
      --workdir=runs/em_rl
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = base.get_config(arg)
  c.objective = ml_collections.ConfigDict(dict(
      kind="ppo_clip", eps_low=0.2, eps_high=0.2, agg="token-mean"))
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("em_rl", "kl", "bonus"),
      em_rl=dict(kind="em_rl", variant="token"),
      kl=dict(kind="kl_penalty", coef=0.001, estimator="k3"),
      bonus=dict(kind="entropy_bonus", coef=0.001)))
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  del arg
  return [{"regularizers.em_rl.variant": v} for v in ("token", "sequence")]
