"""SIREN: self-anchored top-p entropy regulariser on Dr. GRPO.

Jiang et al. 2025, https://arxiv.org/abs/2509.25133; values from
methods_rlvr.md §4(e) (authors' code github.com/Linn3a/siren,
``exp_scripts/siren.sh``): λ = 0.005, p_top = 0.8, mask_ratio = 0.8, on
Dr. GRPO (no std, seq-mean-token-sum-norm as mean_i Σ_t / L_max), clip
ε = 0.2 / 0.2 (the effective value; INFERRED from config precedence), no
dual clip, no KL.

  python -m experiments.main --config=experiments/configs/siren.py:tiny \
      --workdir=runs/siren
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = base.get_config(arg)
  c.objective = ml_collections.ConfigDict(dict(kind="siren", l_max=-1, eps=0.2))
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("advantages", "siren"),
      advantages=dict(kind="grpo_advantages", normalize_std=False),
      siren=dict(kind="siren", coef=0.005, p_top=0.8, mask_ratio=0.8)))
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  del arg
  return [{"regularizers.siren.coef": c} for c in (0.001, 0.005, 0.02)]
