"""80/20: keep the policy gradient of the top-20% entropy tokens only.

Wang et al. 2025, https://arxiv.org/abs/2506.01939.

  python -m experiments.main --config=experiments/configs/forking.py:tiny \
      --workdir=runs/forking
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = base.get_config(arg)
  c.objective = ml_collections.ConfigDict(dict(
      kind="dapo", eps_low=0.2, eps_high=0.28, dual_c=10.0))
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("advantages", "forking"),
      advantages=dict(kind="grpo_advantages"),
      forking=dict(kind="forking_tokens", top_fraction=0.2)))
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  del arg
  return [{"regularizers.forking.top_fraction": f} for f in (0.1, 0.2, 0.5)]
