"""Band-limited SAC (spec B3, reconstructed from the abstract).

Run::

  python -m experiments.main \
      --config=experiments/configs/classic_bandlimited_sac.py:tiny \
      --workdir=runs/bandlimited_sac

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
      kind="sac", variant="bandlimited",
      total_steps=2000 if tiny else 15000,
      buffer_size=2000 if tiny else 15000,
      batch_size=32 if tiny else 128,
      learning_starts=200 if tiny else 1000,
      hidden=32 if tiny else 128,
      lr=0.003 if tiny else 0.001,
      ace_causal_interval=500 if tiny else 1000,
      ace_causal_sample=500 if tiny else 1000,
      bl_sigma=0.1))
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  """The band-limit width σ."""
  del arg
  return [{"algorithm.bl_sigma": s} for s in (0.05, 0.1, 0.2)]
