"""Best-of-both-worlds FTRL PO (spec B11) on a slippery chain.

Run::

  python -m experiments.main \
      --config=experiments/configs/classic_bobw.py:tiny \
      --workdir=runs/bobw

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
      kind="bobw", n=4 if tiny else 8, iters=30 if tiny else 200, eta0=5.0))
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  """The FTRL step size η₀."""
  del arg
  return [{"algorithm.eta0": e} for e in (1.0, 5.0, 25.0)]
