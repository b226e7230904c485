"""EM-RL: entropy minimisation as the reward, RLOO advantages.

Agarwal et al. 2025, https://arxiv.org/abs/2505.15134.

  python -m experiments.main --config=experiments/configs/em_rl.py:tiny \
      --workdir=runs/em_rl
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = base.get_config(arg)
  c.objective = ml_collections.ConfigDict(dict(kind="reinforce"))
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("em_rl",),
      em_rl=dict(kind="em_rl", variant="token")))
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  del arg
  return [{"regularizers.em_rl.variant": v} for v in ("token", "trajectory")]
