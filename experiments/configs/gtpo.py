"""GTPO: entropy-shaped token rewards and advantages.

Tan et al. 2025, GTPO/GRPO-S, https://arxiv.org/abs/2508.04349; values from
methods_rlvr.md §6(c, e) (third-party "paper-exact" implementation; no
official code): α₁ = 1, α₂ = 0.1, PPO clip ε = 0.2 on a token-mean over all
group tokens. The paper's baseline is DAPO, so ε_h = 0.28 and dynamic
sampling are likely but not stated in what we could read (spec: INFERRED);
we keep ε = 0.2 / 0.2 and no dynamic sampling. Dual clip: not stated; off.

  python -m experiments.main --config=experiments/configs/gtpo.py:tiny \
      --workdir=runs/gtpo
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = base.get_config(arg)
  c.objective = ml_collections.ConfigDict(dict(
      kind="grpo", eps=0.2, agg="token-mean"))
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("gtpo",),
      gtpo=dict(kind="gtpo", alpha1=1.0, alpha2=0.1)))
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  del arg
  return [{"regularizers.gtpo.alpha1": a} for a in (0.5, 1.0, 2.0)]
