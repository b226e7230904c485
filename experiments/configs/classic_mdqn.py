"""Munchausen-DQN (spec B9, Vieillard et al. 2020) on gymnax CartPole-v1.

Run::

  python -m experiments.main \
      --config=experiments/configs/classic_mdqn.py:tiny \
      --workdir=runs/mdqn

(``:tiny``: 5k environment steps, 2 seeds, well under a minute on a 2-core
CPU; the full config is 50k steps over 4 seeds, a few minutes.)
Variant ``:soft`` sets α = 0 (soft-DQN) for comparison.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.kind = "classic"  # experiments.main dispatches on it
  tiny = arg == "tiny"
  c.seed = 0  # seed i of num_seeds: fold of PRNGKey(seed)
  c.num_seeds = 2 if tiny else 4  # vmapped in one jitted run
  # The algorithm (entropy_rl.classic_builders): kind + its settings.
  c.algorithm = ml_collections.ConfigDict(dict(
      kind="mdqn", env_name="CartPole-v1",
      total_steps=5_000 if tiny else 50_000,
      buffer_size=5_000 if tiny else 20_000,
      batch_size=64,
      learning_starts=500 if tiny else 1_000,
      target_update_every=100 if tiny else 500,
      eps_decay_steps=2_000 if tiny else 10_000,
      hidden=64 if tiny else 128,
      lr=1e-3, m_tau=0.03,
      m_alpha=0.0 if arg == "soft" else 0.9,  # :soft is soft-DQN
      l0=-1.0, interact="greedy"))
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  """Munchausen scale α (0: soft-DQN) × entropy temperature τ."""
  del arg
  return [{"algorithm.m_alpha": a, "algorithm.m_tau": t}
          for a in (0.0, 0.9) for t in (0.01, 0.03, 0.1)]
