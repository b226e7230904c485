"""PureJaxRL-style PPO on gymnax, reusing the library's objectives.

PPO (Schulman et al. 2017, https://arxiv.org/abs/1707.06347); loop after
PureJaxRL (Lu et al. 2022, https://arxiv.org/abs/2210.05639). Rollout,
GAE(λ) (a reverse ``lax.scan``) and the epochs of minibatch updates all run
inside one jitted ``lax.scan``::

    δ_t = r_t + γ(1 − term_t)·V(s'_t) − V(s_t)
    Â_t = δ_t + γλ(1 − done_t)·Â_{t+1}
    L   = policy_loss(PolicyBatch[E, T]) + c_V·E[(V − R̂)²]

The policy part is :func:`entropy_rl.policy_loss` on a
:class:`~entropy_rl.PolicyBatch` whose rows are environments and whose
"tokens" are time steps ([num_envs, num_steps]), so every entropy transform
(entropy bonus, KL penalty, clip knobs) and every objective (``ppo_clip`` with
the same :class:`~entropy_rl.Clip`) works unchanged on small action spaces.
The default transform is ``entropy_bonus(ent_coef)``.

``make_train(config) -> train(rng, hyper=None)``; vmap over seeds and over the
traced floats of :class:`PPOHyper`. :func:`make_ppo` exposes ``init`` and one
``update`` (an outer iteration) for outer loops such as DORAEMON; with
``sample_params`` each env draws new dynamics parameters whenever an episode
ends.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from entropy_rl.classic import envs as envs_lib
from entropy_rl.classic import nets
from entropy_rl.core import loss as loss_lib
from entropy_rl.core import objectives
from entropy_rl.core import types
from entropy_rl.regularizers import entropy_bonus

Array = jax.Array

class PPOConfig(NamedTuple):
  env_name: str = "CartPole-v1"
  num_envs: int = 4
  num_steps: int = 128
  total_steps: int = 100_000
  update_epochs: int = 4
  num_minibatches: int = 2  # over environments (rows)
  lr: float = 2.5e-4
  gamma: float = 0.99
  gae_lambda: float = 0.95
  clip_eps: float = 0.2
  ent_coef: float = 0.01
  vf_coef: float = 0.5
  max_grad_norm: float = 0.5
  hidden: int = 64
  normalize_adv: bool = True
  # An EntropyTransform factory ``hyper -> transform`` (None: entropy bonus).
  transform: Callable[..., types.EntropyTransform] | None = None
  # An Objective factory ``hyper -> objective`` (None: ppo_clip(clip_eps)).
  objective: Callable[..., objectives.Objective] | None = None
  env_kwargs: tuple = ()


class PPOHyper(NamedTuple):
  lr: Any
  gamma: Any
  gae_lambda: Any
  clip_eps: Any
  ent_coef: Any


def default_hyper(config) -> PPOHyper:
  f = lambda x: jnp.asarray(x, jnp.float32)
  return PPOHyper(f(config.lr), f(config.gamma), f(config.gae_lambda),
                  f(config.clip_eps), f(config.ent_coef))


class Rollout(NamedTuple):
  """[T, E] trajectory arrays."""

  obs: Array
  action: Array
  logp: Array
  value: Array
  next_value: Array
  reward: Array
  terminated: Array
  done: Array


class Minibatch(NamedTuple):
  """[E, T] training arrays of one update (rows: envs, "tokens": steps)."""

  obs: Array  # [E, T, O]
  action: Array  # [E, T] int or [E, T, D]
  logp: Array  # [E, T] log π_old(a|s), behaviour policy
  adv: Array  # [E, T] GAE advantages (normalised if normalize_adv)
  ret: Array  # [E, T] returns Â + V
  old_ent: Array  # [E, T] entropy of π_old(·|s)


class Runner(NamedTuple):
  params: Any
  opt_state: Any
  tstate: Any  # entropy-transform state
  env_state: Any
  env_params: Any  # per-env dynamics parameters ([E] leading axis)
  obs: Array
  ep_return: Array
  last_return: Array
  step: Array
  rng: Array


def gae(rollout: Rollout, gamma, lam) -> tuple[Array, Array]:
  """GAE(λ) by a reverse ``lax.scan``; returns (advantages, returns) [T, E].

  Bootstraps from V(s') (the true next observation) unless terminated;
  the recursion is cut at every episode end (terminated or truncated).
  """
  delta = (rollout.reward + gamma * (1.0 - rollout.terminated)
           * rollout.next_value - rollout.value)

  def body(carry, x):
    d, done = x
    adv = d + gamma * lam * (1.0 - done) * carry
    return adv, adv

  _, adv = jax.lax.scan(body, jnp.zeros_like(delta[0]),
                        (delta, rollout.done), reverse=True)
  return adv, adv + rollout.value


def init_params(key, env: envs_lib.Env, hidden: int):
  """Actor (logits or Gaussian mean + state-free log σ) and critic MLPs."""
  k1, k2 = jax.random.split(key)
  out = env.num_actions if env.discrete else env.action_dim
  p = dict(actor=nets.mlp_init(k1, (env.obs_dim, hidden, hidden, out), 0.01),
           critic=nets.mlp_init(k2, (env.obs_dim, hidden, hidden, 1), 1.0))
  if not env.discrete:
    p["log_std"] = jnp.zeros((env.action_dim,))
  return p


def policy_stats(params, obs, action, env: envs_lib.Env):
  """(logp, entropy, value) of ``action`` at ``obs`` (any leading shape)."""
  out = nets.mlp_apply(params["actor"], obs, jnp.tanh)
  v = nets.mlp_apply(params["critic"], obs, jnp.tanh)[..., 0]
  if env.discrete:
    return (nets.categorical_logp(out, action),
            nets.categorical_entropy(out), v)
  ls = jnp.broadcast_to(params["log_std"], out.shape)
  return (nets.gaussian_logp(out, ls, action), nets.gaussian_entropy(ls), v)


def sample_action(params, obs, key, env: envs_lib.Env):
  out = nets.mlp_apply(params["actor"], obs, jnp.tanh)
  if env.discrete:
    return jax.random.categorical(key, out)
  return out + jnp.exp(params["log_std"]) * jax.random.normal(key, out.shape)


def make_rollout(env: envs_lib.Env, num_envs: int, num_steps: int,
                 sample_params: Callable | None = None):
  """Returns ``rollout(runner, dist) -> (runner, Rollout [T, E])``.

  ``sample_params(key, dist) -> env params`` redraws an env's dynamics when
  its episode ends (DORAEMON); ``dist`` is passed through.
  """

  def step(carry, _):
    r, dist = carry
    rng, ka, ke, kp = jax.random.split(r.rng, 4)
    a = sample_action(r.params, r.obs, ka, env)
    logp, _, v = policy_stats(r.params, r.obs, a, env)
    tr = jax.vmap(env.step)(jax.random.split(ke, num_envs), r.env_state, a,
                            r.env_params)
    _, _, nv = policy_stats(r.params, tr.next_obs, a, env)
    done = tr.terminated | tr.truncated
    ep = r.ep_return + tr.reward
    env_params = r.env_params
    if sample_params is not None:
      fresh = jax.vmap(sample_params, (0, None))(
          jax.random.split(kp, num_envs), dist)
      env_params = jax.tree.map(
          lambda n, o: jnp.where(
              done.reshape(done.shape + (1,) * (o.ndim - 1)), n, o),
          fresh, env_params)
    f = lambda x: x.astype(jnp.float32)
    ro = Rollout(r.obs, a, logp, v, nv, tr.reward, f(tr.terminated), f(done))
    r = r._replace(env_state=tr.state, obs=tr.obs, env_params=env_params,
                   ep_return=jnp.where(done, 0.0, ep),
                   last_return=jnp.where(done, ep, r.last_return), rng=rng)
    return (r, dist), ro

  def rollout(runner, dist=None):
    (runner, _), ro = jax.lax.scan(step, (runner, dist), None, num_steps)
    return runner, ro

  return rollout


def make_ppo(config: PPOConfig, env: envs_lib.Env | None = None,
             sample_params: Callable | None = None):
  """Builds PPO's ``init`` and one outer ``update``, and the env they use.

  Args:
    config: a :class:`PPOConfig`.
    env: an :class:`~entropy_rl.classic.envs.Env` (default from
      ``config.env_name``).
    sample_params: optional ``sample_params(key, dist) -> env params``; each
      env redraws its dynamics when an episode ends (DORAEMON).

  Returns:
    ``(init, update, env)``: ``init(rng, hyper, env_params=None) -> Runner``,
    ``update(runner, hyper, dist=None) -> (Runner, metrics)`` (one rollout,
    GAE and the epochs of minibatch updates) and the env.
  """
  env = (envs_lib.make(config.env_name, **dict(config.env_kwargs))
         if env is None else env)
  E, T = config.num_envs, config.num_steps
  if E % config.num_minibatches:
    raise ValueError(f"num_envs={E} must be divisible by num_minibatches="
                     f"{config.num_minibatches}")
  mb = E // config.num_minibatches
  rollout_fn = make_rollout(env, E, T, sample_params)

  def parts(hp):
    transform = (config.transform(hp) if config.transform is not None
                 else entropy_bonus(hp.ent_coef))
    objective = (config.objective(hp) if config.objective is not None
                 else objectives.ppo_clip(hp.clip_eps))
    opt = optax.chain(optax.clip_by_global_norm(config.max_grad_norm),
                      optax.adam(hp.lr, eps=1e-5))
    return transform, objective, opt

  def init(rng, hp, env_params=None):
    transform, _, opt = parts(hp)
    k1, k2, k3 = jax.random.split(rng, 3)
    params = init_params(k1, env, config.hidden)
    if env_params is None:
      env_params = jax.tree.map(
          lambda x: jnp.broadcast_to(jnp.asarray(x), (E,) + jnp.shape(x)),
          env.params)
    obs, es = jax.vmap(env.reset)(jax.random.split(k2, E), env_params)
    return Runner(params, opt.init(params), transform.init(None), es,
                  env_params, obs, jnp.zeros(E), jnp.full(E, jnp.nan),
                  jnp.zeros((), jnp.int32), k3)

  def loss_fn(params, tstate, b, hp, transform, objective, step, rng):
    logp, ent, v = policy_stats(params, b.obs, b.action, env)
    batch = types.PolicyBatch(
        logp=logp, old_logp=b.logp, advantages=b.adv,
        mask=jnp.ones_like(logp), entropy=ent, old_entropy=b.old_ent)
    pl, (tstate, m) = loss_lib.policy_loss(
        batch, transform, tstate, objective=objective, rng=rng, step=step)
    vl = jnp.mean((v - b.ret) ** 2)
    return pl + config.vf_coef * vl, (tstate, dict(m, value_loss=vl))

  def update(runner: Runner, hp, dist=None):
    transform, objective, opt = parts(hp)
    runner, ro = rollout_fn(runner, dist)
    adv, ret = gae(ro, hp.gamma, hp.gae_lambda)
    tr = lambda x: jnp.swapaxes(x, 0, 1)  # [T, E] -> [E, T]
    _, old_ent, _ = policy_stats(runner.params, ro.obs, ro.action, env)
    data = Minibatch(obs=tr(ro.obs), action=tr(ro.action), logp=tr(ro.logp),
                     adv=tr(adv), ret=tr(ret), old_ent=tr(old_ent))
    if config.normalize_adv:
      data = data._replace(adv=(data.adv - data.adv.mean()) / (
          data.adv.std() + 1e-8))
    tstate = runner.tstate
    if transform.prepare is not None:
      pb = types.PolicyBatch(logp=data.logp, old_logp=data.logp,
                             advantages=data.adv,
                             mask=jnp.ones_like(data.logp),
                             entropy=data.old_ent,
                             old_entropy=data.old_ent)
      pb, tstate, _ = loss_lib.prepare_batch(pb, transform, tstate,
                                             step=runner.step)
      data = data._replace(adv=pb.advantages)

    def epoch(carry, key):
      params, opt_state, tstate = carry
      perm = jax.random.permutation(key, E)
      shuffled = jax.tree.map(
          lambda x: x[perm].reshape((config.num_minibatches, mb) + x.shape[1:]),
          data)

      def minibatch(c, b):
        params, opt_state, tstate = c
        (l, (tstate, m)), g = jax.value_and_grad(loss_fn, has_aux=True)(
            params, tstate, b, hp, transform, objective, runner.step, key)
        u, opt_state = opt.update(g, opt_state, params)
        return (optax.apply_updates(params, u), opt_state, tstate), m

      return jax.lax.scan(minibatch, (params, opt_state, tstate), shuffled)

    rng, k = jax.random.split(runner.rng)
    (params, opt_state, tstate), m = jax.lax.scan(
        epoch, (runner.params, runner.opt_state, tstate),
        jax.random.split(k, config.update_epochs))
    m = jax.tree.map(jnp.mean, m)
    m["episode_return"] = jnp.nanmean(runner.last_return)
    m["reward_per_step"] = jnp.mean(ro.reward)
    runner = runner._replace(params=params, opt_state=opt_state,
                             tstate=tstate, rng=rng, step=runner.step + 1)
    return runner, m

  return init, update, env


def make_train(config: PPOConfig, env: envs_lib.Env | None = None):
  """``train(rng, hyper=None) -> (Runner, metrics [num_updates])``."""
  init, update, env = make_ppo(config, env)
  num_updates = config.total_steps // (config.num_envs * config.num_steps)

  def train(rng, hyper: PPOHyper | None = None):
    hp = default_hyper(config) if hyper is None else hyper
    runner = init(rng, hp)
    return jax.lax.scan(lambda r, _: update(r, hp), runner, None, num_updates)

  return train
