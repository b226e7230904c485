"""KL-Cov: a KL penalty on the top-k covariance tokens, no clipping.

Cui et al. 2025, https://arxiv.org/abs/2505.22617 (k 0.2% at 7B; the
tiny preset uses 2%).

  python -m experiments.main --config=experiments/configs/kl_cov.py:tiny \
      --workdir=runs/kl_cov
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = base.get_config(arg)
  c.objective = ml_collections.ConfigDict(dict(kind="kl_cov"))
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("advantages", "kl_cov"),
      advantages=dict(kind="grpo_advantages"),
      kl_cov=dict(kind="kl_cov", k_fraction=0.02, beta=1.0)))
  if arg not in ("", "tiny"):
    c.regularizers.kl_cov.k_fraction = 0.002
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  del arg
  return [{"regularizers.kl_cov.k_fraction": k} for k in (0.005, 0.02, 0.05)]
