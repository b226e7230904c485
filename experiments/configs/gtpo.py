"""GTPO: entropy-shaped token rewards and advantages.

Tan et al. 2025, GTPO/GRPO-S, https://arxiv.org/abs/2508.04349.

  python -m experiments.main --config=experiments/configs/gtpo.py:tiny \
      --workdir=runs/gtpo
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = base.get_config(arg)
  c.objective = ml_collections.ConfigDict(dict(kind="grpo", eps=0.2))
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("gtpo",),
      gtpo=dict(kind="gtpo", alpha1=1.0, alpha2=0.1)))
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  del arg
  return [{"regularizers.gtpo.alpha1": a} for a in (0.5, 1.0, 2.0)]
