r"""A small method study: GRPO, Clip-Cov, KL-Cov and RENT × 2 seeds, 100
steps each, on the default task (study_full.py's budget otherwise).

About 15 minutes on 2 idle CPU cores (8 runs, one SFT warm-up per seed).

  python -m experiments.study --config=experiments/configs/study_quick.py \
      --workdir=runs/study_quick
"""

import ml_collections

from experiments.configs import study_full


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = study_full.get_config(arg)
  keep = ("grpo", "clip_cov", "kl_cov", "rent")
  c.methods = ml_collections.ConfigDict(
      {m: c.methods[m].to_dict() for m in keep})
  c.seeds = (0, 1)
  c.budget_keys = tuple(k for k in c.budget_keys if k != "train.num_steps")
  c.shared.train = ml_collections.ConfigDict(dict(num_steps=100))
  c.quick.update(methods=("grpo", "clip_cov"), seeds=(0,),
                 shared=dict(train=dict(num_steps=20)))
  return c
