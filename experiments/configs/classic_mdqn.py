"""Munchausen-DQN (spec B9, Vieillard et al. 2020) on gymnax CartPole-v1.

Run: .venv/bin/python experiments/classic/run.py \
    --config experiments/configs/classic_mdqn.py[:tiny]
(``:tiny``: 5k environment steps, 2 seeds, well under a minute on a 2-core
CPU; the full config is 50k steps over 4 seeds, a few minutes.)
Variant ``:soft`` sets α = 0 (soft-DQN) for comparison.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.algo = "mdqn"
  tiny = arg == "tiny"
  c.seeds = 2 if tiny else 4
  c.kwargs = ml_collections.ConfigDict()
  c.kwargs.env_name = "CartPole-v1"
  c.kwargs.total_steps = 5_000 if tiny else 50_000
  c.kwargs.buffer_size = 5_000 if tiny else 20_000
  c.kwargs.batch_size = 64
  c.kwargs.learning_starts = 500 if tiny else 1_000
  c.kwargs.target_update_every = 100 if tiny else 500
  c.kwargs.eps_decay_steps = 2_000 if tiny else 10_000
  c.kwargs.hidden = 64 if tiny else 128
  c.kwargs.lr = 1e-3
  c.kwargs.m_tau = 0.03
  c.kwargs.m_alpha = 0.0 if arg == "soft" else 0.9
  c.kwargs.l0 = -1.0
  c.kwargs.interact = "greedy"
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  """Munchausen scale α (0: soft-DQN) × entropy temperature τ."""
  del arg
  return [{"kwargs.m_alpha": a, "kwargs.m_tau": t}
          for a in (0.0, 0.9) for t in (0.01, 0.03, 0.1)]
