"""PPO + entropy bonus through entropy_rl.policy_loss on CartPole-v1.

Run::

  python -m experiments.main \
      --config=experiments/configs/classic_ppo.py:tiny \
      --workdir=runs/ppo

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
      kind="ppo", env_name="CartPole-v1",
      num_envs=4 if tiny else 8,
      num_steps=64 if tiny else 128,
      total_steps=2560 if tiny else 200000,
      hidden=16 if tiny else 64,
      ent_coef=0.01))  # the entropy bonus (PPOConfig default)
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  """The entropy-bonus coefficient."""
  del arg
  return [{"algorithm.ent_coef": e} for e in (0.0, 0.01, 0.05)]
