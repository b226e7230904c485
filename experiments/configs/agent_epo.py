"""EPO: entropy-regularised policy optimisation for LLM agents (spec A1).

Xu et al. 2025, https://arxiv.org/abs/2509.22576. GRPO plus
``−λ_H·(H − c_s·β_k·L_smooth)``: an entropy bonus and the differentiable
("paper") corridor penalty around each turn's historical entropy, with the
phase weight β_k over the run (K = ``train.num_steps``) and the turn gate at
``max_turns // 2`` (the code's ⌊max_step/2⌋). κ = (0, 2) as in the paper's
runs (only entropy spikes above twice a turn's history are penalised);
λ_H = 0.005 rather than the LLM yaml's 0.001 (a vocabulary of 16, a model
trained from scratch), c_s = 10 so the smoothing weight λ_H·c_s·α is 0.005.
The other settings are ``entropy_rl.agents.epo``'s defaults.

  python -m experiments.main --config=experiments/configs/agent_epo.py:tiny \
      --workdir=runs/agent_epo --config.regularizers.epo.entropy_coef=0.01
"""

import ml_collections

from experiments.configs import agent_base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = agent_base.get_config(arg)
  c.name = "epo"
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("advantages", "epo"),
      advantages=dict(kind="episode_advantages"),
      epo=member(c)))
  return c


def member(c: ml_collections.ConfigDict) -> dict:
  """The ``epo`` chain member of config ``c``."""
  turns = agent_base.max_turns(c)
  return dict(kind="epo", entropy_coef=0.005, smooth_coef=10.0,
              max_turns=turns, gate_turn=turns // 2,
              num_epochs=c.train.get_ref("num_steps"))


def get_sweep(arg: str = "tiny") -> list[dict]:
  """λ_H × c_s."""
  del arg
  return [{"regularizers.epo.entropy_coef": e,
           "regularizers.epo.smooth_coef": s}
          for e in (0.001, 0.005) for s in (1.0, 10.0)]
