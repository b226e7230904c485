"""DIAYN (spec B5) on the 2-D PointMass: skills become distinguishable.

Run::

  python -m experiments.main \
      --config=experiments/configs/classic_diayn.py:tiny \
      --workdir=runs/diayn

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
      kind="sac", variant="diayn",
      total_steps=2000 if tiny else 15000,
      buffer_size=2000 if tiny else 15000,
      batch_size=32 if tiny else 128,
      learning_starts=200 if tiny else 1000,
      hidden=32 if tiny else 128,
      lr=0.003 if tiny else 0.001,
      ace_causal_interval=500 if tiny else 1000,
      ace_causal_sample=500 if tiny else 1000,
      env_name="PointMass", autotune=False, alpha=0.1, diayn_skills=4))
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  """The number of skills."""
  del arg
  return [{"algorithm.diayn_skills": k} for k in (2, 4, 8)]
