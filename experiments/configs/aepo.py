"""AEPO (RLVR): a REINFORCE regulariser on temperature-adjusted samples.

Wang et al. 2025, https://arxiv.org/abs/2510.08141; values from
methods_rlvr.md §5(e) (authors' code github.com/597358816/AEPO,
``examples/qwen-math-7b-AEPO.sh``; KL off as there).
Each step also samples the first quarter of the prompts at the controller's
temperature (T_high = 1.2 while the entropy proxy is at or below H*, else
T_low = 0.8), keeps the samples with GRPO advantage > 0.05, and puts up to
n_max of them (half above H*) in place of the first rows of the GRPO batch
with advantage 1 (config.rollout.aepo). Loss: dual-clip PPO, token-mean.

  python -m experiments.main --config=experiments/configs/aepo.py:tiny \
      --workdir=runs/aepo
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = base.get_config(arg)
  c.objective = ml_collections.ConfigDict(dict(kind="aepo", eps=0.2,
                                               dual_c=3.0))
  # H* = 0.5 nats of mean NLL (the reference script; 0.75 in its README).
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("advantages", "aepo"),
      advantages=dict(kind="grpo_advantages"),
      aepo=dict(kind="aepo", target_entropy=0.5, t_high=1.2, t_low=0.8,
                n_max=60, select_threshold=0.05)))
  c.rollout.aepo.update(enabled=True, prompt_fraction=0.25)
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  del arg
  return [{"regularizers.aepo.target_entropy": h} for h in (0.3, 0.5, 0.75)]
