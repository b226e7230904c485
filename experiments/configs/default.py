"""THE DEFAULT EXPERIMENT: GRPO vs GRPO + STEER on arithmetic, on a CPU.

A 0.1M-parameter decoder is trained from scratch on 2-digit addition and
subtraction (character tokenizer): a supervised warm-up on gold answers
until it sometimes succeeds, then two RL runs from the same warm-up
checkpoint, side by side -- plain GRPO and GRPO with STEER's token weights
-- with on-device sampling and reward (one jitted RL iteration). It leaves
metrics (JSONL + TensorBoard), checkpoints and ``compare.png`` (entropy,
accuracy and realised vs predicted entropy change of both runs).

  bash run.sh experiment
  # = python -m experiments.main --config=experiments/configs/default.py \
  #       --workdir=runs/default
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = base.get_config(arg)
  c.objective = ml_collections.ConfigDict(dict(kind="grpo", eps=0.2))
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("advantages",),
      advantages=dict(kind="grpo_advantages"),
      steer=dict(kind="steer", w_min=0.8, w_max=1.2, mode="linear")))
  c.variants = ml_collections.ConfigDict(dict(
      grpo=dict(regularizers=dict(order=("advantages",))),
      grpo_steer=dict(regularizers=dict(order=("advantages", "steer")))))
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  """The same comparison over three seeds."""
  del arg
  return [{"seed": s} for s in (0, 1, 2)]
