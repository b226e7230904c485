"""Agentic AEPO (spec A3): entropy-balanced rollout and update.

Dong et al. 2025, https://arxiv.org/abs/2510.14545.

* Update: entropy-aware advantage ``A·(1 + a·z)`` (z the token-entropy
  z-score, a = 0.2) and the gradient-preserving upper clip; ``sg_scope``
  picks the reading of its scope ("all_upper", the paper's; "low_entropy",
  the third-party port's autodiff; "high_entropy", the abstract's; "none").
* Rollout (``rollout.branching``, on-device token-game rollout only): of
  the k = ``group_size`` samples per task, m are global; the rest is the
  branch budget. ``pre_monitor=True`` (AEPO's entropy pre-monitoring):
  ``m = round(k·σ(β(H_root − H̄_tool)))`` in [1, k] per task, from a
  two-turn pre-rollout of the task (H_root: first-turn chunk entropy,
  H̄_tool: chunk entropy after a tool result; ``initial_rollouts`` if it
  saw no tool result); ``pre_monitor=False``: m = ``initial_rollouts``
  (ARPO). After an observation, a row branches with
  probability ``clip(τ + w·ΔH, 0, 1)·penalty^l`` (ΔH: its action's chunk
  entropy minus its first turn's; l: consecutive branches on the path);
  the branch copies the state before that action and re-samples it
  (``entropy_rl.agents.branching_rollout``). ``enabled=False``: the plain
  rollout. ARPO: n = 16, 8 global, τ = 0.5, w = 0.2, 20-token window; the
  penalty 0.5 (P halves per consecutive branch) and β = 1 are the
  unverified AEPO forms (agent_base.py's settings).

  python -m experiments.main --config=experiments/configs/agent_aepo.py:tiny \
      --workdir=runs/agent_aepo
"""

import ml_collections

from experiments.configs import agent_base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = agent_base.get_config(arg)
  c.name = "aepo"
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("advantages", "aepo"),
      advantages=dict(kind="episode_advantages"),
      aepo=dict(kind="agentic_aepo", adv_weight=0.2, sg_scope="all_upper")))
  c.rollout.branching.enabled = c.env.kind == "token_game"
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  """Plain vs branching rollout × the clip-scope readings."""
  del arg
  return [{"rollout.branching.enabled": e,
           "regularizers.aepo.sg_scope": s}
          for e in (False, True)
          for s in ("all_upper", "low_entropy", "high_entropy")]
