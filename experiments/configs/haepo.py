"""HAEPO: a Plackett-Luce return objective with entropy and KL terms.

Trivedi et al. 2025, https://arxiv.org/abs/2508.18884; methods_rlvr.md
§14 (abstract and a review only; loss INFERRED): Plackett-Luce weights
softmax(Σ_t ℓ) over a group times z-scored returns, plus an entropy bonus
and a KL to the previous policy. Their coefficients: not stated in what we
could read; we use coef 1, entropy_coef 0, kl_coef 0 (token-mean for the
entropy term).

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
