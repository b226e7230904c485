"""DORAEMON (spec B7): Beta domain randomisation of CartPole.

Run: .venv/bin/python experiments/classic/run.py \
    --config experiments/configs/classic_doraemon.py[:tiny]
(``:tiny`` runs in well under a minute on a 2-core CPU.)
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.algo = 'doraemon'
  c.seeds = 2 if arg == "tiny" else 4
  c.kwargs = ml_collections.ConfigDict()
  if arg == "tiny":
    c.kwargs.outer_iters = 3
    c.kwargs.ppo_updates_per_iter = 3
    c.kwargs.eval_episodes = 8
  else:
    c.kwargs.outer_iters = 20
    c.kwargs.ppo_updates_per_iter = 20
  return c
