"""GRPO: group-normalised advantages, PPO clip 0.2, seq-mean-token-mean.

Shao et al. 2024, https://arxiv.org/abs/2402.03300.

  python -m experiments.main --config=experiments/configs/grpo.py:tiny \
      --workdir=runs/grpo
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = base.get_config(arg)
  c.objective = ml_collections.ConfigDict(dict(kind="grpo", eps=0.2))
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("advantages",),
      advantages=dict(kind="grpo_advantages")))
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  del arg
  return [{"optimizer.learning_rate": lr, "seed": s}
          for lr in (1e-4, 3e-4) for s in (0, 1)]
