"""Text-agent environments: the protocols the rollouts step.

An agent environment takes the policy's action tokens and returns
observation tokens, a reward and a done flag per turn. Two kinds:

* :class:`AgentEnv`: pure JAX functions ``reset(rng) -> (state, obs [O0])``
  and ``step(state, action [L], rng) -> (state, obs [O], reward, done)``
  with static sizes (:class:`EnvSpec`), stepped on device by
  :func:`entropy_rl.agents.rollout`.
* :class:`PythonEnv` objects (tools, simulators, reasoning-gym checkers),
  stepped on the host by :func:`entropy_rl.agents.python_rollout`.

:class:`JaxEnvAsPython` puts an :class:`AgentEnv` behind the
:class:`PythonEnv` protocol (the two rollouts then agree token for token).

Observations use ``spec.pad_id`` for "no token" (they are masked), so a
Python environment may return fewer than O tokens; longer ones are cut to
O (:func:`pad_tokens`). The context of an episode holds
``C = O0 + T·(L + O)`` tokens (:attr:`EnvSpec.context_len`), the longest
episode, so nothing is ever dropped.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from entropy_rl.core import types

Array = types.Array
PRNGKey = types.PRNGKey


class EnvSpec(NamedTuple):
  """Static sizes of a text-agent environment.

  Attributes:
    action_len: L, tokens the policy emits per turn (at most; an end token
      stops a turn early).
    obs_len: O, observation tokens per turn (at most).
    init_obs_len: O0, tokens of the first observation (the task).
    max_turns: T; the episode is cut after T turns.
    vocab_size: V the observations live in.
    pad_id: the padding token ("no token" in observations).
    end_ids: tokens that end an action early (included in it).
  """

  action_len: int
  obs_len: int
  init_obs_len: int
  max_turns: int
  vocab_size: int
  pad_id: int = 0
  end_ids: tuple[int, ...] = ()

  @property
  def context_len(self) -> int:
    """C = O0 + T·(L + O): the whole episode."""
    return self.init_obs_len + self.max_turns * (self.action_len +
                                                 self.obs_len)


class AgentEnv(NamedTuple):
  """A pure-JAX text environment (one episode; the rollout vmaps it).

  Attributes:
    reset: ``reset(rng) -> (state, obs [O0] int32)``.
    step: ``step(state, action [L] int32, rng) -> (state, obs [O] int32,
      reward () f32, done () bool)``. Called only while the episode is on.
    spec: the :class:`EnvSpec`.
    metrics: ``metrics(state) -> {name: () array}`` read at the end of the
      episode (trajectory-level ``aux``, e.g. ``success``,
      ``n_tool_calls``); the names are static.
  """

  reset: Callable[[PRNGKey], tuple[Any, Array]]
  step: Callable[[Any, Array, PRNGKey], tuple[Any, Array, Array, Array]]
  spec: EnvSpec
  metrics: Callable[[Any], Mapping[str, Array]] = lambda state: {}


class PythonEnv(Protocol):
  """A host-side environment for :func:`entropy_rl.agents.python_rollout`
  (one episode).

  ``reset(key)`` gets a JAX PRNG key (use ``np.asarray(key)`` as a numpy
  seed) and returns the first observation's tokens; ``step(action, key)``
  gets the action tokens of the turn (up to and including an end token)
  and returns ``(obs tokens, reward, done)``; ``metrics()`` gives the
  trajectory-level values (same names for every row). None of them may
  raise on a malformed action: return reward 0.
  """

  def reset(self, key: Any) -> Sequence[int]:
    ...

  def step(self, action: Sequence[int], key: Any
           ) -> tuple[Sequence[int], float, bool]:
    ...

  def metrics(self) -> Mapping[str, float]:
    ...


def pad_tokens(tokens: Sequence[int], n: int, pad_id: int) -> list[int]:
  """The first ``n`` of ``tokens`` as ints, padded with ``pad_id`` to n."""
  tokens = [int(x) for x in list(tokens)[:n]]
  return tokens + [pad_id] * (n - len(tokens))


class JaxEnvAsPython:
  """A pure-JAX :class:`AgentEnv` behind the :class:`PythonEnv` protocol
  (one episode; jitted reset/step). For testing the Python adapter against
  the on-device rollout, and for mixing environment kinds."""

  _cache: dict = {}

  def __init__(self, env: AgentEnv):
    self.env = env
    key = id(env)
    if key not in JaxEnvAsPython._cache:
      JaxEnvAsPython._cache[key] = (jax.jit(env.reset), jax.jit(env.step),
                                    jax.jit(env.metrics), env)
    self._reset, self._step, self._metrics, _ = JaxEnvAsPython._cache[key]
    self.state = None

  def reset(self, key):
    self.state, obs = self._reset(jnp.asarray(key))
    return [int(x) for x in np.asarray(obs) if x != self.env.spec.pad_id]

  def step(self, action, key):
    spec = self.env.spec
    a = jnp.asarray(pad_tokens(action, spec.action_len, spec.pad_id),
                    jnp.int32)
    self.state, obs, reward, done = self._step(self.state, a, jnp.asarray(key))
    return ([int(x) for x in np.asarray(obs) if x != spec.pad_id],
            float(reward), bool(done))

  def metrics(self):
    return {k: float(v) for k, v in self._metrics(self.state).items()}
