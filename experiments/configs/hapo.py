"""HAPO: entropy-adaptive clip and advantage redistribution.

HAPO (methods_rlvr.md): token-level group advantage, entropy-adaptive clip
and redistribution in training, and the per-token adaptive sampling
temperature T_t = T0 (1 + tau h_t) in rollouts (config.sampling.hapo_tau).

  python -m experiments.main --config=experiments/configs/hapo.py:tiny \
      --workdir=runs/hapo
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = base.get_config(arg)
  c.objective = ml_collections.ConfigDict(dict(kind="grpo", eps=0.2))
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("hapo",),
      hapo=dict(kind="hapo", pivot=0.8, clip_alpha=1.0, adv_beta=1.0)))
  c.sampling.hapo_tau = 0.05
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  del arg
  return [{"regularizers.hapo.clip_alpha": a} for a in (0.5, 1.0)]
