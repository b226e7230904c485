"""TRPO (Schulman et al., 2015): the KL trust region, as a whole update rule.

"Trust Region Policy Optimization", https://arxiv.org/abs/1502.05477; port of
sb3-contrib ``sb3_contrib/trpo/trpo.py`` (spec §B10)::

    max_θ L(θ) = E[Â·π_θ/π_old]   s.t.  D̄(θ) = E[KL(π_θ‖π_old)] ≤ δ
    x  = CG((H + damping·I), g),  g = ∇L,  H = ∇²D̄ at θ_old
    β* = sqrt(2δ / xᵀ(H + damping·I)x)
    θ  = θ_old + c^i·β*·x, c = 0.8, i = 0..9: the first with D̄ < δ and
         L > L_old; otherwise θ_old.

The paper writes KL(π_old‖π_θ); sb3 (and this port) use KL(π_θ‖π_old) —
identical to second order at θ_old. No entropy bonus. The critic takes
``critic_steps`` Adam steps on MSE(V, R̂); advantages are GAE(λ), normalised.
``make_train(config) -> train(rng)`` reuses the PPO rollout/GAE scan.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from entropy_rl.classic import envs as envs_lib
from entropy_rl.classic import nets
from entropy_rl.classic import ppo as ppo_lib

Array = jax.Array


def conjugate_gradient(matvec: Callable[[Array], Array], b: Array,
                       iters: int = 15, tol: float = 1e-10) -> Array:
  """Solves A x = b for SPD A given ``matvec`` (fixed ``iters`` steps)."""

  def body(c, _):
    x, r, p, rr = c
    ap = matvec(p)
    alpha = rr / jnp.maximum(p @ ap, 1e-30)
    live = rr > tol
    x = jnp.where(live, x + alpha * p, x)
    r_new = r - alpha * ap
    rr_new = r_new @ r_new
    p_new = r_new + rr_new / jnp.maximum(rr, 1e-30) * p
    return (x, jnp.where(live, r_new, r), jnp.where(live, p_new, p),
            jnp.where(live, rr_new, rr)), None

  x0 = jnp.zeros_like(b)
  (x, _, _, _), _ = jax.lax.scan(body, (x0, b, b, b @ b), None, iters)
  return x


def natural_step(g: Array, hvp: Callable[[Array], Array], delta: float = 0.01,
                 cg_iters: int = 15, damping: float = 0.1):
  """The maximal natural-gradient step β*·x (damped H in CG and in β*).

  Returns:
    (full step [n], search direction x [n], β*).
  """
  damped = lambda v: hvp(v) + damping * v
  x = conjugate_gradient(damped, g, cg_iters)
  beta = jnp.sqrt(2.0 * delta / jnp.maximum(x @ damped(x), 1e-30))
  return beta * x, x, beta


def trpo_step(params, surrogate: Callable, kl: Callable, delta: float = 0.01,
              cg_iters: int = 15, damping: float = 0.1, shrink: float = 0.8,
              max_backtracks: int = 10):
  """One TRPO update of ``params``.

  Args:
    params: a pytree θ_old.
    surrogate: ``surrogate(params) -> L`` (to maximise).
    kl: ``kl(params) -> D̄(θ)`` (0 at θ_old).
    delta: δ (``target_kl``).
    cg_iters, damping, shrink, max_backtracks: sb3-contrib defaults.

  Returns:
    (new params, dict(accepted, kl, improvement, step_norm)).
  """
  flat, unravel = ravel_pytree(params)
  f_sur = lambda f: surrogate(unravel(f))
  f_kl = lambda f: kl(unravel(f))
  l_old = f_sur(flat)
  g = jax.grad(f_sur)(flat)
  grad_kl = jax.grad(f_kl)
  hvp = lambda v: jax.jvp(grad_kl, (flat,), (v,))[1]
  full, _, _ = natural_step(g, hvp, delta, cg_iters, damping)
  coefs = shrink ** jnp.arange(max_backtracks, dtype=flat.dtype)
  cands = flat[None] + coefs[:, None] * full[None]
  ls = jax.vmap(f_sur)(cands)
  kls = jax.vmap(f_kl)(cands)
  ok = (kls < delta) & (ls > l_old)
  i = jnp.argmax(ok)
  accepted = ok.any()
  new = jnp.where(accepted, cands[i], flat)
  return unravel(new), dict(
      accepted=accepted.astype(jnp.float32),
      kl=jnp.where(accepted, kls[i], 0.0),
      improvement=jnp.where(accepted, ls[i] - l_old, 0.0),
      step_norm=jnp.linalg.norm(new - flat))


class TRPOConfig(NamedTuple):
  env_name: str = "CartPole-v1"
  num_envs: int = 8
  num_steps: int = 256
  total_steps: int = 100_000
  target_kl: float = 0.01
  cg_iters: int = 15
  cg_damping: float = 0.1
  shrink: float = 0.8
  max_backtracks: int = 10
  gamma: float = 0.99
  gae_lambda: float = 0.95
  critic_lr: float = 1e-3
  critic_steps: int = 10
  hidden: int = 64
  env_kwargs: tuple = ()


def make_train(config: TRPOConfig, env: envs_lib.Env | None = None):
  """``train(rng) -> (Runner, metrics [num_updates])``."""
  env = (envs_lib.make(config.env_name, **dict(config.env_kwargs))
         if env is None else env)
  E, T = config.num_envs, config.num_steps
  rollout_fn = ppo_lib.make_rollout(env, E, T)
  copt = optax.adam(config.critic_lr)
  num_updates = config.total_steps // (E * T)

  def dist_params(params, obs):
    out = nets.mlp_apply(params["actor"], obs, jnp.tanh)
    return out

  def kl_fn(params, old_params, obs):
    new, old = dist_params(params, obs), dist_params(old_params, obs)
    if env.discrete:
      return jnp.mean(nets.categorical_kl(new, old))
    ls, ls_old = params["log_std"], old_params["log_std"]
    return jnp.mean(nets.gaussian_kl(new, ls, old, ls_old))

  def update(runner, _):
    runner, ro = rollout_fn(runner)
    adv, ret = ppo_lib.gae(ro, config.gamma, config.gae_lambda)
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    params = runner.params
    pol_keys = [k for k in params if k != "critic"]
    pol = {k: params[k] for k in pol_keys}

    def surrogate(p):
      full = dict(params, **p)
      logp, _, _ = ppo_lib.policy_stats(full, ro.obs, ro.action, env)
      return jnp.mean(adv * jnp.exp(logp - ro.logp))

    def kl(p):
      return kl_fn(dict(params, **p), params, ro.obs)

    pol, info = trpo_step(pol, surrogate, kl, config.target_kl,
                          config.cg_iters, config.cg_damping, config.shrink,
                          config.max_backtracks)

    def critic_step(c, _):
      cp, os = c
      loss = lambda p: jnp.mean(
          (nets.mlp_apply(p, ro.obs, jnp.tanh)[..., 0] - ret) ** 2)
      l, g = jax.value_and_grad(loss)(cp)
      u, os = copt.update(g, os, cp)
      return (optax.apply_updates(cp, u), os), l

    (critic, os), vl = jax.lax.scan(
        critic_step, (params["critic"], runner.opt_state), None,
        config.critic_steps)
    new_params = dict(pol, critic=critic)
    runner = runner._replace(params=new_params, opt_state=os,
                             step=runner.step + 1)
    return runner, dict(info, value_loss=vl.mean(),
                        episode_return=jnp.nanmean(runner.last_return))

  def train(rng):
    k1, k2, k3 = jax.random.split(rng, 3)
    params = ppo_lib.init_params(k1, env, config.hidden)
    env_params = jax.tree.map(
        lambda x: jnp.broadcast_to(jnp.asarray(x), (E,) + jnp.shape(x)),
        env.params)
    obs, es = jax.vmap(env.reset)(jax.random.split(k2, E), env_params)
    runner = ppo_lib.Runner(params, copt.init(params["critic"]), None, es,
                            env_params, obs, jnp.zeros(E),
                            jnp.full(E, jnp.nan), jnp.zeros((), jnp.int32),
                            k3)
    return jax.lax.scan(update, runner, None, num_updates)

  return train
