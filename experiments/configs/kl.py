"""GRPO with a k3 KL penalty to the reference (the SFT policy).

Shao et al. 2024, DeepSeekMath, https://arxiv.org/abs/2402.03300 (§4.2:
β = 0.04; §4.1 Eq. 3: k3 estimator, seq-mean-token-mean); methods_rlvr.md
§1.6. (verl recipes use β = 0.001.)

  python -m experiments.main --config=experiments/configs/kl.py:tiny \
      --workdir=runs/kl
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = base.get_config(arg)
  c.objective = ml_collections.ConfigDict(dict(kind="grpo", eps=0.2))
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("advantages", "kl"),
      advantages=dict(kind="grpo_advantages"),
      kl=dict(kind="kl_penalty", coef=0.04, estimator="k3")))
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  del arg
  return [{"regularizers.kl.coef": b} for b in (0.0, 0.04, 0.2)]
