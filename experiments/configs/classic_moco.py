"""MoCoVI (spec B12): corrected model recovers V*.

Run: .venv/bin/python experiments/classic/run.py \
    --config experiments/configs/classic_moco.py[:tiny]
(``:tiny`` runs in well under a minute on a 2-core CPU.)
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.algo = 'moco'
  c.seeds = 2 if arg == "tiny" else 4
  c.kwargs = ml_collections.ConfigDict()
  if arg == "tiny":
    c.kwargs.num_states = 5
    c.kwargs.iters = 30
    c.kwargs.num_basis = 2
  else:
    c.kwargs.num_states = 10
    c.kwargs.iters = 100
    c.kwargs.num_basis = 2
  return c
