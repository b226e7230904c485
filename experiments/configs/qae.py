"""QAE: a group K-quantile baseline instead of the mean, on the DAPO recipe.

Wu et al. 2025, Quantile Advantage Estimation,
https://arxiv.org/abs/2509.22611; methods_rlvr.md §10(e) ("base pipeline:
DAPO-style"). The authors' code (github.com/junkangwu/QAE, README) changes
only the DAPO recipe (``recipe/qae/run_dapo_qwen3-8b-base.sh``: verl's
``recipe.dapo.main_dapo`` plus ``algorithm.quantile_k=0.4``), so the loss is
DAPO's: clip 0.2 / 0.28, dual clip c = 10, token-mean, dynamic sampling.
K = 0.4 (the scripts). Overlong reward shaping: see dapo.py; not added here.

  python -m experiments.main --config=experiments/configs/qae.py:tiny \
      --workdir=runs/qae
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = base.get_config(arg)
  c.objective = ml_collections.ConfigDict(dict(
      kind="dapo", eps_low=0.2, eps_high=0.28, dual_c=10.0))
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("qae",),
      qae=dict(kind="qae", k=0.4)))
  c.rollout.dynamic_sampling.update(enabled=True, max_rounds=3)
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  del arg
  return [{"regularizers.qae.k": k} for k in (0.2, 0.4, 0.6)]
