"""SPEAR (spec A4): progressive exploration and self-imitation replay.

Qin et al. 2025, https://arxiv.org/abs/2509.22601. A cosine-decayed
tool-call bonus ``min(1, 0.1·n_calls)·c(t)`` added to the return before the
GRPO advantages (T_tc = half the run; tool calls are the token game's TOOL
turns or the calculator's ``calc:`` turns), Clip-Cov
(``entropy_rl.agents.spear_clip_cov``: on-policy rows 2e-4/1/5, replayed
rows 0.02/2/60, each over its own rows' statistics) and the Dr.BoT clip
0.2/0.28.

Self-imitation replay (``replay``, token game only): positive-advantage
trajectories enter a buffer (expiry after ``tolerate_steps``); once it holds
more than 1.5·``buffer_size`` rows, a pass recalibrates their advantages
against the median of the stored group means (``R − μ₅₀``), keeps A ≥ 0,
subsamples a power of two and appends them to the batch with the ramped
weight ``w(t) = c_r(1 − cos(πt/T_r))/2`` (T_r = ``total_steps``, default
half the run): the loss is ``L_on + w(t)·L_replay``, each a token-mean over
its own rows' tokens (``entropy_rl.agents.replay_loss``).
SPEAR's script: buffer 2048, baseline 10240, tolerate 5, c_r = 1,
T_r = 200; scaled here to 64 episodes per iteration.

  python -m experiments.main --config=experiments/configs/agent_spear.py:tiny \
      --workdir=runs/agent_spear
"""

import ml_collections

from experiments.configs import agent_base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = agent_base.get_config(arg)
  c.name = "spear"
  c.objective.eps_high = 0.28
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("toolcall", "advantages", "clip_cov"),
      toolcall=dict(kind="toolcall_reward", total_steps=agent_base.half_run(c),
                    mode="cosine"),
      advantages=dict(kind="episode_advantages"),
      clip_cov=dict(kind="spear_clip_cov", ratio=2e-4, cov_low=1.0,
                    cov_high=5.0, replay_ratio=0.02, replay_cov_low=2.0,
                    replay_cov_high=60.0)))
  c.replay.update(enabled=c.env.kind == "token_game", buffer_size=8,
                  baseline_size=64, tolerate_steps=5, coef=1.0)
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  """Replay off, and on with c_r = 0.1 and 1."""
  del arg
  return [{"replay.enabled": e, "replay.coef": cr}
          for e, cr in ((False, 1.0), (True, 0.1), (True, 1.0))]
