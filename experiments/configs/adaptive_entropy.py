"""GRPO with an entropy coefficient driven toward a target entropy.

He et al. 2025, Skywork-OR1, https://arxiv.org/abs/2505.22312 (§3 MAGIC,
"Adaptive Entropy Control"); values from the authors' code
(github.com/SkyworkAI/Skywork-OR1 @64e96af, ``or1_scripts/train/7b_8k.sh``
and ``verl/trainer/config/ppo_trainer.yaml``): target entropy 0.2, entropy
coefficient in [0, 0.005] starting at 0, GRPO advantages, PPO clip 0.2
(no dual clip), token-mean (verl ``masked_mean``), no KL loss.

Differences: the authors' controller moves the coefficient by a fixed
±Δ = 1e-4 per step (sign of H* − H̄) and applies the bonus only while
H̄ < H*; ours is proportional, c ← clip(c + lr·(H* − H̄)), lr = 0.005 (not
stated in the paper in this form). Toy value: the tiny model's rollout
entropy is ~0.4-0.6 nats, so a 0.2 target would never switch the bonus
on; the defaults use H* = 0.6 and ``:paper`` uses 0.2.

  python -m experiments.main \
      --config=experiments/configs/adaptive_entropy.py:tiny \
      --workdir=runs/adaptive_entropy
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = base.get_config(arg)
  _, paper = base.parse_arg(arg)
  c.objective = ml_collections.ConfigDict(dict(
      kind="grpo", eps=0.2, agg="token-mean"))
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("advantages", "adaptive"),
      advantages=dict(kind="grpo_advantages"),
      adaptive=dict(kind="adaptive_entropy", target=0.2 if paper else 0.6,
                    init_coef=0.0, lr=0.005, min_coef=0.0, max_coef=0.005)))
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  del arg
  return [{"regularizers.adaptive.target": t} for t in (0.3, 0.6, 1.0)]
