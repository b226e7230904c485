"""STEER: stop-gradient token weights from each token's first-order
entropy change, on the DAPO surrogate.

STEER (methods_rlvr.md §2(e); authors' code github.com/zz-haooo/STEER),
reference ``run/run_linear.sh``: w in [0.8, 1.2],
linear mode, DAPO objective, statistics per 8-row micro-batch.

  python -m experiments.main --config=experiments/configs/steer.py:tiny \
      --workdir=runs/steer
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = base.get_config(arg)
  c.objective = ml_collections.ConfigDict(dict(
      kind="dapo", eps_low=0.2, eps_high=0.28, dual_c=10.0))
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("advantages", "steer"),
      advantages=dict(kind="grpo_advantages"),
      steer=dict(kind="steer", w_min=0.8, w_max=1.2, mode="linear")))
  c.train.stat_scope = 8
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  del arg
  return [{"regularizers.steer.w_min": w, "regularizers.steer.w_max": 2 - w}
          for w in (0.9, 0.8, 0.6)]
