"""CE-GPPO: gradient-preserving clip with coefficients β.

Su et al. 2025, CE-GPPO, https://arxiv.org/abs/2509.20712; values from
methods_rlvr.md §9(e) (authors' code github.com/Kwai-Klear/CE-GPPO,
``recipe/dapo/7B_perf_run_gppo_*.sh``): CE-GPPO's own objective (clip
ε = 0.2 / 0.2 with the clipped tokens' gradients kept at β₁ = 0.75 (7B;
0.5 at 1.5B) and β₂ = 1, dual clip c = 10, token-mean), GRPO advantages,
DAPO dynamic sampling; n = 8 (the base n).

  python -m experiments.main --config=experiments/configs/ce_gppo.py:tiny \
      --workdir=runs/ce_gppo
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = base.get_config(arg)
  c.objective = ml_collections.ConfigDict(dict(
      kind="ce_gppo", eps=0.2, dual_c=10.0, agg="token-mean"))
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("advantages", "ce_gppo"),
      advantages=dict(kind="grpo_advantages"),
      ce_gppo=dict(kind="ce_gppo", beta_low=0.75, beta_high=1.0)))
  c.rollout.dynamic_sampling.update(enabled=True, max_rounds=3)
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  del arg
  return [{"regularizers.ce_gppo.beta_low": b} for b in (0.5, 0.75, 1.0)]
