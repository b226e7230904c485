"""GRPO-λ: length-aware rewards for correct answers, then GRPO.

Dai et al. 2025, https://arxiv.org/abs/2505.18086; methods_rlvr.md §15(e)
(third-party code only): λ = 0.2, α = 0.6 (unverified). The base loss: not
stated in what we could read; we use GRPO's (clip 0.2,
seq-mean-token-mean, no KL).

  python -m experiments.main --config=experiments/configs/grpo_lambda.py:tiny \
      --workdir=runs/grpo_lambda
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = base.get_config(arg)
  c.objective = ml_collections.ConfigDict(dict(kind="grpo", eps=0.2))
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("grpo_lambda",),
      grpo_lambda=dict(kind="grpo_lambda", lam=0.2, alpha=0.6)))
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  del arg
  return [{"regularizers.grpo_lambda.lam": l} for l in (0.1, 0.2)]
