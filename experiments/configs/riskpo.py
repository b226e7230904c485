"""RiskPO: bundled rewards with a mixed value-at-risk objective.

Ren et al. 2025, RiskPO, https://arxiv.org/abs/2510.00911; values from
methods_rlvr.md §16(e) and the authors' code (github.com/RTkenny/RiskPO
@65ec40c, ``scripts/run_qwen2.5_1.5b_MVaR_dapomath.sh``): α = 0.2,
β = 0.8, bundle B = 5, w_mix = 1.5, n = 10, no KL, no entropy bonus. The
loss is verl's default (``verl/trainer/config/actor/actor.yaml``): clip
0.2 / 0.2, dual clip c = 3, token-mean.

The bundle must divide the prompts of a step, and 64 (tiny), 4 (smollm2)
and 32 (0.5b) prompts are not multiples of 5: the defaults use B = 4 and
the base n. ``:paper`` uses B = 5, n = 10 and rounds prompts_per_step down
to a multiple of 5 (60 / 5 / 30).

  python -m experiments.main --config=experiments/configs/riskpo.py:tiny \
      --workdir=runs/riskpo
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = base.get_config(arg)
  _, paper = base.parse_arg(arg)
  c.objective = ml_collections.ConfigDict(dict(
      kind="ppo_clip", eps_low=0.2, eps_high=0.2, dual_c=3.0,
      agg="token-mean"))
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("riskpo",),
      riskpo=dict(kind="riskpo", group_size=0, bundle_size=4,
                  w_mix=1.5)))
  if paper:
    c.regularizers.riskpo.bundle_size = 5
    c.data.num_samples = 10
    c.data.prompts_per_step = max(5, c.data.prompts_per_step // 5 * 5)
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  del arg
  return [{"regularizers.riskpo.w_mix": w} for w in (1.0, 1.5)]
