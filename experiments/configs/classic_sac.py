"""SAC with automatic temperature (spec B0) on Pendulum-v1.

Run::

  python -m experiments.main \
      --config=experiments/configs/classic_sac.py:tiny \
      --workdir=runs/sac

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
      kind="sac", variant="sac",
      total_steps=2000 if tiny else 15000,
      buffer_size=2000 if tiny else 15000,
      batch_size=32 if tiny else 128,
      learning_starts=200 if tiny else 1000,
      hidden=32 if tiny else 128,
      lr=0.003 if tiny else 0.001,
      ace_causal_interval=500 if tiny else 1000,
      ace_causal_sample=500 if tiny else 1000,
      init_log_alpha=0.0))  # log α₀ (SACConfig default)
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  """Learning rate × initial log α."""
  del arg
  return [{"algorithm.lr": lr, "algorithm.init_log_alpha": a}
          for lr in (3e-4, 1e-3, 3e-3) for a in (-2.0, 0.0)]
