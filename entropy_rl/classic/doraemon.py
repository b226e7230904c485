"""DORAEMON: domain randomisation via entropy maximisation (Tiboni et al. 2024).

"Domain Randomization via Entropy Maximization", ICLR 2024,
https://arxiv.org/abs/2311.01885 (spec §B7; code ``gabrieletiboni/doraemon``
``doraemon/doraemon.py``). The dynamics parameters ξ follow independent
Beta(a_i, b_i) on [lo_i, hi_i]; after each policy-training phase::

    min_x KL(ν_x‖U)  (= −H(ν_x) on the standardised support)
    s.t.  KL(ν_i‖ν_x) ≤ ε
          Ĵ(x) = (1/N)·Σ_j ν_x(ξ_j)/ν_i(ξ_j)·1[G_j ≥ G_succ] ≥ α

JAX port (the spec's suggestion): scipy's trust-constr is replaced by a
penalty method with Adam on x (a, b = min_b + (max_b − min_b)·σ(x)),
followed by a feasibility line search between x_i and the penalty solution
(the largest feasible fraction). If ν_i itself is infeasible (Ĵ < α, with
``hard_performance_constraint``) the step maximises Ĵ inside the trust
region instead. :func:`make_train` alternates PPO phases
(:func:`entropy_rl.classic.ppo.make_ppo`, each episode drawing its ξ) with
this update on gymnax CartPole.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.scipy import special

from entropy_rl.classic import envs as envs_lib
from entropy_rl.classic import ppo as ppo_lib

Array = jax.Array


def beta_entropy(a, b):
  """H(Beta(a, b)) on [0, 1] (differential, nats)."""
  return (special.betaln(a, b) - (a - 1) * special.digamma(a)
          - (b - 1) * special.digamma(b)
          + (a + b - 2) * special.digamma(a + b))


def beta_kl(a1, b1, a2, b2):
  """KL(Beta(a1, b1)‖Beta(a2, b2))."""
  return (special.betaln(a2, b2) - special.betaln(a1, b1)
          + (a1 - a2) * special.digamma(a1) + (b1 - b2) * special.digamma(b1)
          + (a2 - a1 + b2 - b1) * special.digamma(a1 + b1))


def beta_logpdf(u, a, b):
  return ((a - 1) * jnp.log(u) + (b - 1) * jnp.log1p(-u)
          - special.betaln(a, b))


class BetaDist(NamedTuple):
  """Independent Betas on boxes; a, b, lo, hi are [n]."""

  a: Array
  b: Array
  lo: Array
  hi: Array


def sample(key, dist: BetaDist, shape=()) -> Array:
  u = jax.random.beta(key, dist.a, dist.b, shape + dist.a.shape)
  return dist.lo + u * (dist.hi - dist.lo)


def log_prob(dist: BetaDist, xi: Array) -> Array:
  """Σ_i log ν(ξ_i) on the standardised support ([..., n] -> [...])."""
  u = jnp.clip((xi - dist.lo) / (dist.hi - dist.lo), 1e-6, 1 - 1e-6)
  return jnp.sum(beta_logpdf(u, dist.a, dist.b), -1)


def entropy(dist: BetaDist) -> Array:
  """Σ_i H(Beta(a_i, b_i)) on [0, 1]^n (0 for the uniform)."""
  return jnp.sum(beta_entropy(dist.a, dist.b))


def kl(p: BetaDist, q: BetaDist) -> Array:
  return jnp.sum(beta_kl(p.a, p.b, q.a, q.b))


def success_estimate(new: BetaDist, old: BetaDist, xi: Array,
                     success: Array) -> Array:
  """Ĵ = mean_j ν_new(ξ_j)/ν_old(ξ_j)·success_j (importance sampling)."""
  w = jnp.exp(log_prob(new, xi) - log_prob(old, xi))
  return jnp.mean(w * success)


class DoraemonConfig(NamedTuple):
  kl_ub: float = 0.005  # ε
  success_rate: float = 0.5  # α
  min_bound: float = 0.8
  max_bound_offset: float = 10.0  # max_bound = init + offset
  solver_steps: int = 200
  solver_lr: float = 0.05
  penalty: float = 1e3
  hard_performance_constraint: bool = True


def _to_x(v, lo, hi):
  p = jnp.clip((v - lo) / (hi - lo), 1e-6, 1 - 1e-6)
  return jnp.log(p) - jnp.log1p(-p)


def doraemon_update(dist: BetaDist, xi: Array, success: Array,
                    cfg: DoraemonConfig, max_bound: Array | float = 110.0
                    ) -> tuple[BetaDist, dict]:
  """One DORAEMON step of the Beta parameters.

  Args:
    dist: ν_i.
    xi: [N, n] parameters the N evaluation episodes used (ξ_j ~ ν_i).
    success: [N] 1[G_j ≥ G_succ].
    cfg: :class:`DoraemonConfig`.
    max_bound: upper bound of a, b (init + 10 in the code).

  Returns:
    (ν_{i+1}, metrics).
  """
  lo, hi = cfg.min_bound, max_bound
  x0 = jnp.concatenate([_to_x(dist.a, lo, hi), _to_x(dist.b, lo, hi)])
  n = dist.a.shape[0]

  def unpack(x):
    ab = lo + (hi - lo) * jax.nn.sigmoid(x)
    return dist._replace(a=ab[:n], b=ab[n:])

  j_old = jnp.mean(success)
  feasible_start = j_old >= cfg.success_rate

  def objective(x, maximise_perf):
    d = unpack(x)
    k = kl(dist, d)
    j = success_estimate(d, dist, xi, success)
    tr = cfg.penalty * jnp.maximum(k - cfg.kl_ub, 0.0) ** 2
    perf = cfg.penalty * jnp.maximum(cfg.success_rate - j, 0.0) ** 2
    ent_obj = -entropy(d) + tr + perf
    return jnp.where(maximise_perf, -j + tr, ent_obj)

  maximise_perf = (~feasible_start) & cfg.hard_performance_constraint
  opt = optax.adam(cfg.solver_lr)

  def step(c, _):
    x, s = c
    g = jax.grad(objective)(x, maximise_perf)
    u, s = opt.update(g, s)
    return (x + u, s), None

  (x_star, _), _ = jax.lax.scan(step, (x0, opt.init(x0)), None,
                                cfg.solver_steps)
  # feasibility line search: the largest t with the constraints satisfied
  ts = jnp.linspace(1.0, 0.0, 21)

  def feas(t):
    d = unpack(x0 + t * (x_star - x0))
    k = kl(dist, d)
    j = success_estimate(d, dist, xi, success)
    ok_perf = jnp.where(maximise_perf, True, j >= cfg.success_rate)
    return (k <= cfg.kl_ub) & ok_perf

  ok = jax.vmap(feas)(ts)
  t = jnp.where(ok.any(), ts[jnp.argmax(ok)], 0.0)
  new = unpack(x0 + t * (x_star - x0))
  new = jax.tree.map(lambda a, b: jnp.where(t > 0, a, b), new, dist)
  return new, dict(entropy=entropy(new), kl_step=kl(dist, new),
                   success_is=success_estimate(new, dist, xi, success),
                   success=j_old, step_fraction=t)


# --- the outer loop on gymnax CartPole --------------------------------------

CARTPOLE_FIELDS = ("length", "masspole", "masscart", "force_mag")


class DoraemonTrainConfig(NamedTuple):
  ppo: ppo_lib.PPOConfig = ppo_lib.PPOConfig(num_envs=8, num_steps=64)
  doraemon: DoraemonConfig = DoraemonConfig()
  outer_iters: int = 10
  ppo_updates_per_iter: int = 10
  eval_episodes: int = 16
  eval_steps: int = 500
  performance_lb: float = 400.0  # G_succ
  init_ab: float = 100.0
  ranges: tuple = ((0.25, 1.0), (0.05, 0.2), (0.5, 2.0), (5.0, 15.0))


def make_train(config: DoraemonTrainConfig):
  """``train(rng) -> (runner, dist, metrics [outer_iters])`` on CartPole."""
  env = envs_lib.make("CartPole-v1")
  base = env.params
  lo = jnp.asarray([r[0] for r in config.ranges], jnp.float32)
  hi = jnp.asarray([r[1] for r in config.ranges], jnp.float32)

  def to_params(xi):
    kw = dict(zip(CARTPOLE_FIELDS, xi))
    kw["total_mass"] = kw["masspole"] + kw["masscart"]
    kw["polemass_length"] = kw["masspole"] * kw["length"]
    return base.replace(**kw)

  def sample_params(key, dist):
    return to_params(sample(key, dist))

  init, update, _ = ppo_lib.make_ppo(config.ppo, env, sample_params)
  E = config.ppo.num_envs

  def evaluate(params, xi, key):
    """Undiscounted return of one episode per ξ_j ([N, n] -> [N])."""
    N = xi.shape[0]
    ep = jax.vmap(to_params)(xi)
    obs, es = jax.vmap(env.reset)(jax.random.split(key, N), ep)

    def body(c, k):
      obs, es, ret, alive = c
      a = ppo_lib.sample_action(params, obs, k, env)
      tr = jax.vmap(env.step)(jax.random.split(k, N), es, a, ep)
      ret = ret + alive * tr.reward
      alive = alive * (1.0 - (tr.terminated | tr.truncated))
      return (tr.obs, tr.state, ret, alive), None

    (_, _, ret, _), _ = jax.lax.scan(
        body, (obs, es, jnp.zeros(N), jnp.ones(N)),
        jax.random.split(key, config.eval_steps))
    return ret

  def train(rng):
    hp = ppo_lib.default_hyper(config.ppo)
    dist = BetaDist(jnp.full(lo.shape, config.init_ab),
                    jnp.full(lo.shape, config.init_ab), lo, hi)
    k0, k1, rng = jax.random.split(rng, 3)
    env_params = jax.vmap(sample_params, (0, None))(
        jax.random.split(k0, E), dist)
    runner = init(k1, hp, env_params)

    def outer(c, key):
      runner, dist = c
      runner, m = jax.lax.scan(lambda r, _: update(r, hp, dist), runner,
                               None, config.ppo_updates_per_iter)
      kx, ke = jax.random.split(key)
      xi = sample(kx, dist, (config.eval_episodes,))
      ret = evaluate(runner.params, xi, ke)
      succ = (ret >= config.performance_lb).astype(jnp.float32)
      dist, dm = doraemon_update(dist, xi, succ, config.doraemon,
                                 config.init_ab + config.doraemon.max_bound_offset)
      dm = dict(dm, train_return=m["episode_return"][-1],
                eval_return=ret.mean())
      return (runner, dist), dm

    (runner, dist), metrics = jax.lax.scan(
        outer, (runner, dist), jax.random.split(rng, config.outer_iters))
    return runner, dist, metrics

  return train
