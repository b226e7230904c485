"""MOSS (spec B8, Zhao et al. 2022): CIC skills + DDPG, a mixture of
surprises, reward-free on the 2-D PointMass.

Run::

  python -m experiments.main \
      --config=experiments/configs/classic_moss.py:tiny \
      --workdir=runs/moss

(``:tiny``: 4k environment steps, 2 seeds, about a minute on a 2-core CPU.)
Curves: the particle reward of explore rows (rises) and control rows (falls,
before the sign flip), the signed intrinsic reward, CIC's contrastive loss.
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
      kind="moss", env_name="PointMass", env_kwargs=(("horizon", 20),),
      total_steps=4_000 if tiny else 40_000, num_envs=4,
      buffer_size=4_000 if tiny else 40_000,
      batch_size=128 if tiny else 256,
      learning_starts=400 if tiny else 2_000,
      hidden=64 if tiny else 256, cic_hidden=64 if tiny else 256,
      skill_dim=8 if tiny else 16, n_step=3, knn_k=16, knn_clip=5e-4,
      cic_temperature=0.5, lr=1e-3, cic_lr=1e-3))
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  """k of the particle estimator × skill dimension."""
  del arg
  return [{"algorithm.knn_k": k, "algorithm.skill_dim": d}
          for k in (8, 16) for d in (8, 16)]
