"""ACE (spec B2): DirectLiNGAM causal weights + dormancy-guided soft reset.

Causal weights w = |A|·softmax(B_{a→r}) from DirectLiNGAM on the latest
``ace_causal_sample`` transitions every ``ace_causal_interval`` steps
(``ace_causal_method='ols'`` switches to the least-squares proxy). Every
``ace_reset_interval`` updates after ``ace_reset_start``, policy, critic and
target critic are soft-reset, θ ← f·θ + (1 − f)·θ_rand, with
f = clip(1 − d, 0.2, 0.9) from the policy's gradient-dormant ratio d
(``ace_reset_mode='causal_reset'``: f from the spread of w); 0 turns it off.

Run::

  python -m experiments.main \
      --config=experiments/configs/classic_ace.py:tiny \
      --workdir=runs/ace

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
      kind="sac", variant="ace",
      total_steps=2000 if tiny else 15000,
      buffer_size=2000 if tiny else 15000,
      batch_size=32 if tiny else 128,
      learning_starts=200 if tiny else 1000,
      hidden=32 if tiny else 128,
      lr=0.003 if tiny else 0.001,
      ace_causal_interval=500 if tiny else 1000,
      ace_causal_sample=500 if tiny else 1000,
      ace_reset_interval=300 if tiny else 5000,
      ace_reset_start=300 if tiny else 5000,
      # causal discovery: 'direct_lingam' (paper) or 'ols' (least squares)
      ace_causal_method="direct_lingam",
      # 'reset' (f from gradient dormancy) or 'causal_reset' (w's spread)
      ace_reset_mode="reset",
      # a neuron is dormant when its gradient norm < this x the layer mean
      ace_dormant_threshold=0.05))
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  """Causal discovery method × reset rule."""
  del arg
  return [{"algorithm.ace_causal_method": m, "algorithm.ace_reset_mode": r}
          for m in ("direct_lingam", "ols")
          for r in ("reset", "causal_reset")]
