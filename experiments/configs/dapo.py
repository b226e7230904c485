"""DAPO: clip-higher (0.2/0.28), dual clip 10, token-mean, overlong shaping,
dynamic sampling.

Yu et al. 2025, https://arxiv.org/abs/2503.14476 (§4.1 training details:
ε_low = 0.2, ε_high = 0.28, overlong cache 4096 of a 20480-token budget);
methods_rlvr.md §1.4(e): dual clip c = 10 is from the verl DAPO recipe
scripts (not the paper), token-mean. The overlong cache is scaled to the
sizes' budgets (2 of 5 tokens at tiny, 8 otherwise; the paper's 4096
exceeds them). Dynamic sampling drops
groups whose rewards all tie and samples up to ``max_rounds`` rounds of
prompts per step until the batch is full (``dynamic/*`` metrics).

  python -m experiments.main --config=experiments/configs/dapo.py:tiny \
      --workdir=runs/dapo
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = base.get_config(arg)
  size, _ = base.parse_arg(arg)
  c.objective = ml_collections.ConfigDict(dict(
      kind="dapo", eps_low=0.2, eps_high=0.28, dual_c=10.0))
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("overlong", "advantages"),
      advantages=dict(kind="grpo_advantages"),
      overlong=dict(kind="overlong_reward_shaping", l_max=-1, l_cache=2,
                    coef=1.0)))
  c.regularizers.overlong.l_cache = 2 if size == "tiny" else 8
  c.rollout.dynamic_sampling.update(enabled=True, max_rounds=3)
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  del arg
  return [{"objective.eps_high": e, "rollout.dynamic_sampling.enabled": d}
          for e in (0.2, 0.28, 0.35) for d in (True, False)]
