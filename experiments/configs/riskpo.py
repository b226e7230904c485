"""RiskPO: bundled rewards with a mixed value-at-risk objective.

Ren et al. 2025, RiskPO, https://arxiv.org/abs/2510.00911.

  python -m experiments.main --config=experiments/configs/riskpo.py:tiny \
      --workdir=runs/riskpo
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = base.get_config(arg)
  c.objective = ml_collections.ConfigDict(dict(kind="grpo", eps=0.2))
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("riskpo",),
      riskpo=dict(kind="riskpo", group_size=0, bundle_size=4,
                  w_mix=1.5)))
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  del arg
  return [{"regularizers.riskpo.w_mix": w} for w in (1.0, 1.5)]
