"""Clip-Cov: detach a random subset of high-covariance tokens.

Cui et al. 2025, https://arxiv.org/abs/2505.22617 (ratio 2e-4 at 7B;
the tiny preset's batches hold ~400 tokens, so it uses 2e-2).

  python -m experiments.main --config=experiments/configs/clip_cov.py:tiny \
      --workdir=runs/clip_cov
"""

import ml_collections

from experiments.configs import base


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = base.get_config(arg)
  c.objective = ml_collections.ConfigDict(dict(
      kind="clip_cov", eps_low=0.2, eps_high=0.2))
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("advantages", "clip_cov"),
      advantages=dict(kind="grpo_advantages"),
      clip_cov=dict(kind="clip_cov", ratio=0.02, cov_low=1.0, cov_high=5.0)))
  if arg not in ("", "tiny"):
    c.regularizers.clip_cov.ratio = 2e-4
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  del arg
  return [{"regularizers.clip_cov.ratio": r} for r in (0.005, 0.02, 0.05)]
