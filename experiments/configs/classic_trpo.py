"""TRPO (spec B10) on CartPole-v1.

Run: .venv/bin/python experiments/classic/run.py \
    --config experiments/configs/classic_trpo.py[:tiny]
(``:tiny`` runs in well under a minute on a 2-core CPU.)
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.algo = 'trpo'
  c.seeds = 2 if arg == "tiny" else 4
  c.kwargs = ml_collections.ConfigDict()
  if arg == "tiny":
    c.kwargs.num_envs = 4
    c.kwargs.num_steps = 64
    c.kwargs.total_steps = 2560
    c.kwargs.hidden = 16
    c.kwargs.env_name = 'CartPole-v1'
  else:
    c.kwargs.num_envs = 8
    c.kwargs.num_steps = 128
    c.kwargs.total_steps = 200000
    c.kwargs.hidden = 64
    c.kwargs.env_name = 'CartPole-v1'
  return c
