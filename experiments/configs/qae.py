"""QAE: a group K-quantile baseline instead of the mean.

Quantile Advantage Estimation, https://arxiv.org/abs/2509.22611.

  python -m experiments.main --config=experiments/configs/qae.py:tiny \
      --workdir=runs/qae
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = base.get_config(arg)
  c.objective = ml_collections.ConfigDict(dict(kind="grpo", eps=0.2))
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("qae",),
      qae=dict(kind="qae", k=0.4)))
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  del arg
  return [{"regularizers.qae.k": k} for k in (0.2, 0.4, 0.6)]
