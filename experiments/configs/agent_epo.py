"""EPO: entropy-regularised policy optimisation for LLM agents (spec A1).

Xu et al. 2025, https://arxiv.org/abs/2509.22576. GRPO plus
``−λ_H·(H − c_s·β_k·L_smooth)``: an entropy bonus and the differentiable
("paper") corridor penalty around each turn's historical entropy, with the
phase weight β_k over the run and the turn gate at ``max_turns // 2`` (the
code's ⌊max_step/2⌋). κ = (0, 2) as in the paper's runs (only entropy
spikes above twice a turn's history are penalised); λ_H = 0.005 rather
than the LLM yaml's 0.001 (a vocabulary of 16, a model trained from
scratch), c_s = 10 so the smoothing weight λ_H·c_s·α is 0.005.

  .venv/bin/python experiments/agents/run.py \
      --config experiments/configs/agent_epo.py:tiny --workdir runs/epo
"""

import ml_collections

from experiments.configs import agent_base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = agent_base.get_config(arg)
  c.method = "epo"
  c.method_kwargs = ml_collections.ConfigDict(dict(
      entropy_coef=0.005, smooth_coef=10.0, kappa_low=0.0, kappa_high=2.0,
      alpha=0.1, variant="paper"))
  return c
