"""GRPO with an entropy bonus −c·H (verl entropy_coeff).

Williams & Peng 1991; Mnih et al. 2016, https://arxiv.org/abs/1602.01783
(entropy weight β = 0.01 in its experiments); methods_rlvr.md §1.5: the
bonus −c·agg(H_θ) uses the PG loss's aggregation (GRPO's here). The RLVR
recipes read in the spec leave verl's entropy_coeff at 0 (EM-RL: 0.001).

  python -m experiments.main \
      --config=experiments/configs/entropy_bonus.py:tiny \
      --workdir=runs/entropy_bonus
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = base.get_config(arg)
  c.objective = ml_collections.ConfigDict(dict(kind="grpo", eps=0.2))
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("advantages", "bonus"),
      advantages=dict(kind="grpo_advantages"),
      bonus=dict(kind="entropy_bonus", coef=0.01)))
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  del arg
  return [{"regularizers.bonus.coef": c} for c in (0.001, 0.01, 0.03)]
