"""80/20: keep the policy gradient of the top-20% entropy tokens only.

Wang et al. 2025, "Beyond the 80/20 Rule", https://arxiv.org/abs/2506.01939
(Section "RLVR using only policy gradients of forking tokens", objective
J_HighEnt: DAPO's objective with the gradient kept on the top ρ = 20% of
tokens by entropy in the batch). Hence DAPO's loss (0.2 / 0.28, token-mean;
dual clip c = 10 from the verl DAPO scripts, methods_rlvr.md §1.4) and
dynamic sampling. Not in methods_rlvr.md.

  python -m experiments.main --config=experiments/configs/forking.py:tiny \
      --workdir=runs/forking
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = base.get_config(arg)
  c.objective = ml_collections.ConfigDict(dict(
      kind="dapo", eps_low=0.2, eps_high=0.28, dual_c=10.0))
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("advantages", "forking"),
      advantages=dict(kind="grpo_advantages"),
      forking=dict(kind="forking_tokens", top_fraction=0.2)))
  c.rollout.dynamic_sampling.update(enabled=True, max_rounds=3)
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  del arg
  return [{"regularizers.forking.top_fraction": f} for f in (0.1, 0.2, 0.5)]
