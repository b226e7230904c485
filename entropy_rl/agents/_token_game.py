"""E3 "token game": a sparse-reward multi-turn stand-in for LLM agents.

Spec section "E3" (``../shared/specs/methods_agents_classic.md``). Pure JAX,
vocabulary 16, L = 4 action tokens per turn, O = 2 observation tokens.

A hidden key of K digits in [0, D) is drawn at reset. Each turn the agent
emits ``[command, a1, a2, a3]``:

* ``TOOL s ...``: look up slot ``s mod K``. The observation is
  ``[SLOT + k, VALUE + d]`` with d the slot's digit with probability
  ``p_true``, else a uniformly random digit: one call is unreliable, several
  calls (a majority) are needed.
* ``ANSWER g1 .. gK``: guess ``g_i = (a_i − VALUE) mod D``. The episode
  ends with reward ``reward_scale · 1[all digits right]`` (EPO's ×10) and
  observation ``[ANSWER, VALUE + success]``.
* anything else: a wasted turn, observation ``[NOTHING, NOTHING]``.

The episode is cut after ``max_turns`` turns with reward 0. Rewards are
sparse and terminal: a random policy answers at some turn and is right with
probability D^−K, so early GRPO updates mostly reinforce "answer now with
some digits" (premature convergence); the optimum gathers evidence first
and copies the observed digits. With ``command_mod = 16`` the commands are
the exact tokens below (a random policy picks each with probability 1/16
per turn); with 4, any token ≡ TOOL or ANSWER (mod 4) is that command
(probability 1/4 each), which makes tool use easy to discover. Token ids:

====  =========  ===================================================
id    name       use
====  =========  ===================================================
0     PAD        padding (never observed)
1     NOTHING    initial observation / wasted turn
2     TOOL       command
3     ANSWER     command; answer observation
4-7   SLOT + k   tool observation: which slot (K ≤ 3)
8-15  VALUE + d  tool observation: a digit (D ≤ 8); answer arguments
====  =========  ===================================================
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from entropy_rl.agents import _envs as envs_lib
from entropy_rl.core import types

Array = types.Array

VOCAB = 16
PAD, NOTHING, TOOL, ANSWER, SLOT, VALUE = 0, 1, 2, 3, 4, 8
ACTION_LEN, OBS_LEN, INIT_OBS_LEN = 4, 2, 1


class GameState(NamedTuple):
  key: Array  # [K] int32 hidden digits
  turn: Array  # () int32 turns taken
  done: Array  # () bool
  success: Array  # () bool
  n_tool_calls: Array  # () int32
  answered: Array  # () bool


def token_game(*, num_slots: int = 2, num_values: int = 4,
               max_turns: int = 12, p_true: float = 0.7,
               reward_scale: float = 10.0, command_mod: int = 16
               ) -> envs_lib.AgentEnv:
  """The E3 token game as an :class:`~entropy_rl.agents.AgentEnv`.

  Args:
    num_slots: K, digits of the hidden key (1-3: the answer has 3 slots).
    num_values: D, values of a digit (2-8).
    max_turns: T (the spec suggests 10-30; the default 12 lets a tiny model
      learn within minutes on CPU).
    p_true: probability that a tool call reveals the true digit.
    reward_scale: the terminal success reward (10 in EPO).
    command_mod: the command is ``a0 mod command_mod`` compared with
      ``TOOL``/``ANSWER`` mod it: 16 = exact tokens (a random policy calls
      each with probability 1/16 per turn), 4 = any of 4 tokens (1/4).

  Returns:
    The environment; ``metrics(state)`` gives ``success``, ``n_tool_calls``
    and ``answered`` (trajectory-level aux).
  """
  if not 1 <= num_slots <= ACTION_LEN - 1:
    raise ValueError(f"num_slots must be in [1, {ACTION_LEN - 1}], got "
                     f"{num_slots}")
  if not 2 <= num_values <= VOCAB - VALUE:
    raise ValueError(f"num_values must be in [2, {VOCAB - VALUE}], got "
                     f"{num_values}")
  if max_turns < 1:
    raise ValueError(f"max_turns must be >= 1, got {max_turns}")
  if command_mod not in (4, 8, 16):
    raise ValueError(f"command_mod must be 4, 8 or 16, got {command_mod}")
  if not 0.0 <= p_true <= 1.0:
    raise ValueError(f"p_true must be in [0, 1], got {p_true}")
  k, d = num_slots, num_values
  spec = envs_lib.EnvSpec(action_len=ACTION_LEN, obs_len=OBS_LEN,
                          init_obs_len=INIT_OBS_LEN, max_turns=max_turns,
                          vocab_size=VOCAB, pad_id=PAD)

  def reset(rng):
    key = jax.random.randint(rng, (k,), 0, d, jnp.int32)
    state = GameState(key, jnp.zeros((), jnp.int32), jnp.zeros((), bool),
                      jnp.zeros((), bool), jnp.zeros((), jnp.int32),
                      jnp.zeros((), bool))
    return state, jnp.full((INIT_OBS_LEN,), NOTHING, jnp.int32)

  def step(state, action, rng):
    action = action.astype(jnp.int32)
    cmd = jnp.mod(action[0], command_mod)
    is_tool = cmd == TOOL % command_mod
    is_answer = cmd == ANSWER % command_mod
    # Tool: a noisy reading of one slot.
    slot = jnp.mod(action[1], k)
    k_coin, k_val = jax.random.split(rng)
    true = jax.random.bernoulli(k_coin, p_true)
    noise = jax.random.randint(k_val, (), 0, d, jnp.int32)
    digit = jnp.where(true, state.key[slot], noise)
    # Answer: all K digits right.
    guess = jnp.mod(action[1:1 + k] - VALUE, d)
    right = jnp.all(guess == state.key)
    success = is_answer & right
    obs = jnp.where(
        is_tool, jnp.stack([SLOT + slot, VALUE + digit]),
        jnp.where(is_answer,
                  jnp.stack([jnp.int32(ANSWER), VALUE + right.astype(
                      jnp.int32)]),
                  jnp.full((OBS_LEN,), NOTHING, jnp.int32)))
    turn = state.turn + 1
    done = is_answer | (turn >= max_turns)
    reward = reward_scale * success.astype(jnp.float32)
    new = GameState(state.key, turn, done, success,
                    state.n_tool_calls + is_tool.astype(jnp.int32),
                    is_answer)
    return new, obs.astype(jnp.int32), reward, done

  def metrics(state):
    return {"success": state.success.astype(jnp.float32),
            "n_tool_calls": state.n_tool_calls.astype(jnp.float32),
            "answered": state.answered.astype(jnp.float32),
            "episode_turns": state.turn.astype(jnp.float32)}

  return envs_lib.AgentEnv(reset, step, spec, metrics)


def scripted_action(command: int, *args: int) -> Array:
  """``[command, *args]`` padded with NOTHING to L tokens (tests, demos)."""
  a = [command, *args][:ACTION_LEN]
  return jnp.asarray(a + [NOTHING] * (ACTION_LEN - len(a)), jnp.int32)
