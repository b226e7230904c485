"""EMPG: entropy-modulated policy gradients (spec A2).

Wang et al. 2025, https://arxiv.org/abs/2509.09265. The trajectory's GRPO
advantage of each step (trajectory, turn) is scaled by
``g = exp(−k·Ĥ)/mean exp(−k·Ĥ)`` of the step's normalised entropy, plus
``ζ·exp(−k_f·Ĥ_next)`` for a clear next step, then batch-centred. The
project page's defaults k = k_f = 1, ζ = 0.1.

  .venv/bin/python experiments/agents/run.py \
      --config experiments/configs/agent_empg.py:tiny --workdir runs/empg
"""

import ml_collections

from experiments.configs import agent_base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = agent_base.get_config(arg)
  c.method = "empg"
  c.method_kwargs = ml_collections.ConfigDict(dict(k=1.0, k_f=1.0,
                                                   zeta=0.1))
  return c
