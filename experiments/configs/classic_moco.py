"""MoCoVI (spec B12): corrected model recovers V*.

Run::

  python -m experiments.main \
      --config=experiments/configs/classic_moco.py:tiny \
      --workdir=runs/moco

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
      kind="moco", num_states=5 if tiny else 10, iters=30 if tiny else 100,
      num_basis=2))
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  """The number of correction basis functions."""
  del arg
  return [{"algorithm.num_basis": k} for k in (1, 2, 4)]
