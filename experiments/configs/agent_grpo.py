"""GRPO on trajectories (the baseline of the agent experiments).

Shao et al. 2024, https://arxiv.org/abs/2402.03300: group-normalised
episode returns broadcast to every action token (each trajectory counted
once per group), PPO clip 0.2, token-mean.

  .venv/bin/python experiments/agents/run.py \
      --config experiments/configs/agent_grpo.py:tiny --workdir runs/grpo

Sizes: ``tiny`` (token game, on device), ``calc`` (reasoning-gym calculator
task through the Python adapter); see agent_base.py.
"""

import ml_collections

from experiments.configs import agent_base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = agent_base.get_config(arg)
  c.method = "grpo"
  return c
