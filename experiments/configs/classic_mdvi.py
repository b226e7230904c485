"""MD-VI (spec B9): KL averages noisy q errors.

Run: .venv/bin/python experiments/classic/run.py \
    --config experiments/configs/classic_mdvi.py[:tiny]
(``:tiny`` runs in well under a minute on a 2-core CPU.)
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.algo = 'mdvi'
  c.seeds = 2 if arg == "tiny" else 4
  c.kwargs = ml_collections.ConfigDict()
  if arg == "tiny":
    c.kwargs.num_states = 5
    c.kwargs.num_actions = 3
    c.kwargs.iters = 50
    c.kwargs.noise_std = 1.0
    c.kwargs.tau = 0.05
    c.kwargs.lams = (0.0, 0.5, 2.0)
  else:
    c.kwargs.num_states = 10
    c.kwargs.num_actions = 3
    c.kwargs.iters = 200
    c.kwargs.noise_std = 1.0
    c.kwargs.tau = 0.05
    c.kwargs.lams = (0.0, 0.5, 2.0)
  return c
