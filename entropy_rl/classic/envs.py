"""Small pure-JAX environments: a gymnax adapter, toy tasks and tabular MDPs.

Every environment is an :class:`Env` of pure functions, so a whole training
loop (``jit(scan(vmap(env.step)))``, PureJaxRL style) runs on device and
vmaps over seeds.

* :func:`make` wraps gymnax 1.0.1 (``CartPole-v1``, ``Pendulum-v1``,
  ``MountainCarContinuous-v0``, ``DeepSea-bsuite``, ``FourRooms-misc``,
  ``BernoulliBandit-misc``, ``GaussianBandit-misc``, ...). gymnax's ``step``
  returns six values ``(obs, state, reward, terminated, truncated, info)`` and
  auto-resets; the adapter keeps ``terminated`` (for bootstrapping) apart from
  ``truncated`` and returns ``info["final_observation"]`` as ``next_obs`` so
  that a truncated transition bootstraps from the true last state.
* :func:`continuous_bandit`, :func:`point_mass` and :func:`dummy_actions`:
  hand-written continuous tasks for CI tests, DIAYN and ACE.
* :class:`TabularMDP` with known ``P``/``R`` (:func:`chain_mdp`,
  :func:`random_mdp`, :func:`gridworld_mdp`) for exact dynamic programming, and
  :func:`tabular_env` to interact with one episodically.

Continuous actions are in [−1, 1]^D at the agent side; the adapter rescales
them to the environment's box.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


class Transition(NamedTuple):
  """One environment step as the adapter returns it."""

  obs: Array  # [obs_dim] observation after auto-reset
  state: Any
  reward: Array  # []
  terminated: Array  # [] bool: true terminal (no bootstrap)
  truncated: Array  # [] bool: time limit (bootstrap from next_obs)
  next_obs: Array  # [obs_dim] the true next observation (before reset)


class Env(NamedTuple):
  """A functional environment.

  Attributes:
    reset: ``reset(key, params) -> (obs, state)``.
    step: ``step(key, state, action, params) -> Transition`` (auto-resets).
    params: default environment parameters (a pytree; DORAEMON randomises it).
    obs_dim: flattened observation size.
    num_actions: number of discrete actions (0 for continuous).
    action_dim: continuous action dimension (0 for discrete).
    name: a label.
  """

  reset: Callable[..., Any]
  step: Callable[..., Transition]
  params: Any
  obs_dim: int
  num_actions: int
  action_dim: int
  name: str = "env"

  @property
  def discrete(self) -> bool:
    return self.num_actions > 0


GYMNAX_ENVS = ("CartPole-v1", "Pendulum-v1", "MountainCarContinuous-v0",
               "Acrobot-v1", "DeepSea-bsuite", "FourRooms-misc",
               "BernoulliBandit-misc", "GaussianBandit-misc",
               "PointRobot-misc", "SimpleBandit-bsuite")


def make(name: str, **kwargs) -> Env:
  """Builds an :class:`Env`: a gymnax id or one of the toy tasks here.

  Args:
    name: a gymnax id (see :data:`GYMNAX_ENVS`), ``"ContinuousBandit"`` or
      ``"PointMass"``.
    **kwargs: forwarded to the constructor (gymnax ``make`` kwargs).

  Returns:
    An :class:`Env`.
  """
  if name == "ContinuousBandit":
    return continuous_bandit(**kwargs)
  if name == "PointMass":
    return point_mass(**kwargs)
  return from_gymnax(name, **kwargs)


def from_gymnax(name: str, **kwargs) -> Env:
  """Adapts a gymnax environment (6-value ``step``) to :class:`Env`."""
  import gymnax  # pylint: disable=g-import-not-at-top
  if name not in gymnax.registered_envs:
    raise ValueError(f"unknown environment {name!r}; gymnax has "
                     f"{gymnax.registered_envs}")
  genv, params = gymnax.make(name, **kwargs)
  space = genv.action_space(params)
  obs_shape = genv.observation_space(params).shape
  obs_dim = int(np.prod(obs_shape))
  if hasattr(space, "n"):
    num_actions, action_dim = int(space.n), 0
    low = high = None
  else:
    num_actions, action_dim = 0, int(np.prod(space.shape))
    low = jnp.asarray(space.low, jnp.float32)
    high = jnp.asarray(space.high, jnp.float32)

  flat = lambda o: jnp.asarray(o, jnp.float32).reshape(-1)

  def to_env_action(a):
    if num_actions:
      return a
    a = jnp.clip(a, -1.0, 1.0)
    a = low + (a + 1.0) * 0.5 * (high - low)
    return a.reshape(space.shape)

  def reset(key, params=params):
    obs, state = genv.reset(key, params)
    return flat(obs), state

  def step(key, state, action, params=params):
    obs, state, reward, term, trunc, info = genv.step(
        key, state, to_env_action(action), params)
    return Transition(flat(obs), state, jnp.asarray(reward, jnp.float32),
                      jnp.asarray(term, bool), jnp.asarray(trunc, bool),
                      flat(info["final_observation"]))

  return Env(reset, step, params, obs_dim, num_actions, action_dim, name)


# ---------------------------------------------------------------------------
# Hand-written continuous tasks.


def first_episode_return(env: Env, act, rng: Array, num_episodes: int,
                         max_steps: int) -> Array:
  """Mean undiscounted return of ``act`` over ``num_episodes`` parallel envs.

  Runs ``max_steps`` steps in one ``lax.scan``; each env counts only its
  first episode (rewards stop at its first termination or truncation).

  Args:
    env: an `Env`.
    act: ``act(obs [E, O], key) -> actions [E, ...]``.
    rng: a PRNG key.
    num_episodes: E, the parallel envs.
    max_steps: steps to run (≥ the env's episode length for full episodes).

  Returns:
    A scalar: the mean over the E first episodes.
  """
  k0, k1 = jax.random.split(rng)
  obs, es = jax.vmap(env.reset, (0, None))(
      jax.random.split(k0, num_episodes), env.params)

  def body(c, k):
    obs, es, ret, alive = c
    ka, ks = jax.random.split(k)
    tr = jax.vmap(env.step, (0, 0, 0, None))(
        jax.random.split(ks, num_episodes), es, act(obs, ka), env.params)
    ret = ret + alive * tr.reward
    alive = alive * (1.0 - (tr.terminated | tr.truncated))
    return (tr.obs, tr.state, ret, alive), None

  (_, _, ret, _), _ = jax.lax.scan(
      body, (obs, es, jnp.zeros(num_episodes), jnp.ones(num_episodes)),
      jax.random.split(k1, max_steps))
  return ret.mean()


class _TimeState(NamedTuple):
  pos: Array
  t: Array


def continuous_bandit(action_dim: int = 1, target: float = 0.5,
                      irrelevant: int = 0) -> Env:
  """One-step task: r = −Σ_i (a_i − target)² over the first D dims.

  ``irrelevant`` extra action dimensions do not affect the reward (ACE's
  dummy-dimension check). The observation is the constant [1].
  """
  d = action_dim + irrelevant

  def reset(key, params=None):
    del key, params
    return jnp.ones((1,), jnp.float32), _TimeState(jnp.zeros((1,)),
                                                  jnp.zeros((), jnp.int32))

  def step(key, state, action, params=None):
    del key, params
    a = jnp.clip(action, -1.0, 1.0)[:action_dim]
    r = -jnp.sum((a - target) ** 2)
    obs = jnp.ones((1,), jnp.float32)
    return Transition(obs, state, r, jnp.array(True), jnp.array(False), obs)

  return Env(reset, step, None, 1, 0, d, "ContinuousBandit")


def point_mass(horizon: int = 10, speed: float = 0.2) -> Env:
  """A reward-free 2-D point in [−1, 1]²: pos ← clip(pos + speed·a).

  Episodes last ``horizon`` steps from the origin (truncation). Used by DIAYN:
  skills should reach distinguishable regions.
  """

  def reset(key, params=None):
    del key, params
    pos = jnp.zeros((2,), jnp.float32)
    return pos, _TimeState(pos, jnp.zeros((), jnp.int32))

  def step(key, state, action, params=None):
    del key, params
    pos = jnp.clip(state.pos + speed * jnp.clip(action, -1.0, 1.0), -1.0, 1.0)
    t = state.t + 1
    trunc = t >= horizon
    new = _TimeState(jnp.where(trunc, 0.0, pos), jnp.where(trunc, 0, t))
    return Transition(new.pos, new, jnp.zeros(()), jnp.array(False), trunc,
                      pos)

  return Env(reset, step, None, 2, 0, 2, "PointMass")


def dummy_actions(env: Env, k: int) -> Env:
  """Appends ``k`` action dimensions that the environment ignores (ACE)."""
  if env.discrete:
    raise ValueError("dummy_actions needs a continuous env, got "
                     f"{env.name} with {env.num_actions} discrete actions")

  def step(key, state, action, params=env.params):
    return env.step(key, state, action[:env.action_dim], params)

  return env._replace(step=step, action_dim=env.action_dim + k,
                      name=f"{env.name}+{k}dummy")


# ---------------------------------------------------------------------------
# Tabular MDPs with known dynamics.


class TabularMDP(NamedTuple):
  """A finite MDP.

  Attributes:
    P: [S, A, S] transition probabilities.
    R: [S, A] expected rewards.
    gamma: discount.
    mu0: [S] initial-state distribution.
    horizon: episode length H for episodic algorithms.
  """

  P: Array
  R: Array
  gamma: float = 0.9
  mu0: Array | None = None
  horizon: int = 10

  @property
  def num_states(self) -> int:
    return self.P.shape[0]

  @property
  def num_actions(self) -> int:
    return self.P.shape[1]


def chain_mdp(n: int = 5, gamma: float = 0.9, slip: float = 0.0,
              horizon: int = 10) -> TabularMDP:
  """An n-state chain: action 1 moves right, 0 moves left; r = 1 at the end.

  With ``slip`` the move goes the other way with that probability.
  """
  s = np.arange(n)
  right = np.minimum(s + 1, n - 1)
  left = np.maximum(s - 1, 0)
  P = np.zeros((n, 2, n))
  P[s, 0, left] += 1 - slip
  P[s, 0, right] += slip
  P[s, 1, right] += 1 - slip
  P[s, 1, left] += slip
  R = np.zeros((n, 2))
  R[n - 1, :] = 1.0
  mu0 = np.zeros(n)
  mu0[0] = 1.0
  return TabularMDP(jnp.asarray(P, jnp.float32), jnp.asarray(R, jnp.float32),
                    gamma, jnp.asarray(mu0, jnp.float32), horizon)


def random_mdp(key: Array, num_states: int = 5, num_actions: int = 3,
               gamma: float = 0.9, horizon: int = 10,
               concentration: float = 1.0) -> TabularMDP:
  """A random MDP: P(·|s,a) ~ Dirichlet(concentration), R ~ U(0, 1)."""
  kp, kr = jax.random.split(key)
  P = jax.random.dirichlet(kp, jnp.full((num_states,), concentration),
                           (num_states, num_actions))
  R = jax.random.uniform(kr, (num_states, num_actions))
  mu0 = jnp.full((num_states,), 1.0 / num_states)
  return TabularMDP(P, R, gamma, mu0, horizon)


def gridworld_mdp(size: int = 4, gamma: float = 0.9,
                  horizon: int = 10) -> TabularMDP:
  """A deterministic size×size grid, 4 moves (stay at walls), start (0, 0).

  Reward 1 in the far corner. S = size², A = 4.
  """
  n = size * size
  P = np.zeros((n, 4, n))
  moves = ((0, 1), (0, -1), (1, 0), (-1, 0))
  for s in range(n):
    r, c = divmod(s, size)
    for a, (dr, dc) in enumerate(moves):
      rr = min(max(r + dr, 0), size - 1)
      cc = min(max(c + dc, 0), size - 1)
      P[s, a, rr * size + cc] = 1.0
  R = np.zeros((n, 4))
  R[n - 1] = 1.0
  mu0 = np.zeros(n)
  mu0[0] = 1.0
  return TabularMDP(jnp.asarray(P, jnp.float32), jnp.asarray(R, jnp.float32),
                    gamma, jnp.asarray(mu0, jnp.float32), horizon)


def tabular_env(mdp: TabularMDP) -> Env:
  """Samples an :class:`TabularMDP` episodically; obs is one-hot(s).

  Episodes are truncated after ``mdp.horizon`` steps; the state carries the
  integer state in ``pos`` (shape []) and the step ``t``.
  """
  S = mdp.num_states
  mu0 = (mdp.mu0 if mdp.mu0 is not None else jnp.full((S,), 1.0 / S))

  def reset(key, params=None):
    del params
    s = jax.random.choice(key, S, p=mu0)
    return jax.nn.one_hot(s, S), _TimeState(s, jnp.zeros((), jnp.int32))

  def step(key, state, action, params=None):
    del params
    k1, k2 = jax.random.split(key)
    s2 = jax.random.choice(k1, S, p=mdp.P[state.pos, action])
    r = mdp.R[state.pos, action]
    t = state.t + 1
    trunc = t >= mdp.horizon
    obs_re, st_re = reset(k2)
    new = jax.tree.map(lambda x, y: jnp.where(trunc, x, y), st_re,
                       _TimeState(s2, t))
    next_obs = jax.nn.one_hot(s2, S)
    return Transition(jnp.where(trunc, obs_re, next_obs), new, r,
                      jnp.array(False), trunc, next_obs)

  return Env(reset, step, None, S, mdp.num_actions, 0, "TabularMDP")
