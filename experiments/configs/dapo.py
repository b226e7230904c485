"""DAPO: clip-higher (0.2/0.28), dual clip 10, token-mean, overlong shaping.

Yu et al. 2025, https://arxiv.org/abs/2503.14476. Dynamic sampling
(dropping all-tied groups) is reported as `tied_groups`, not applied.

  python -m experiments.main --config=experiments/configs/dapo.py:tiny \
      --workdir=runs/dapo
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = base.get_config(arg)
  c.objective = ml_collections.ConfigDict(dict(
      kind="dapo", eps_low=0.2, eps_high=0.28, dual_c=10.0))
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("overlong", "advantages"),
      advantages=dict(kind="grpo_advantages"),
      overlong=dict(kind="overlong_reward_shaping", l_max=-1, l_cache=2,
                    coef=1.0)))
  c.regularizers.overlong.l_cache = 2 if arg in ("", "tiny") else 8
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  del arg
  return [{"objective.eps_high": e} for e in (0.2, 0.28, 0.35)]
