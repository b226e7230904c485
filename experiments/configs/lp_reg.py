"""Lp-Reg: regularise toward the min-p proxy on low-probability tokens.

Huang et al. 2025, https://arxiv.org/abs/2510.03222.

  python -m experiments.main --config=experiments/configs/lp_reg.py:tiny \
      --workdir=runs/lp_reg
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = base.get_config(arg)
  c.objective = ml_collections.ConfigDict(dict(
      kind="lp_reg", eps_low=1.0, eps_high=9.0))
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("advantages", "lp_reg"),
      advantages=dict(kind="grpo_advantages"),
      lp_reg=dict(kind="lp_reg", kappa=0.02, neg_fraction=0.01,
                  beta=1.0)))
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  del arg
  return [{"regularizers.lp_reg.beta": b} for b in (0.5, 1.0, 2.0)]
