"""SPEAR's on-policy pieces (spec A4).

Qin et al. 2025, https://arxiv.org/abs/2509.22601. A cosine-decayed
tool-call bonus ``min(1, 0.1·n_calls)·c(t)`` added to the return before the
GRPO advantages (T_tc = half the run; tool calls are the token game's TOOL
turns or the calculator's ``calc:`` turns), Clip-Cov with the on-policy
settings (2e-4, 1, 5) and the Dr.BoT clip 0.2/0.28. The self-imitation
replay buffer (``entropy_rl.agents.spear``) is not wired into this runner.

  .venv/bin/python experiments/agents/run.py \
      --config experiments/configs/agent_spear.py:tiny --workdir runs/spear
"""

import ml_collections

from experiments.configs import agent_base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = agent_base.get_config(arg)
  c.method = "spear"
  c.objective.eps_high = 0.28
  c.method_kwargs = ml_collections.ConfigDict(dict(
      mode="cosine", ratio=2e-4, cov_low=1.0, cov_high=5.0))
  return c
