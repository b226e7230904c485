"""DORAEMON (spec B7): Beta domain randomisation of CartPole.

Run: .venv/bin/python experiments/classic/run.py \
    --config experiments/configs/classic_doraemon.py[:tiny]

PPO trains under nu_i = prod Beta(a_k, b_k) over CartPole's (length,
masspole, masscart, force_mag); after each phase DORAEMON maximises H(nu)
s.t. KL(nu_i||nu) <= kl_ub and the importance-sampled success rate
(return >= performance_lb) >= success_rate. The plot shows the qualitative
effect: H(nu) rises from 4*H(Beta(100, 100)) = -7.70 towards 0 (uniform)
while the success rate stays above the dashed threshold. ``:tiny`` (4 seeds,
20 outer iterations) takes about 30 CPU-seconds.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.algo = 'doraemon'
  c.seeds = 4
  c.kwargs = ml_collections.ConfigDict()
  # PPO inner loop (a PPOConfig)
  c.kwargs.ppo = ml_collections.ConfigDict(
      dict(num_envs=8, num_steps=64, lr=2.5e-3))
  # success condition alpha and trust region epsilon (a DoraemonConfig);
  # the paper sweeps kl_ub over 0.001-0.2
  c.kwargs.doraemon = ml_collections.ConfigDict(
      dict(kl_ub=0.05, success_rate=0.5))
  c.kwargs.performance_lb = 200.0  # G_succ: an episode "succeeds" above it
  c.kwargs.eval_steps = 201  # enough steps to tell success
  c.kwargs.eval_episodes = 32
  if arg == "tiny":
    c.kwargs.outer_iters = 20
    c.kwargs.ppo_updates_per_iter = 10
  else:
    c.kwargs.outer_iters = 40
    c.kwargs.ppo_updates_per_iter = 20
    c.kwargs.doraemon.kl_ub = 0.02
    c.kwargs.performance_lb = 400.0
    c.kwargs.eval_steps = 500
  # dashed reference lines in the plot: alpha and H(uniform) = 0
  c.hlines = ml_collections.ConfigDict(dict(success=0.5, entropy=0.0))
  return c
