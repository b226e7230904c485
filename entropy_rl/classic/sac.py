"""SAC with automatic temperature and its entropy variants, all on device.

Soft Actor-Critic (Haarnoja et al. 2018, https://arxiv.org/abs/1801.01290;
automatic α: https://arxiv.org/abs/1812.05905), spec §B0::

    y   = r + γ(1 − d)·(min_j Q̄_j(s', a') − α·log π(a'|s')),  a' ~ π(·|s')
    L_Q = Σ_j E[(Q_j(s, a) − sg(y))²]
    L_π = E_s[α·log π(ã|s) − min_j Q_j(s, ã)]          (ã reparameterised)
    L_α = −E[log α · sg(log π(ã|s) + H̄)],  H̄ = −|A|
    θ̄  ← τθ + (1 − τ)θ̄

``variant`` switches on one entropy method (each in its own module):

* ``"sac"``: the base.
* ``"era"``: :mod:`entropy_rl.classic.era` (no α; entropy floor D·h;
  optional δ compensation, ``era_autotune_delta``).
* ``"bandlimited"``: :mod:`entropy_rl.classic.bandlimited` (smoothed Q̄;
  RECONSTRUCTED from the abstract).
* ``"ace"``: :mod:`entropy_rl.classic.ace` (causal weights on per-dim log π,
  actor/α/target every 2 updates, dormancy-guided soft reset).
* ``"maxinfo"``: :mod:`entropy_rl.classic.maxinfo` (ensemble IG, auto λ).
* ``"diayn"``: :mod:`entropy_rl.classic.diayn` (skills, discriminator reward,
  fixed α).

``make_train(config)`` returns ``train(rng, hyper=None) -> (state, metrics)``:
environment steps, replay and gradient updates run inside one jitted
``lax.scan``; ``jax.vmap(train)(keys)`` vmaps over seeds and
``jax.vmap(train, (None, 0))(key, hypers)`` over the float hyperparameters of
:class:`SACHyper`. Metrics are per environment step (``[num_steps]``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from entropy_rl.classic import ace as ace_lib
from entropy_rl.classic import bandlimited as bl_lib
from entropy_rl.classic import diayn as diayn_lib
from entropy_rl.classic import envs as envs_lib
from entropy_rl.classic import era as era_lib
from entropy_rl.classic import maxinfo as mi_lib
from entropy_rl.classic import nets

Array = jax.Array
sg = jax.lax.stop_gradient
VARIANTS = ("sac", "era", "bandlimited", "ace", "maxinfo", "diayn")


class SACConfig(NamedTuple):
  """Static configuration (shapes, schedule, variant); floats are defaults of
  :class:`SACHyper`."""

  env_name: str = "Pendulum-v1"
  variant: str = "sac"
  total_steps: int = 10_000  # environment steps per env
  num_envs: int = 1
  buffer_size: int = 10_000
  batch_size: int = 128
  learning_starts: int = 1_000
  hidden: int = 64
  lr: float = 3e-4
  gamma: float = 0.99
  tau: float = 0.005
  init_log_alpha: float = 0.0
  autotune: bool = True
  alpha: float = 0.2  # fixed α when autotune is off
  target_entropy: float | None = None  # default −|A|
  # ERA (A5.2)
  era_h: float = 0.25
  era_log_std_min: float = -8.0
  era_delta: float = 0.0  # compensation δ ≥ 0: H₀' = D·h + δ (initial if auto)
  era_autotune_delta: bool = False  # README loss δ̂·(H[π] − H₀); not in code
  # band-limited SAC (B3, reconstructed)
  bl_sigma: float = 0.1
  bl_kernel: str = "sigma_points"
  bl_samples: int = 8
  # ACE (B2)
  ace_causal_interval: int = 1_000
  ace_causal_sample: int = 1_000
  ace_reset_interval: int = 0  # 0: no reset
  ace_reset_start: int = 5_000
  ace_reset_mode: str = "reset"  # or "causal_reset"
  ace_causal_method: str = "direct_lingam"  # the paper; or "ols" (proxy)
  ace_dormant_threshold: float = 0.05
  ace_target_update_interval: int = 2
  # MaxInfoRL (B4)
  mi_ensemble: int = 5
  mi_init_log_lambda: float = 0.0
  mi_autotune_lambda: bool = True
  # DIAYN (B5)
  diayn_skills: int = 4
  diayn_disc_on: str = "s"
  env_kwargs: tuple = ()


class SACHyper(NamedTuple):
  """Float hyperparameters that may be traced (vmap over them)."""

  lr: Any
  gamma: Any
  tau: Any
  alpha: Any
  target_entropy: Any
  era_h: Any
  bl_sigma: Any
  mi_init_log_lambda: Any


class Buffer(NamedTuple):
  obs: Array  # [N, O]
  action: Array  # [N, D]
  reward: Array  # [N]
  next_obs: Array  # [N, O]
  terminated: Array  # [N]
  skill: Array  # [N] int (DIAYN; zeros otherwise)
  ptr: Array
  size: Array


class SACState(NamedTuple):
  actor: Any
  critic: Any
  critic_target: Any
  actor_target: Any  # MaxInfoRL's lagged actor π̄ (else None)
  ensemble: Any  # MaxInfoRL (else None)
  disc: Any  # DIAYN discriminator (else None)
  log_alpha: Array
  log_lambda: Array
  opt: Any  # dict of optimiser states
  in_norm: Any
  out_norm: Any
  ig_norm: Any
  causal_w: Array  # [D]
  dormant: Array
  buffer: Buffer
  env_state: Any
  obs: Array  # [E, O] raw observation
  skill: Array  # [E]
  ep_return: Array  # [E]
  last_return: Array  # [E] NaN until the first episode ends
  n_updates: Array
  rng: Array
  era_delta: Any = None  # ERA's compensation δ (scalar) or None


def default_hyper(config: SACConfig, env: envs_lib.Env) -> SACHyper:
  te = (-float(env.action_dim) if config.target_entropy is None
        else config.target_entropy)
  f = lambda x: jnp.asarray(x, jnp.float32)
  return SACHyper(f(config.lr), f(config.gamma), f(config.tau),
                  f(config.alpha), f(te), f(config.era_h),
                  f(config.bl_sigma), f(config.mi_init_log_lambda))


def _check(config: SACConfig):
  if config.variant not in VARIANTS:
    raise ValueError(f"unknown SAC variant {config.variant!r}; valid: "
                     f"{VARIANTS}")
  if config.diayn_disc_on not in diayn_lib.DISC_ON:
    raise ValueError(f"diayn_disc_on={config.diayn_disc_on!r}; valid: "
                     f"{diayn_lib.DISC_ON}")
  if config.ace_causal_method not in ace_lib.CAUSAL_METHODS:
    raise ValueError(f"ace_causal_method={config.ace_causal_method!r}; "
                     f"valid: {ace_lib.CAUSAL_METHODS}")
  if config.ace_reset_mode not in ("reset", "causal_reset"):
    raise ValueError(f"ace_reset_mode={config.ace_reset_mode!r}; valid: "
                     "('reset', 'causal_reset')")
  if config.batch_size > config.buffer_size:
    raise ValueError(f"batch_size {config.batch_size} > buffer_size "
                     f"{config.buffer_size}")


def make_env(config: SACConfig) -> envs_lib.Env:
  env = envs_lib.make(config.env_name, **dict(config.env_kwargs))
  if env.discrete:
    raise ValueError(f"SAC needs a continuous env; {config.env_name} has "
                     f"{env.num_actions} discrete actions")
  return env


def make_train(config: SACConfig, env: envs_lib.Env | None = None):
  """Builds ``train(rng, hyper=None) -> (SACState, metrics)``.

  Args:
    config: a :class:`SACConfig`.
    env: an :class:`~entropy_rl.classic.envs.Env` (default from
      ``config.env_name``).

  Returns:
    The train function (jit it, vmap it over keys / :class:`SACHyper`).
  """
  _check(config)
  env = make_env(config) if env is None else env
  V = config.variant
  D, O, E = env.action_dim, env.obs_dim, config.num_envs
  K = config.diayn_skills if V == "diayn" else 0
  OA = O + K  # agent observation (DIAYN appends one-hot z)
  H = config.hidden
  num_steps = config.total_steps // E

  def augment(obs, skill):
    if not K:
      return obs
    return jnp.concatenate([obs, jax.nn.one_hot(skill, K)], -1)

  # --- networks -------------------------------------------------------------
  def init_actor(k):
    return nets.mlp_init(k, (OA, H, H, 2 * D), scale_last=0.1)

  def init_critic(k):
    return nets.ensemble_init(k, 2, (OA + D, H, H, 1))

  def era_h(hp, delta):
    """Per-dimension ERA target with the compensation: h + δ/D."""
    return hp.era_h if delta is None else hp.era_h + delta / D

  def policy(actor, obs, key, hp, delta=None):
    """Returns (a [.., D], logp_per_dim [.., D], gaussian entropy [..])."""
    out = nets.mlp_apply(actor, obs)
    mu, pre = out[..., :D], out[..., D:]
    if V == "era":
      log_std = era_lib.era_log_std(pre, era_h(hp, delta),
                                    config.era_log_std_min)
      a, lp = nets.truncated_normal_sample(key, jnp.tanh(mu),
                                           jnp.exp(log_std))
    else:
      log_std = jnp.clip(pre, nets.LOG_STD_MIN, nets.LOG_STD_MAX)
      a, lp = nets.tanh_gaussian_sample(key, mu, log_std)
    return a, lp, nets.gaussian_entropy(log_std)

  def q_all(critic, obs, a):
    x = jnp.concatenate([obs, a], -1)
    return nets.ensemble_apply(critic, x)[..., 0]  # [2, ...]

  def q_min(critic, obs, a):
    return q_all(critic, obs, a).min(0)

  def ens_init(k):
    return nets.ensemble_init(k, config.mi_ensemble, (O + D, H, H, O + 1))

  tx = lambda lr: optax.adam(lr)

  # --- init -----------------------------------------------------------------
  def init(rng, hp):
    ks = jax.random.split(rng, 8)
    actor, critic = init_actor(ks[0]), init_critic(ks[1])
    obs, env_state = jax.vmap(env.reset, (0, None))(
        jax.random.split(ks[2], E), env.params)
    skill = (jax.random.randint(ks[3], (E,), 0, K) if K
             else jnp.zeros((E,), jnp.int32))
    ensemble = ens_init(ks[4]) if V == "maxinfo" else None
    disc = (nets.mlp_init(ks[5], (O, H, H, K)) if V == "diayn" else None)
    opt = dict(actor=tx(hp.lr).init(actor), critic=tx(hp.lr).init(critic),
               alpha=tx(hp.lr).init(jnp.zeros(())))
    if V == "maxinfo":
      opt["ensemble"] = tx(hp.lr).init(ensemble)
      opt["lambda"] = tx(hp.lr).init(jnp.zeros(()))
    if V == "diayn":
      opt["disc"] = tx(hp.lr).init(disc)
    if V == "era":
      opt["era_delta"] = tx(hp.lr).init(jnp.zeros(()))
    n = config.buffer_size
    buf = Buffer(jnp.zeros((n, OA)), jnp.zeros((n, D)), jnp.zeros((n,)),
                 jnp.zeros((n, OA)), jnp.zeros((n,)),
                 jnp.zeros((n,), jnp.int32), jnp.zeros((), jnp.int32),
                 jnp.zeros((), jnp.int32))
    mi = V == "maxinfo"
    return SACState(
        actor=actor, critic=critic, critic_target=critic,
        actor_target=actor if mi else None, ensemble=ensemble, disc=disc,
        log_alpha=jnp.asarray(config.init_log_alpha, jnp.float32),
        log_lambda=jnp.asarray(hp.mi_init_log_lambda, jnp.float32),
        opt=opt,
        in_norm=mi_lib.running_norm_init((O + D,)) if mi else None,
        out_norm=mi_lib.running_norm_init((O + 1,)) if mi else None,
        ig_norm=mi_lib.running_norm_init(()) if mi else None,
        causal_w=jnp.ones((D,)), dormant=jnp.zeros(()),
        buffer=buf, env_state=env_state, obs=obs, skill=skill,
        ep_return=jnp.zeros((E,)), last_return=jnp.full((E,), jnp.nan),
        n_updates=jnp.zeros((), jnp.int32), rng=ks[7],
        era_delta=(jnp.asarray(config.era_delta, jnp.float32) if V == "era"
                   else None))

  # --- one gradient step ------------------------------------------------------
  def alpha_of(st, hp):
    if V == "era":
      return jnp.zeros(())
    if config.autotune and V != "diayn":
      return jnp.exp(st.log_alpha)
    return hp.alpha

  def logp_of(lp_dim, st):
    if V == "ace":
      return ace_lib.weighted_logp(lp_dim, st.causal_w)
    return lp_dim.sum(-1)

  def ig_fn(st, ens, obs_raw, a):
    x = mi_lib.normalize(st.in_norm, jnp.concatenate([obs_raw, a], -1))
    preds = nets.ensemble_apply(ens, x)  # [E, B, O + 1]
    ig = mi_lib.information_gain(preds)
    return mi_lib.normalize(st.ig_norm, ig), ig

  def update(st: SACState, key, hp):
    b = st.buffer
    ks = jax.random.split(key, 6)
    idx = jax.random.randint(ks[0], (config.batch_size,), 0,
                             jnp.maximum(b.size, 1))
    obs, act, rew = b.obs[idx], b.action[idx], b.reward[idx]
    nobs, term, skill = b.next_obs[idx], b.terminated[idx], b.skill[idx]
    alpha = alpha_of(st, hp)
    metrics = {}
    if V == "diayn":
      d_in = obs[:, :O] if config.diayn_disc_on == "s" else nobs[:, :O]
      rew = diayn_lib.pseudo_reward(nets.mlp_apply(st.disc, d_in), skill, K)
    # critic
    a2, lp2, _ = policy(st.actor, nobs, ks[1], hp, st.era_delta)
    logp2 = logp_of(lp2, st)
    if V == "bandlimited":
      qn = bl_lib.band_limited_q(
          lambda o, a: q_min(st.critic_target, o, a), nobs, a2, hp.bl_sigma,
          config.bl_kernel, ks[2], config.bl_samples)
    else:
      qn = q_min(st.critic_target, nobs, a2)
    soft = qn - alpha * logp2
    if V == "maxinfo":
      ig2, _ = ig_fn(st, st.ensemble, nobs[:, :O], a2)
      soft = soft + jnp.exp(st.log_lambda) * ig2
    y = sg(rew + hp.gamma * (1.0 - term) * soft)

    def critic_loss(c):
      q = q_all(c, obs, act)
      return jnp.sum(jnp.mean((q - y[None]) ** 2, -1))

    lq, gq = jax.value_and_grad(critic_loss)(st.critic)
    upd, opt_c = tx(hp.lr).update(gq, st.opt["critic"], st.critic)
    critic = optax.apply_updates(st.critic, upd)

    # actor (ACE: every ace_target_update_interval updates)
    def actor_loss(p):
      a, lp, ent = policy(p, obs, ks[3], hp, st.era_delta)
      logp = logp_of(lp, st)
      loss = alpha * logp - q_min(critic, obs, a)
      aux = dict(logp=logp, gauss_entropy=ent)
      if V == "maxinfo":
        ig, _ = ig_fn(st, st.ensemble, obs[:, :O], a)
        loss = loss - jnp.exp(st.log_lambda) * ig
        aux["ig"] = ig
      return jnp.mean(loss), aux

    (la, aux), ga = jax.value_and_grad(actor_loss, has_aux=True)(st.actor)
    upd, opt_a = tx(hp.lr).update(ga, st.opt["actor"], st.actor)
    actor = optax.apply_updates(st.actor, upd)
    do_actor = jnp.asarray(True)
    if V == "ace":
      do_actor = st.n_updates % config.ace_target_update_interval == 0
    pick = lambda new, old: jax.tree.map(
        lambda x, y: jnp.where(do_actor, x, y), new, old)
    actor, opt_a = pick(actor, st.actor), pick(opt_a, st.opt["actor"])
    opt = dict(st.opt, critic=opt_c, actor=opt_a)

    # temperature
    log_alpha = st.log_alpha
    if config.autotune and V not in ("era", "diayn"):
      ga_ = jax.grad(lambda la_: -jnp.mean(
          la_ * sg(aux["logp"] + hp.target_entropy)))(st.log_alpha)
      u, opt_al = tx(hp.lr).update(ga_, st.opt["alpha"])
      log_alpha = pick(st.log_alpha + u, st.log_alpha)
      opt["alpha"] = pick(opt_al, st.opt["alpha"])

    tau = hp.tau
    critic_target = jax.tree.map(lambda t, s: tau * s + (1 - tau) * t,
                                 st.critic_target, critic)
    critic_target = pick(critic_target, st.critic_target)
    new = st._replace(actor=actor, critic=critic, critic_target=critic_target,
                      log_alpha=log_alpha, opt=opt,
                      n_updates=st.n_updates + 1)

    if V == "ace":
      new = new._replace(dormant=ace_lib.dormant_ratio(
          ga, config.ace_dormant_threshold))
      metrics["dormant"] = new.dormant
    if V == "era":
      new, metrics["era_entropy"] = _era_delta_update(new, st, obs, hp)
      metrics["era_delta"] = new.era_delta
    if V == "maxinfo":
      new = _maxinfo_update(new, st, obs, act, rew, nobs, ks[4], hp,
                            aux["ig"])
      metrics["lambda"] = jnp.exp(new.log_lambda)
      metrics["ig"] = jnp.mean(aux["ig"])
    if V == "diayn":
      raw = obs[:, :O]

      def dl(p):
        return diayn_lib.discriminator_loss(nets.mlp_apply(p, raw), skill)

      gd = jax.grad(dl)(st.disc)
      u, opt_d = tx(hp.lr).update(gd, st.opt["disc"], st.disc)
      new = new._replace(disc=optax.apply_updates(st.disc, u),
                         opt=dict(new.opt, disc=opt_d))
      metrics["disc_acc"] = diayn_lib.discriminator_accuracy(
          nets.mlp_apply(st.disc, raw), skill)
    metrics.update(critic_loss=lq, actor_loss=la, alpha=alpha,
                   entropy=-jnp.mean(aux["logp"]),
                   gauss_entropy=jnp.mean(aux["gauss_entropy"]),
                   q=jnp.mean(y))
    return new, metrics

  def _era_delta_update(new, st, obs, hp):
    """Realised entropy of π(·|s) and, if on, one step on ERA's δ loss."""
    out = nets.mlp_apply(st.actor, obs)
    log_std = era_lib.era_log_std(out[..., D:], era_h(hp, st.era_delta),
                                  config.era_log_std_min)
    h_real = jnp.mean(era_lib.truncated_normal_entropy(
        jnp.tanh(out[..., :D]), jnp.exp(log_std)).sum(-1))
    if not config.era_autotune_delta:
      return new, h_real
    delta, opt_d = era_lib.delta_step(
        tx(hp.lr), st.era_delta, st.opt["era_delta"], h_real, D * hp.era_h)
    return new._replace(era_delta=delta,
                        opt=dict(new.opt, era_delta=opt_d)), h_real

  def _maxinfo_update(new, st, obs, act, rew, nobs, key, hp, ig_pi):
    raw, nraw = obs[:, :O], nobs[:, :O]
    x = jnp.concatenate([raw, act], -1)
    tgt = jnp.concatenate([nraw - raw, rew[:, None]], -1)
    in_norm = mi_lib.running_norm_update(st.in_norm, x)
    out_norm = mi_lib.running_norm_update(st.out_norm, tgt)
    xn = mi_lib.normalize(in_norm, x)
    tn = mi_lib.normalize(out_norm, tgt)

    def ens_loss(p):
      return jnp.mean((nets.ensemble_apply(p, xn) - tn[None]) ** 2)

    g = jax.grad(ens_loss)(st.ensemble)
    u, opt_e = tx(hp.lr).update(g, st.opt["ensemble"], st.ensemble)
    ensemble = optax.apply_updates(st.ensemble, u)
    opt = dict(new.opt, ensemble=opt_e)
    # λ: compare the current and the lagged (target) actor.
    _, ig_raw = ig_fn(st, st.ensemble, raw, policy(new.actor, obs, key, hp)[0])
    ig_norm = mi_lib.running_norm_update(st.ig_norm, ig_raw)
    log_lambda = new.log_lambda
    if config.mi_autotune_lambda:
      a_bar = policy(st.actor_target, obs, key, hp)[0]
      ig_bar, _ = ig_fn(st, st.ensemble, raw, a_bar)
      g_l = jax.grad(mi_lib.lambda_loss)(st.log_lambda, ig_pi, ig_bar)
      u, opt_l = tx(hp.lr).update(g_l, st.opt["lambda"])
      log_lambda = st.log_lambda + u
      opt["lambda"] = opt_l
    actor_target = jax.tree.map(lambda t, s: hp.tau * s + (1 - hp.tau) * t,
                                st.actor_target, new.actor)
    return new._replace(ensemble=ensemble, opt=opt, in_norm=in_norm,
                        out_norm=out_norm, ig_norm=ig_norm,
                        log_lambda=log_lambda, actor_target=actor_target)

  # --- ACE extras -------------------------------------------------------------
  def ace_causal(st: SACState):
    n = min(config.ace_causal_sample, config.buffer_size)
    idx = (st.buffer.ptr - 1 - jnp.arange(n)) % config.buffer_size
    b = st.buffer
    eff = ace_lib.causal_effects(b.obs[idx, :O], b.action[idx],
                                 b.reward[idx], config.ace_causal_method)
    return st._replace(causal_w=ace_lib.causal_weights(eff))

  def ace_reset_f(st: SACState):
    if config.ace_reset_mode == "causal_reset":
      return ace_lib.causal_reset_factor(st.causal_w)
    return ace_lib.reset_factor(st.dormant)

  def ace_reset(st: SACState, key, hp):
    actor, critic, critic_t = ace_lib.reset_networks(
        key, ace_reset_f(st), st.actor, st.critic, st.critic_target,
        init_actor, init_critic)
    opt = dict(st.opt, actor=tx(hp.lr).init(actor),
               critic=tx(hp.lr).init(critic))
    return st._replace(actor=actor, critic=critic, critic_target=critic_t,
                       opt=opt)

  # --- environment step + updates -------------------------------------------
  def iteration(st: SACState, t, hp):
    rng, k_act, k_env, k_upd, k_skill, k_reset = jax.random.split(st.rng, 6)
    obs_a = augment(st.obs, st.skill)
    a_pi, _, _ = policy(st.actor, obs_a, k_act, hp, st.era_delta)
    a_rand = jax.random.uniform(k_act, (E, D), minval=-1.0, maxval=1.0)
    a = jnp.where(t * E < config.learning_starts, a_rand, a_pi)
    tr = jax.vmap(env.step, (0, 0, 0, None))(
        jax.random.split(k_env, E), st.env_state, a, env.params)
    done = tr.terminated | tr.truncated
    b = st.buffer
    i = (b.ptr + jnp.arange(E)) % config.buffer_size
    buf = Buffer(
        b.obs.at[i].set(obs_a), b.action.at[i].set(a),
        b.reward.at[i].set(tr.reward),
        b.next_obs.at[i].set(augment(tr.next_obs, st.skill)),
        b.terminated.at[i].set(tr.terminated.astype(jnp.float32)),
        b.skill.at[i].set(st.skill), (b.ptr + E) % config.buffer_size,
        jnp.minimum(b.size + E, config.buffer_size))
    ep = st.ep_return + tr.reward
    skill = st.skill
    if K:
      skill = jnp.where(done, jax.random.randint(k_skill, (E,), 0, K), skill)
    st = st._replace(
        buffer=buf, env_state=tr.state, obs=tr.obs, skill=skill,
        ep_return=jnp.where(done, 0.0, ep),
        last_return=jnp.where(done, ep, st.last_return), rng=rng)
    if V == "ace":
      st = jax.lax.cond(
          ((t + 1) * E) % config.ace_causal_interval < E,
          ace_causal, lambda s: s, st)

    learn = (t + 1) * E >= config.learning_starts
    zero_m = jax.eval_shape(lambda: update(st, k_upd, hp)[1])
    zero_m = jax.tree.map(lambda s: jnp.full(s.shape, jnp.nan, s.dtype),
                          zero_m)
    st, m = jax.lax.cond(learn, lambda s: update(s, k_upd, hp),
                         lambda s: (s, zero_m), st)
    if V == "ace" and config.ace_reset_interval:
      # ACE: after update number u (0-based), reset when
      # u % reset_interval == 0 and u > reset_start.
      u = st.n_updates - 1
      do_reset = (learn & (u > config.ace_reset_start)
                  & (u % config.ace_reset_interval == 0))
      m = dict(m, reset=do_reset.astype(jnp.float32),
               reset_factor=ace_reset_f(st))
      st = jax.lax.cond(do_reset, lambda s: ace_reset(s, k_reset, hp),
                        lambda s: s, st)
    m = dict(m, episode_return=jnp.nanmean(st.last_return))
    if V == "ace":
      m["causal_w"] = st.causal_w
    return st, m

  def train(rng, hyper: SACHyper | None = None):
    hp = default_hyper(config, env) if hyper is None else hyper
    st = init(rng, hp)
    return jax.lax.scan(lambda s, t: iteration(s, t, hp), st,
                        jnp.arange(num_steps))

  return train


def eval_policy(config: SACConfig, state: SACState, rng, num_episodes: int = 4,
                env: envs_lib.Env | None = None, max_steps: int = 200,
                hyper: SACHyper | None = None):
  """Mean undiscounted return of the stochastic policy over a few episodes.

  Runs ``max_steps`` steps in ``num_episodes`` parallel envs; each env counts
  only its first episode.
  """
  env = make_env(config) if env is None else env
  hp = default_hyper(config, env) if hyper is None else hyper
  del hp
  D = env.action_dim

  def act(obs, key):
    out = nets.mlp_apply(state.actor, obs)
    mu = out[..., :D]
    return jnp.tanh(mu)

  return envs_lib.first_episode_return(
      env, act,
      rng, num_episodes, max_steps)
