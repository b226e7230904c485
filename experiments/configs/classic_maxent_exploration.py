"""UCBVI-Ent / EntGame vs random (spec B6) on a gridworld.

Run: .venv/bin/python experiments/classic/run.py \
    --config experiments/configs/classic_maxent_exploration.py[:tiny]
(``:tiny`` runs in well under a minute on a 2-core CPU.)
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.algo = 'maxent_exploration'
  c.seeds = 2 if arg == "tiny" else 4
  c.kwargs = ml_collections.ConfigDict()
  if arg == "tiny":
    c.kwargs.size = 3
    c.kwargs.episodes = 20
    c.kwargs.horizon = 6
  else:
    c.kwargs.size = 5
    c.kwargs.episodes = 200
    c.kwargs.horizon = 15
  return c
