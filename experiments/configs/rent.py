"""RENT: negative entropy as the only reward (unsupervised).

Prabhudesai et al. 2025, https://arxiv.org/abs/2505.22660.

  python -m experiments.main --config=experiments/configs/rent.py:tiny \
      --workdir=runs/rent
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = base.get_config(arg)
  c.objective = ml_collections.ConfigDict(dict(kind="grpo", eps=0.2))
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("rent",),
      rent=dict(kind="rent")))
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  del arg
  return [{"seed": s} for s in (0, 1)]
