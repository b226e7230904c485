"""EMPG: entropy-modulated policy gradients (spec A2).

Wang et al. 2025, https://arxiv.org/abs/2509.09265. The trajectory's GRPO
advantage of each step (trajectory, turn) is scaled by
``g = exp(−k·Ĥ)/mean exp(−k·Ĥ)`` of the step's normalised entropy, plus
``ζ·exp(−k_f·Ĥ_next)`` for a clear next step, then batch-centred. The
project page's defaults k = k_f = 1, ζ = 0.1 (``entropy_rl.agents.empg``'s).

  python -m experiments.main --config=experiments/configs/agent_empg.py:tiny \
      --workdir=runs/agent_empg
"""

import ml_collections

from experiments.configs import agent_base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = agent_base.get_config(arg)
  c.name = "empg"
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("advantages", "empg"),
      advantages=dict(kind="episode_advantages"),
      empg=member(c)))
  return c


def member(c: ml_collections.ConfigDict) -> dict:
  """The ``empg`` chain member of config ``c``."""
  return dict(kind="empg", k=1.0, k_f=1.0, zeta=0.1,
              max_turns=agent_base.max_turns(c))


def get_sweep(arg: str = "tiny") -> list[dict]:
  """k × ζ."""
  del arg
  return [{"regularizers.empg.k": k, "regularizers.empg.zeta": z}
          for k in (0.5, 1.0) for z in (0.0, 0.1)]
