"""Band-limited SAC (spec B3, reconstructed from the abstract).

Run: .venv/bin/python experiments/classic/run.py \
    --config experiments/configs/classic_bandlimited_sac.py[:tiny]
(``:tiny`` runs in well under a minute on a 2-core CPU.)
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.algo = 'sac'
  c.seeds = 2 if arg == "tiny" else 4
  c.kwargs = ml_collections.ConfigDict()
  if arg == "tiny":
    c.kwargs.total_steps = 2000
    c.kwargs.buffer_size = 2000
    c.kwargs.batch_size = 32
    c.kwargs.learning_starts = 200
    c.kwargs.hidden = 32
    c.kwargs.lr = 0.003
    c.kwargs.ace_causal_interval = 500
    c.kwargs.ace_causal_sample = 500
    c.kwargs.variant = 'bandlimited'
    c.kwargs.bl_sigma = 0.1
  else:
    c.kwargs.total_steps = 15000
    c.kwargs.buffer_size = 15000
    c.kwargs.batch_size = 128
    c.kwargs.learning_starts = 1000
    c.kwargs.hidden = 128
    c.kwargs.lr = 0.001
    c.kwargs.variant = 'bandlimited'
    c.kwargs.bl_sigma = 0.1
  return c
