r"""Base config of the multi-turn agent experiments (``kind = "agent"``).

Every field, commented; the ``agent_<method>.py`` configs start from it and
run through the same entry point as the RLVR ones::

  python -m experiments.main --config=experiments/configs/agent_epo.py:tiny \
      --workdir=runs/agent_epo --config.train.num_steps=100

Sizes (``--config=experiments/configs/agent_<method>.py:<size>``):

* ``tiny``: the E3 token game (pure JAX, vocabulary 16, L = 4 action
  tokens, 12 turns, sparse terminal reward 10·success; one hidden binary
  digit read through a noisy tool) with a 2-layer, 64-wide decoder trained
  from scratch; whole episodes on device (one ``lax.scan`` over turns with
  the sampler inside); 250 iterations of 64 episodes, 2 PPO epochs x 2
  minibatches; CPU, minutes.
* ``calc``: the reasoning-gym ``chain_sum`` task with a calculator tool
  through the Python adapter (``calc:<expr>`` / ``answer:<x>`` turns,
  exact scoring), a character-level decoder; CPU.

The method is the chain ``regularizers`` (``order`` plus one dict per
member: ``kind``, a constructor of ``entropy_rl.agents`` or
``entropy_rl.regularizers``, and its keyword arguments; see
``entropy_rl.agent_builders``). Values that follow other fields (the turn
count, the run length) are ml_collections references, so that
``--config.env.token_game.max_turns=20`` or ``--config.train.num_steps=50``
carries over to them.
"""

import ml_collections

SIZES = ("tiny", "calc")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The base config (GRPO on trajectories, no entropy method)."""
  size = arg or "tiny"
  if size not in SIZES:
    raise ValueError(f"unknown size {size!r}; valid sizes are {SIZES}")
  c = ml_collections.ConfigDict()
  c.kind = "agent"  # experiments.main dispatches on it (rlvr|agent|classic)
  c.size = size
  c.seed = 0
  c.num_seeds = 1  # seeds vmapped in one jitted iteration (token game)
  c.env = ml_collections.ConfigDict(dict(
      kind="token_game",  # token_game (on device) | calculator (Python)
      # One hidden binary digit, 12 turns: guessing wins 1/2 of the time,
      # reading the (80%-reliable) tool and copying the digit ~0.9-0.97.
      token_game=ml_collections.ConfigDict(dict(
          num_slots=1, num_values=2, max_turns=12, p_true=0.8,
          reward_scale=10.0, command_mod=4)),
      calculator=ml_collections.ConfigDict(dict(
          name="chain_sum", max_turns=4, action_len=16, obs_len=12,
          init_obs_len=24, size=1000, seed=0))))
  # A tiny decoder from scratch; vocab_size comes from the environment.
  c.model = ml_collections.ConfigDict(dict(
      hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=4,
      intermediate_size=128))
  c.rollout = ml_collections.ConfigDict(dict(
      num_groups=8, group_size=8,  # R = 64 episodes per iteration
      temperature=1.0,
      layout="l2",  # l2: row per trajectory | l1: row per turn
      # AEPO's entropy-balanced branching rollout (token game only): of the
      # k = group_size samples per task, m are global, the rest is the
      # branch budget; a row branches after an observation with probability
      # clip(tau + weight·ΔH, 0, 1)·penalty^l (see agent_aepo.py).
      branching=ml_collections.ConfigDict(dict(
          enabled=False, initial_rollouts=4, tau=0.5, weight=0.2,
          penalty=0.5, window=20, fresh=True, pre_monitor=True, beta=1.0)),
      # DR-PO's dataset resets (token game only): with probability
      # reset_prob an episode starts after L ~ U{1, ..., demo_turns - 1}
      # teacher-forced turns of demo_action (see agent_dr_po.py).
      dataset_reset=ml_collections.ConfigDict(dict(
          enabled=False, reset_prob=1.0, demo_turns=3,
          demo_action=(2, 8, 8, 8)))))
  c.rollout.branching.initial_rollouts = c.rollout.get_ref("group_size") // 2
  c.objective = ml_collections.ConfigDict(dict(
      kind="ppo_clip", eps_low=0.2, eps_high=0.2, agg="token-mean"))
  c.regularizers = ml_collections.ConfigDict(dict(
      order=("advantages",),
      advantages=dict(kind="episode_advantages")))
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adam", learning_rate=1e-3, b1=0.9, b2=0.99, max_grad_norm=1.0))
  c.train = ml_collections.ConfigDict(dict(
      num_steps=250, epochs=2, minibatches=2))
  # SPEAR's self-imitation replay (layout l2, token game only; see
  # agent_spear.py). total_steps: T_r of the replay-loss ramp (half the run).
  c.replay = ml_collections.ConfigDict(dict(
      enabled=False, buffer_size=8, baseline_size=64, tolerate_steps=5,
      total_steps=half_run(c), coef=1.0, normalize_std=False, trigger=1.5))
  c.log_every = 10
  if size == "calc":
    c.env.kind = "calculator"
    c.model.update(hidden_size=32, num_layers=1, num_heads=2,
                   num_kv_heads=2, intermediate_size=64)
    c.rollout.update(num_groups=2, group_size=4)
    c.train.num_steps = 20
    c.log_every = 1
  # Plot labels and the agent runner's log prefix.
  c.name = "grpo"
  return c


def max_turns(c: ml_collections.ConfigDict):
  """A reference to the environment's turn count (follows overrides)."""
  return c.env[c.env.kind].get_ref("max_turns")


def half_run(c: ml_collections.ConfigDict):
  """A reference to ⌈train.num_steps / 2⌉ (at least 1 step)."""
  return (c.train.get_ref("num_steps") + 1) // 2


def get_sweep(arg: str = "tiny") -> list[dict]:
  """Three seeds."""
  del arg
  return [{"seed": s} for s in (0, 1, 2)]
