"""Entrocraft: reject the rollouts whose advantage sign would push the batch
entropy out of a linearly annealed target band; GRPO with a k3 KL loss.

Li et al. 2026, https://arxiv.org/abs/2604.26326 (spec
docs/specs/entrocraft.md §(e), paper App. C.1 Table 4). Reference run
``grpo_range_linear``: band (0.6, 0.7) -> (0.4, 0.5) linearly over
training, GRPO clip 0.2, token-mean, KL loss 0.001 (low_var_kl = k3),
n = 8.

  python -m experiments.main --config=experiments/configs/entrocraft.py:tiny \
      --workdir=runs/entrocraft
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = base.get_config(arg)
  steps = c.train.num_steps
  c.objective = ml_collections.ConfigDict(dict(
      kind="grpo", eps=0.2, agg="token-mean"))
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("advantages", "entrocraft", "kl"),
      advantages=dict(kind="grpo_advantages"),
      entrocraft=dict(
          kind="entrocraft",
          h_low=dict(schedule="linear", init=0.6, end=0.4, steps=steps),
          h_high=dict(schedule="linear", init=0.7, end=0.5, steps=steps)),
      kl=dict(kind="kl_penalty", coef=0.001, estimator="k3")))
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  del arg
  # Final bands: the README run and the paper's Fig. 4 linear decay.
  return [{"regularizers.entrocraft.h_low.end": lo,
           "regularizers.entrocraft.h_high.end": lo + 0.1}
          for lo in (0.4, 0.1)]
