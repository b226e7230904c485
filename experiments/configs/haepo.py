"""HAEPO: a Plackett-Luce return objective with entropy and KL terms.

HAEPO (methods_rlvr.md).

  python -m experiments.main --config=experiments/configs/haepo.py:tiny \
      --workdir=runs/haepo
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = base.get_config(arg)
  c.objective = ml_collections.ConfigDict(dict(kind="haepo"))
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("haepo",),
      haepo=dict(kind="haepo", coef=1.0, entropy_coef=0.0)))
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  del arg
  return [{"regularizers.haepo.entropy_coef": c} for c in (0.0, 0.01)]
