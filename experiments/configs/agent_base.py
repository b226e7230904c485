"""Base config of the multi-turn agent experiments (experiments/agents/run.py).

Sizes (``--config experiments/configs/agent_<method>.py:<size>``):

* ``tiny``: the E3 token game (pure JAX, vocabulary 16, L = 4 action
  tokens, 12 turns, sparse terminal reward 10·success; one hidden binary
  digit read through a noisy tool) with a 2-layer, 64-wide decoder trained
  from scratch; whole episodes on device (one ``lax.scan`` over turns with
  the sampler inside); 250 iterations of 64 episodes, 2 PPO epochs x 2
  minibatches; CPU, minutes.
* ``calc``: the reasoning-gym ``chain_sum`` task with a calculator tool
  through the Python adapter (``calc:<expr>`` / ``answer:<x>`` turns,
  exact scoring), a character-level decoder; CPU.

Run one config::

  .venv/bin/python experiments/agents/run.py \
      --config experiments/configs/agent_epo.py:tiny --workdir runs/agent_epo

or the default comparison (GRPO vs EPO vs EMPG) with no ``--config``.
"""

import ml_collections

SIZES = ("tiny", "calc")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The base config (GRPO on trajectories, no entropy method)."""
  size = arg or "tiny"
  if size not in SIZES:
    raise ValueError(f"unknown size {size!r}; valid sizes are {SIZES}")
  c = ml_collections.ConfigDict()
  c.size = size
  c.method = "grpo"  # grpo | epo | empg | aepo | spear | dr_po
  c.seed = 0
  c.num_seeds = 1  # seeds vmapped in one jitted iteration (token game)
  c.env = ml_collections.ConfigDict(dict(
      kind="token_game",
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
      layout="l2"))  # l2: row per trajectory | l1: row per turn
  c.objective = ml_collections.ConfigDict(dict(
      eps_low=0.2, eps_high=0.2, agg="token-mean"))
  # Keyword arguments of the method's transform (see experiments/agents).
  c.method_kwargs = ml_collections.ConfigDict()
  c.optimizer = ml_collections.ConfigDict(dict(
      learning_rate=1e-3, b1=0.9, b2=0.99, max_grad_norm=1.0))
  c.train = ml_collections.ConfigDict(dict(
      num_steps=250, epochs=2, minibatches=2))
  c.log_every = 10
  if size == "calc":
    c.env.kind = "calculator"
    c.model.update(hidden_size=32, num_layers=1, num_heads=2,
                   num_kv_heads=2, intermediate_size=64)
    c.rollout.update(num_groups=2, group_size=4)
    c.train.num_steps = 20
    c.log_every = 1
  return c
