"""Agentic AEPO, update side (spec A3).

Dong et al. 2025, https://arxiv.org/abs/2510.14545. Entropy-aware advantage
``A·(1 + a·z)`` (z the token-entropy z-score, a = 0.2) and the
gradient-preserving upper clip on every token (``sg_scope="all_upper"``;
"low_entropy" / "high_entropy" are the other readings). The rollout-side
branching budget is not wired into the agent rollout yet.

  .venv/bin/python experiments/agents/run.py \
      --config experiments/configs/agent_aepo.py:tiny --workdir runs/aepo
"""

import ml_collections

from experiments.configs import agent_base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = agent_base.get_config(arg)
  c.method = "aepo"
  c.method_kwargs = ml_collections.ConfigDict(dict(adv_weight=0.2,
                                                   sg_scope="all_upper"))
  return c
