"""Dr. GRPO: no std normalisation, constant 1/(G·L_max) normaliser.

Liu et al. 2025, "Understanding R1-Zero-Like Training: A Critical
Perspective", https://arxiv.org/abs/2503.20783 (§3, Dr. GRPO);
methods_rlvr.md §1.2: advantages R − mean (no std), loss
Σ_{i,t} ℓ / (G·L_max) (seq-mean-token-sum-norm, L_max = the response
budget). Clip ε: not stated in the spec; we use GRPO's 0.2 (no dual clip).

  python -m experiments.main --config=experiments/configs/dr_grpo.py:tiny \
      --workdir=runs/dr_grpo
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = base.get_config(arg)
  c.objective = ml_collections.ConfigDict(dict(
      kind="dr_grpo", eps=0.2, l_max=-1))
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("advantages",),
      advantages=dict(kind="grpo_advantages", normalize_std=False)))
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  del arg
  return [{"seed": s} for s in (0, 1, 2)]
