"""Munchausen-DQN: the deep MD-VI agent, on device (spec §B9).

"Munchausen Reinforcement Learning", Vieillard, Pietquin & Geist, NeurIPS
2020, https://arxiv.org/abs/2007.14430; agent after google-research
``munchausen_rl/agents/m_dqn.py`` (Dopamine's DQN with a modified target).
The regression target adds the scaled log-policy of the replayed action to
the reward and bootstraps with the soft value of the target network::

    π(·|s) = softmax(q̄(s, ·)/τ)                         (target network q̄)
    y      = r + α·clip(τ log π(a|s), l₀, 0)
             + γ(1 − d)·Σ_a' π(a'|s')·(q̄(s', a') − τ log π(a'|s'))
    L(θ)   = E_replay[ ℓ(q_θ(s, a) − sg(y)) ]                (ℓ: Huber)

It is MD-VI with a KL weight λ = α·τ and an entropy weight (1 − α)·τ;
α = 0 gives soft-DQN and α = 0, τ → 0 DQN. The target is
:func:`entropy_rl.classic.mdvi.munchausen_target` (stable scaled
log-softmax). Acting is ε-greedy (linearly decayed ε) around either the
greedy action of the online network (``interact="greedy"``, the paper's
default) or a sample of softmax(q_θ(s, ·)/τ) (``interact="stochastic"``).
The target network is a periodic hard copy (``target_update_every``
gradient steps) as in Dopamine, or Polyak averaging when that is 0.
Defaults: τ = 0.03, α = 0.9, l₀ = −1, Adam ε = 3.125e-4.

``make_train(config)`` returns ``train(rng, hyper=None) -> (state,
metrics)``: environment steps (``num_envs`` vmapped environments), the
on-device replay ring and the gradient updates all run inside one jitted
``lax.scan`` over ``total_steps // num_envs`` iterations;
``jax.vmap(train)(keys)`` vmaps over seeds and ``jax.vmap(train, (None,
0))(key, hypers)`` over the traced floats of :class:`MDQNHyper`. Metrics
are per iteration (``[num_iterations]``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from entropy_rl.classic import envs as envs_lib
from entropy_rl.classic import mdvi
from entropy_rl.classic import nets

Array = jax.Array
sg = jax.lax.stop_gradient
INTERACT = ("greedy", "stochastic")


class MDQNConfig(NamedTuple):
  """Static configuration; floats are the defaults of :class:`MDQNHyper`.

  Attributes:
    env_name: a discrete environment known to :func:`envs.make`.
    total_steps: environment steps (summed over ``num_envs``).
    num_envs: parallel environments stepped per iteration.
    buffer_size: replay capacity (transitions).
    batch_size: replay minibatch.
    learning_starts: environment steps before the first gradient step
      (Dopamine's ``min_replay_history``).
    train_every: iterations between gradient steps (Dopamine's
      ``update_period``).
    target_update_every: gradient steps between hard target copies; 0 uses
      Polyak averaging with ``target_tau`` after every step.
    target_tau: Polyak rate when ``target_update_every == 0``.
    hidden: width of the two hidden layers of the Q-network.
    lr: Adam learning rate.
    adam_eps: Adam ε (3.125e-4 as in the paper's code).
    gamma: discount.
    m_tau: τ, the entropy temperature of π = softmax(q̄/τ).
    m_alpha: α, the scale of the Munchausen term (0: soft-DQN).
    l0: lower clip l₀ of τ log π(a|s).
    interact: ``"greedy"`` or ``"stochastic"`` (see module docstring).
    eps_start, eps_end: ε of the ε-greedy exploration, decayed linearly over
      ``eps_decay_steps`` environment steps after ``learning_starts``.
    huber: Huber loss (Dopamine) instead of the squared error.
    max_grad_norm: global-norm clip (0: none).
    env_kwargs: forwarded to :func:`envs.make`.
  """

  env_name: str = "CartPole-v1"
  total_steps: int = 50_000
  num_envs: int = 1
  buffer_size: int = 10_000
  batch_size: int = 64
  learning_starts: int = 1_000
  train_every: int = 1
  target_update_every: int = 500
  target_tau: float = 0.005
  hidden: int = 64
  lr: float = 1e-3
  adam_eps: float = 3.125e-4
  gamma: float = 0.99
  m_tau: float = 0.03
  m_alpha: float = 0.9
  l0: float = -1.0
  interact: str = "greedy"
  eps_start: float = 1.0
  eps_end: float = 0.01
  eps_decay_steps: int = 10_000
  huber: bool = True
  max_grad_norm: float = 0.0
  env_kwargs: tuple = ()


class MDQNHyper(NamedTuple):
  """Float hyperparameters that may be traced (vmap over them)."""

  lr: Any
  gamma: Any
  m_tau: Any
  m_alpha: Any
  l0: Any
  eps_end: Any


class Replay(NamedTuple):
  obs: Array  # [N, O]
  action: Array  # [N] int32
  reward: Array  # [N]
  next_obs: Array  # [N, O] the true next observation (before auto-reset)
  terminated: Array  # [N] float
  ptr: Array
  size: Array


class MDQNState(NamedTuple):
  params: Any  # online Q-network
  target: Any  # target Q-network q̄
  opt_state: Any
  buffer: Replay
  env_state: Any
  obs: Array  # [E, O]
  ep_return: Array  # [E]
  last_return: Array  # [E], NaN until the first episode ends
  n_updates: Array
  rng: Array


def default_hyper(config: MDQNConfig) -> MDQNHyper:
  f = lambda x: jnp.asarray(x, jnp.float32)
  return MDQNHyper(f(config.lr), f(config.gamma), f(config.m_tau),
                   f(config.m_alpha), f(config.l0), f(config.eps_end))


def linear_epsilon(step, config: MDQNConfig, eps_end):
  """Dopamine's linearly decaying ε: ``eps_start`` until ``learning_starts``,
  then linear to ``eps_end`` over ``eps_decay_steps`` environment steps."""
  frac = jnp.clip((step - config.learning_starts)
                  / max(config.eps_decay_steps, 1), 0.0, 1.0)
  return config.eps_start + frac * (eps_end - config.eps_start)


def make_env(config: MDQNConfig) -> envs_lib.Env:
  env = envs_lib.make(config.env_name, **dict(config.env_kwargs))
  if not env.discrete:
    raise ValueError(f"M-DQN needs a discrete env; {config.env_name} has a "
                     f"{env.action_dim}-d continuous action")
  return env


def _check(config: MDQNConfig):
  if config.interact not in INTERACT:
    raise ValueError(f"interact={config.interact!r}; valid: {INTERACT}")
  if config.batch_size > config.buffer_size:
    raise ValueError(f"batch_size {config.batch_size} > buffer_size "
                     f"{config.buffer_size}")
  if config.total_steps < config.num_envs:
    raise ValueError(f"total_steps {config.total_steps} < num_envs "
                     f"{config.num_envs}")


def q_values(params, obs: Array) -> Array:
  """q_θ(s, ·): [..., A]."""
  return nets.mlp_apply(params, obs)


def act(params, obs: Array, key: Array, epsilon, m_tau,
        interact: str = "greedy") -> Array:
  """ε-greedy action around the greedy or the softmax(q/τ) policy.

  Args:
    params: online Q-network.
    obs: [E, O] observations.
    key: PRNG key.
    epsilon: probability of a uniformly random action.
    m_tau: τ of the stochastic policy softmax(q/τ).
    interact: ``"greedy"`` or ``"stochastic"``.

  Returns:
    [E] int32 actions.
  """
  k_eps, k_rand, k_pi = jax.random.split(key, 3)
  q = q_values(params, obs)
  n, num_actions = q.shape[0], q.shape[-1]
  if interact == "stochastic":
    a_pi = jax.random.categorical(
        k_pi, mdvi.scaled_log_softmax(q, m_tau) / m_tau)
  else:
    a_pi = jnp.argmax(q, -1)
  a_rand = jax.random.randint(k_rand, (n,), 0, num_actions)
  explore = jax.random.uniform(k_eps, (n,)) < epsilon
  return jnp.where(explore, a_rand, a_pi).astype(jnp.int32)


def td_loss(params, target, batch: dict, hp: MDQNHyper,
            huber: bool = True) -> tuple[Array, dict]:
  """M-DQN regression loss on one replay batch; returns (loss, aux).

  ``y`` comes from :func:`mdvi.munchausen_target` on the target network;
  ``aux`` holds the mean target, the mean online q(s, a) and the entropy of
  π = softmax(q̄(s', ·)/τ).
  """
  q_t_s = q_values(target, batch["obs"])
  q_t_next = q_values(target, batch["next_obs"])
  discount = hp.gamma * (1.0 - batch["terminated"])
  y = sg(mdvi.munchausen_target(q_t_s, q_t_next, batch["action"],
                                batch["reward"], discount, hp.m_tau,
                                hp.m_alpha, hp.l0))
  q = q_values(params, batch["obs"])
  q_a = jnp.take_along_axis(q, batch["action"][:, None], -1)[:, 0]
  err = q_a - y
  loss = jnp.mean(optax.huber_loss(err) if huber else 0.5 * err ** 2)
  logp_next = mdvi.scaled_log_softmax(q_t_next, hp.m_tau) / hp.m_tau
  ent = -jnp.sum(jnp.exp(logp_next) * logp_next, -1)
  return loss, dict(target=jnp.mean(y), q=jnp.mean(q_a),
                    policy_entropy=jnp.mean(ent))


def make_train(config: MDQNConfig, env: envs_lib.Env | None = None):
  """Builds ``train(rng, hyper=None) -> (MDQNState, metrics)``.

  Args:
    config: an :class:`MDQNConfig`.
    env: a discrete :class:`~entropy_rl.classic.envs.Env` (default from
      ``config.env_name``).

  Returns:
    The train function (jit it; vmap it over keys or :class:`MDQNHyper`).
  """
  _check(config)
  env = make_env(config) if env is None else env
  E, O, A = config.num_envs, env.obs_dim, env.num_actions
  num_iters = config.total_steps // E
  N = config.buffer_size

  def tx(hp):
    opt = optax.adam(hp.lr, eps=config.adam_eps)
    if config.max_grad_norm > 0:
      opt = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), opt)
    return opt

  def init(rng, hp):
    k_net, k_env, k_run = jax.random.split(rng, 3)
    params = nets.mlp_init(k_net, (O, config.hidden, config.hidden, A))
    obs, env_state = jax.vmap(env.reset, (0, None))(
        jax.random.split(k_env, E), env.params)
    buf = Replay(jnp.zeros((N, O)), jnp.zeros((N,), jnp.int32),
                 jnp.zeros((N,)), jnp.zeros((N, O)), jnp.zeros((N,)),
                 jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))
    return MDQNState(params, params, tx(hp).init(params), buf, env_state, obs,
                     jnp.zeros((E,)), jnp.full((E,), jnp.nan),
                     jnp.zeros((), jnp.int32), k_run)

  def update(st: MDQNState, key, hp):
    b = st.buffer
    idx = jax.random.randint(key, (config.batch_size,), 0,
                             jnp.maximum(b.size, 1))
    batch = dict(obs=b.obs[idx], action=b.action[idx], reward=b.reward[idx],
                 next_obs=b.next_obs[idx], terminated=b.terminated[idx])
    (loss, aux), g = jax.value_and_grad(td_loss, has_aux=True)(
        st.params, st.target, batch, hp, config.huber)
    u, opt_state = tx(hp).update(g, st.opt_state, st.params)
    params = optax.apply_updates(st.params, u)
    n = st.n_updates + 1
    if config.target_update_every > 0:
      copy = n % config.target_update_every == 0
      target = jax.tree.map(lambda p, t: jnp.where(copy, p, t), params,
                            st.target)
    else:
      target = optax.incremental_update(params, st.target, config.target_tau)
    return (st._replace(params=params, target=target, opt_state=opt_state,
                        n_updates=n), dict(loss=loss, **aux))

  def iteration(st: MDQNState, t, hp):
    rng, k_act, k_env, k_upd = jax.random.split(st.rng, 4)
    eps = linear_epsilon(t * E, config, hp.eps_end)
    a = act(st.params, st.obs, k_act, eps, hp.m_tau, config.interact)
    tr = jax.vmap(env.step, (0, 0, 0, None))(
        jax.random.split(k_env, E), st.env_state, a, env.params)
    done = tr.terminated | tr.truncated
    b = st.buffer
    i = (b.ptr + jnp.arange(E)) % N
    buf = Replay(b.obs.at[i].set(st.obs), b.action.at[i].set(a),
                 b.reward.at[i].set(tr.reward),
                 b.next_obs.at[i].set(tr.next_obs),
                 b.terminated.at[i].set(tr.terminated.astype(jnp.float32)),
                 (b.ptr + E) % N, jnp.minimum(b.size + E, N))
    ep = st.ep_return + tr.reward
    st = st._replace(buffer=buf, env_state=tr.state, obs=tr.obs,
                     ep_return=jnp.where(done, 0.0, ep),
                     last_return=jnp.where(done, ep, st.last_return), rng=rng)
    learn = (((t + 1) * E >= config.learning_starts)
             & (t % config.train_every == 0))
    nan_m = jax.tree.map(
        lambda s: jnp.full(s.shape, jnp.nan, s.dtype),
        jax.eval_shape(lambda: update(st, k_upd, hp)[1]))
    st, m = jax.lax.cond(learn, lambda s: update(s, k_upd, hp),
                         lambda s: (s, nan_m), st)
    m = dict(m, epsilon=eps, episode_return=jnp.nanmean(st.last_return))
    return st, m

  def train(rng, hyper: MDQNHyper | None = None):
    hp = default_hyper(config) if hyper is None else hyper
    st = init(rng, hp)
    return jax.lax.scan(lambda s, t: iteration(s, t, hp), st,
                        jnp.arange(num_iters))

  return train


def eval_policy(config: MDQNConfig, state: MDQNState, rng,
                num_episodes: int = 8, max_steps: int = 500,
                env: envs_lib.Env | None = None) -> Array:
  """Mean undiscounted return of the greedy policy (first episode per env)."""
  env = make_env(config) if env is None else env
  return envs_lib.first_episode_return(
      env, lambda obs, k: jnp.argmax(q_values(state.params, obs), -1),
      rng, num_episodes, max_steps)
