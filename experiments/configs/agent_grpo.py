"""GRPO on trajectories (the baseline of the agent experiments).

Shao et al. 2024, https://arxiv.org/abs/2402.03300: group-normalised
episode returns broadcast to every action token (each trajectory counted
once per group), PPO clip 0.2, token-mean.

  python -m experiments.main --config=experiments/configs/agent_grpo.py:tiny \
      --workdir=runs/agent_grpo

Sizes: ``tiny`` (token game, on device), ``calc`` (reasoning-gym calculator
task through the Python adapter); see agent_base.py.
"""

import ml_collections

from experiments.configs import agent_base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = agent_base.get_config(arg)
  c.name = "grpo"
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  """Three seeds."""
  return agent_base.get_sweep(arg)
