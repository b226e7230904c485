"""TRPO (spec B10) on CartPole-v1.

Run::

  python -m experiments.main \
      --config=experiments/configs/classic_trpo.py:tiny \
      --workdir=runs/trpo

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
      kind="trpo", env_name="CartPole-v1",
      num_envs=4 if tiny else 8,
      num_steps=64 if tiny else 128,
      total_steps=2560 if tiny else 200000,
      hidden=16 if tiny else 64,
      target_kl=0.01))  # δ (TRPOConfig default)
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  """The trust-region size δ (target KL)."""
  del arg
  return [{"algorithm.target_kl": k} for k in (0.005, 0.01, 0.02)]
