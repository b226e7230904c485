"""HAPO: entropy-adaptive clip and advantage redistribution.

Liu et al. 2025, "From Uniform to Heterogeneous: Tailoring Policy
Optimization to Every Token's Nature", https://arxiv.org/abs/2509.16591;
values from methods_rlvr.md §7(e) (authors' code
github.com/starriver030515/HAPO, ``recipe/*.sh``): token-level group
advantage, entropy-adaptive clip (α_c = 1) and redistribution (β = 1) with
pivot π_q = 0.8 in training, and the per-token adaptive sampling temperature
T_t = T0 (1 + τ ĥ_t), τ = 0.05, in rollouts (config.sampling.hapo_tau).
Loss: verl's dual-clip PPO with ε_l = ε_h = 0.2 (before the adaptive
widening), c = 10, token-mean; DAPO dynamic sampling.

The authors' overlong buffer (4096 tokens) and n = 16 are not reproduced
here (the base sizes' responses are 5-384 tokens; n = data.num_samples).

  python -m experiments.main --config=experiments/configs/hapo.py:tiny \
      --workdir=runs/hapo
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = base.get_config(arg)
  c.objective = ml_collections.ConfigDict(dict(
      kind="ppo_clip", eps_low=0.2, eps_high=0.2, dual_c=10.0,
      agg="token-mean"))
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("hapo",),
      hapo=dict(kind="hapo", pivot=0.8, clip_alpha=1.0, adv_beta=1.0)))
  c.sampling.hapo_tau = 0.05
  c.rollout.dynamic_sampling.update(enabled=True, max_rounds=3)
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  del arg
  return [{"regularizers.hapo.clip_alpha": a} for a in (0.5, 1.0)]
