"""EGSW: entropy-guided sequence weighting.

Vanlioglu 2025, https://arxiv.org/abs/2503.22456; methods_rlvr.md §12
(abstract and a summary only; no code found): weights
softmax_group((A + α·H)/P) on a GRPO base (DeepSeekMath's loss: clip 0.2,
seq-mean-token-mean). α and P: not stated in what we could read; we use
α = 0.5, P = 1.

  python -m experiments.main --config=experiments/configs/egsw.py:tiny \
      --workdir=runs/egsw
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = base.get_config(arg)
  c.objective = ml_collections.ConfigDict(dict(kind="grpo", eps=0.2))
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("advantages", "egsw"),
      advantages=dict(kind="grpo_advantages"),
      egsw=dict(kind="egsw", alpha=0.5, temperature=1.0)))
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  del arg
  return [{"regularizers.egsw.alpha": a} for a in (0.25, 0.5, 1.0)]
