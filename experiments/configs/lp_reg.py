"""Lp-Reg: regularise toward the min-p proxy on low-probability tokens.

Huang et al. 2025, https://arxiv.org/abs/2510.03222; values from
methods_rlvr.md §8(e) (authors' dev code github.com/CarlanLark/Lp-Reg-dev,
``recipe/lp_reg/*.sh``): min-p κ = 0.02, ρ⁻ = 1% (Qwen3-14B; 0.5% at 32B),
ρ⁺ = 0, β = 1, Lp-Reg's own objective with clip (1, 9) (effectively off),
no dual clip, token-mean, GRPO advantages, no dynamic sampling. ρ⁻ = 1%
selects tokens only with ≥ 200 negative tokens per scope; the tiny batch
(64 × 8 × 5 tokens, stat_scope 0) has about 1000.

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
