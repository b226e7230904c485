"""DORAEMON (spec B7): Beta domain randomisation of CartPole.

Run::

  python -m experiments.main \
      --config=experiments/configs/classic_doraemon.py:tiny \
      --workdir=runs/doraemon

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
  c.kind = "classic"  # experiments.main dispatches on it
  tiny = arg == "tiny"
  c.seed = 0  # seed i of num_seeds: fold of PRNGKey(seed)
  c.num_seeds = 4  # vmapped in one jitted run
  # The algorithm (entropy_rl.classic_builders): kind + its settings.
  c.algorithm = ml_collections.ConfigDict(dict(
      kind="doraemon",
      # PPO inner loop (a PPOConfig)
      ppo=dict(num_envs=8, num_steps=64, lr=2.5e-3),
      # success condition alpha and trust region epsilon (a DoraemonConfig);
      # the paper sweeps kl_ub over 0.001-0.2
      doraemon=dict(kl_ub=0.05 if tiny else 0.02, success_rate=0.5),
      # G_succ: an episode "succeeds" above it
      performance_lb=200.0 if tiny else 400.0,
      eval_steps=201 if tiny else 500,  # enough steps to tell success
      eval_episodes=32,
      outer_iters=20 if tiny else 40,
      ppo_updates_per_iter=10 if tiny else 20))
  # dashed reference lines in the plot: alpha and H(uniform) = 0
  c.hlines = ml_collections.ConfigDict(dict(success=0.5, entropy=0.0))
  return c


def get_sweep(arg: str = "tiny") -> list[dict]:
  """The trust region ε (the paper sweeps 0.001-0.2)."""
  del arg
  return [{"algorithm.doraemon.kl_ub": k} for k in (0.005, 0.05, 0.2)]
