"""GRPO: group-normalised advantages, PPO clip 0.2, seq-mean-token-mean.

Shao et al. 2024, DeepSeekMath, https://arxiv.org/abs/2402.03300 (§4.1
GRPO objective, Eq. 3: 1/|o_i| per response, i.e. seq-mean-token-mean;
§4.2 training: KL coefficient 0.04); methods_rlvr.md §1.1(e): ε = 0.2,
no dual clip, k3 KL with β = 0.04.

The default is GRPO without a reference model (the baseline the entropy
papers compare against; kl.py adds the KL term); ``:paper`` adds the
paper's k3 KL loss, β = 0.04, to the reference (the SFT policy).

  python -m experiments.main --config=experiments/configs/grpo.py:tiny \
      --workdir=runs/grpo
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = base.get_config(arg)
  _, paper = base.parse_arg(arg)
  c.objective = ml_collections.ConfigDict(dict(
      kind="grpo", eps=0.2, agg="seq-mean-token-mean"))
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("advantages",),
      advantages=dict(kind="grpo_advantages")))
  if paper:
    c.regularizers.order = ("advantages", "kl")
    c.regularizers.kl = dict(kind="kl_penalty", coef=0.04, estimator="k3")
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  del arg
  return [{"optimizer.learning_rate": lr, "seed": s}
          for lr in (1e-4, 3e-4) for s in (0, 1)]
