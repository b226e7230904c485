"""ACE (spec B2): DirectLiNGAM causal weights + dormancy-guided soft reset.

Causal weights w = |A|·softmax(B_{a→r}) from DirectLiNGAM on the latest
``ace_causal_sample`` transitions every ``ace_causal_interval`` steps
(``ace_causal_method='ols'`` switches to the least-squares proxy). Every
``ace_reset_interval`` updates after ``ace_reset_start``, policy, critic and
target critic are soft-reset, θ ← f·θ + (1 − f)·θ_rand, with
f = clip(1 − d, 0.2, 0.9) from the policy's gradient-dormant ratio d
(``ace_reset_mode='causal_reset'``: f from the spread of w); 0 turns it off.

Run: .venv/bin/python experiments/classic/run.py \
    --config experiments/configs/classic_ace.py[:tiny]
(``:tiny`` runs in well under a minute on a 2-core CPU.)
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.algo = 'sac'
  c.seeds = 2 if arg == "tiny" else 4
  c.kwargs = ml_collections.ConfigDict()
  # causal discovery: 'direct_lingam' (paper) or 'ols' (least-squares proxy)
  c.kwargs.ace_causal_method = 'direct_lingam'
  # 'reset' (f from gradient dormancy) or 'causal_reset' (f from w's spread)
  c.kwargs.ace_reset_mode = 'reset'
  # a neuron is dormant when its gradient norm < this × the layer mean
  c.kwargs.ace_dormant_threshold = 0.05
  if arg == "tiny":
    c.kwargs.total_steps = 2000
    c.kwargs.buffer_size = 2000
    c.kwargs.batch_size = 32
    c.kwargs.learning_starts = 200
    c.kwargs.hidden = 32
    c.kwargs.lr = 0.003
    c.kwargs.ace_causal_interval = 500
    c.kwargs.ace_causal_sample = 500
    c.kwargs.variant = 'ace'
    c.kwargs.ace_reset_interval = 300
    c.kwargs.ace_reset_start = 300
  else:
    c.kwargs.total_steps = 15000
    c.kwargs.buffer_size = 15000
    c.kwargs.batch_size = 128
    c.kwargs.learning_starts = 1000
    c.kwargs.hidden = 128
    c.kwargs.lr = 0.001
    c.kwargs.variant = 'ace'
    c.kwargs.ace_reset_interval = 5000
    c.kwargs.ace_reset_start = 5000
  return c
