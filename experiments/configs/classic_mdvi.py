"""MD-VI (spec B9): KL averages noisy q errors.

Run::

  python -m experiments.main \
      --config=experiments/configs/classic_mdvi.py:tiny \
      --workdir=runs/mdvi

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
      kind="mdvi", num_states=5 if tiny else 10, num_actions=3,
      iters=50 if tiny else 200, noise_std=1.0, tau=0.05,
      lams=(0.0, 0.5, 2.0)))  # one curve per KL weight λ
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  """The q-error noise × the entropy weight τ."""
  del arg
  return [{"algorithm.noise_std": s, "algorithm.tau": t}
          for s in (0.5, 1.0) for t in (0.01, 0.05)]
