"""GRPO with an entropy coefficient driven toward a target entropy.

Skywork-OR1, https://arxiv.org/abs/2505.22312.

  python -m experiments.main \
      --config=experiments/configs/adaptive_entropy.py:tiny \
      --workdir=runs/adaptive_entropy
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = base.get_config(arg)
  c.objective = ml_collections.ConfigDict(dict(kind="grpo", eps=0.2))
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("advantages", "adaptive"),
      advantages=dict(kind="grpo_advantages"),
      adaptive=dict(kind="adaptive_entropy", target=0.6, init_coef=0.0,
                    lr=0.005, max_coef=0.05)))
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  del arg
  return [{"regularizers.adaptive.target": t} for t in (0.3, 0.6, 1.0)]
