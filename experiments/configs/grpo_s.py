"""GRPO-S: sequence-level entropy-shaped advantages.

Tan et al. 2025, GTPO/GRPO-S, https://arxiv.org/abs/2508.04349; values from
methods_rlvr.md §6(c, e) (GRPO-S itself INFERRED there by analogy with
GTPO): α₁ = 1, α₂ = 0.1, PPO clip ε = 0.2, token-mean. As for GTPO, the
DAPO-style ε_h = 0.28 / dynamic sampling of the paper's baseline are not
stated in what we could read; we keep ε = 0.2 / 0.2. Dual clip: off.

  python -m experiments.main --config=experiments/configs/grpo_s.py:tiny \
      --workdir=runs/grpo_s
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = base.get_config(arg)
  c.objective = ml_collections.ConfigDict(dict(
      kind="grpo", eps=0.2, agg="token-mean"))
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("grpo_s",),
      grpo_s=dict(kind="grpo_s", alpha1=1.0, alpha2=0.1)))
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  del arg
  return [{"regularizers.grpo_s.alpha1": a} for a in (0.5, 1.0, 2.0)]
