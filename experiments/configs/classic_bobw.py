"""Best-of-both-worlds FTRL PO (spec B11) on a slippery chain.

Run: .venv/bin/python experiments/classic/run.py \
    --config experiments/configs/classic_bobw.py[:tiny]
(``:tiny`` runs in well under a minute on a 2-core CPU.)
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.algo = 'bobw'
  c.seeds = 2 if arg == "tiny" else 4
  c.kwargs = ml_collections.ConfigDict()
  if arg == "tiny":
    c.kwargs.n = 4
    c.kwargs.iters = 30
    c.kwargs.eta0 = 5.0
  else:
    c.kwargs.n = 8
    c.kwargs.iters = 200
    c.kwargs.eta0 = 5.0
  return c
