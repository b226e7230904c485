"""SAC-ERA (spec A5.2/B1): entropy floor D*h, no alpha.

The activation puts the Gaussian's entropy on D*h; the truncated-normal
policy's realised entropy is lower. ``era_autotune_delta=True`` turns on the
README's compensation delta >= 0 (target D*h + delta, tuned by the loss
delta_hat*(H[pi] - D*h)); it is off by default because the released SAC-ERA
code has none. The runner plots the realised entropy and delta.

Run::

  python -m experiments.main \
      --config=experiments/configs/classic_sac_era.py:tiny \
      --workdir=runs/sac_era

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
      kind="sac", variant="era",
      total_steps=2000 if tiny else 15000,
      buffer_size=2000 if tiny else 15000,
      batch_size=32 if tiny else 128,
      learning_starts=200 if tiny else 1000,
      hidden=32 if tiny else 128,
      lr=0.003 if tiny else 0.001,
      ace_causal_interval=500 if tiny else 1000,
      ace_causal_sample=500 if tiny else 1000,
      era_h=0.25,
      # ERA's compensation delta (README/paper; absent from the released
      # code), and the constant delta or its initial value when autotuned
      era_autotune_delta=False, era_delta=0.0))
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  """The per-dimension floor h × δ compensation off/on."""
  del arg
  return [{"algorithm.era_h": h, "algorithm.era_autotune_delta": auto}
          for h in (0.0, 0.25, 0.5) for auto in (False, True)]
