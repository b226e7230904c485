"""MOSS (spec B8, Zhao et al. 2022): CIC skills + DDPG, a mixture of
surprises, reward-free on the 2-D PointMass.

Run: .venv/bin/python experiments/classic/run.py \
    --config experiments/configs/classic_moss.py[:tiny]
(``:tiny``: 4k environment steps, 2 seeds, about a minute on a 2-core CPU.)
Curves: the particle reward of explore rows (rises) and control rows (falls,
before the sign flip), the signed intrinsic reward, CIC's contrastive loss.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.algo = "moss"
  tiny = arg == "tiny"
  c.seeds = 2 if tiny else 4
  c.kwargs = ml_collections.ConfigDict()
  c.kwargs.env_name = "PointMass"
  c.kwargs.env_kwargs = (("horizon", 20),)
  c.kwargs.total_steps = 4_000 if tiny else 40_000
  c.kwargs.num_envs = 4
  c.kwargs.buffer_size = 4_000 if tiny else 40_000
  c.kwargs.batch_size = 128 if tiny else 256
  c.kwargs.learning_starts = 400 if tiny else 2_000
  c.kwargs.hidden = 64 if tiny else 256
  c.kwargs.cic_hidden = 64 if tiny else 256
  c.kwargs.skill_dim = 8 if tiny else 16
  c.kwargs.n_step = 3
  c.kwargs.knn_k = 16
  c.kwargs.knn_clip = 5e-4
  c.kwargs.cic_temperature = 0.5
  c.kwargs.lr = 1e-3
  c.kwargs.cic_lr = 1e-3
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  """k of the particle estimator × skill dimension."""
  del arg
  return [{"kwargs.knn_k": k, "kwargs.skill_dim": d}
          for k in (8, 16) for d in (8, 16)]
