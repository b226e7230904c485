"""UCBVI-Ent / EntGame vs random (spec B6) on a gridworld.

Run::

  python -m experiments.main \
      --config=experiments/configs/classic_maxent_exploration.py:tiny \
      --workdir=runs/maxent_exploration

(``:tiny`` runs in well under a minute on a 2-core CPU.)
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
      kind="maxent_exploration", size=3 if tiny else 5,
      episodes=20 if tiny else 200, horizon=6 if tiny else 15))
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  """The episode horizon."""
  del arg
  return [{"algorithm.horizon": h} for h in (6, 10, 15)]
