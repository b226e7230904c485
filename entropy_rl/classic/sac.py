"""SAC with automatic temperature and its entropy variants, all on device.

Soft Actor-Critic (Haarnoja et al. 2018, https://arxiv.org/abs/1801.01290;
automatic α: https://arxiv.org/abs/1812.05905), spec §B0::

    y   = r + γ(1 − d)·(min_j Q̄_j(s', a') − α·log π(a'|s')),  a' ~ π(·|s')
    L_Q = Σ_j E[(Q_j(s, a) − sg(y))²]
    L_π = E_s[α·log π(ã|s) − min_j Q_j(s, ã)]          (ã reparameterised)
    L_α = −E[log α · sg(log π(ã|s) + H̄)],  H̄ = −|A|
    θ̄  ← τθ + (1 − τ)θ̄

One SAC skeleton (:func:`make_train`); an entropy method is a
:class:`~entropy_rl.classic.sac_pieces.SACPieces`, the method's choice at each
of SAC's variation points (critic target, actor term, α rule, its own
learning), built once from ``config.variant`` by :func:`make_pieces` (each
method's maths in its own module, the wiring in
:mod:`~entropy_rl.classic.sac_pieces`):

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

``make_train(config, env=None, pieces=None)`` returns
``train(rng, hyper=None) -> (state, metrics)``:
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
from entropy_rl.classic import diayn as diayn_lib
from entropy_rl.classic import envs as envs_lib
from entropy_rl.classic import nets
from entropy_rl.classic import sac_pieces

Array = jax.Array
sg = jax.lax.stop_gradient
VARIANTS = tuple(sac_pieces.BUILDERS)  # ("sac", "era", ..., "diayn")


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


def make_pieces(config: SACConfig) -> sac_pieces.SACPieces:
  """The pieces of ``config.variant``, resolved once at build time."""
  _check(config)
  return sac_pieces.BUILDERS[config.variant](config)


def make_train(config: SACConfig, env: envs_lib.Env | None = None,
               pieces: sac_pieces.SACPieces | None = None):
  """Builds ``train(rng, hyper=None) -> (SACState, metrics)``.

  Args:
    config: a :class:`SACConfig`.
    env: an :class:`~entropy_rl.classic.envs.Env` (default from
      ``config.env_name``).
    pieces: the entropy method's :class:`~entropy_rl.classic.sac_pieces.
      SACPieces` (default: those of ``config.variant``, :func:`make_pieces`).

  Returns:
    The train function (jit it, vmap it over keys / :class:`SACHyper`).
  """
  _check(config)
  pieces = make_pieces(config) if pieces is None else pieces
  env = make_env(config) if env is None else env
  D, O, E = env.action_dim, env.obs_dim, config.num_envs
  K = pieces.num_skills
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

  def policy(actor, obs, key, hp, delta=None):
    """Returns (a [.., D], logp_per_dim [.., D], gaussian entropy [..])."""
    out = nets.mlp_apply(actor, obs)
    a, lp, log_std = pieces.policy_head(out[..., :D], out[..., D:], key, hp,
                                        delta)
    return a, lp, nets.gaussian_entropy(log_std)

  def q_all(critic, obs, a):
    x = jnp.concatenate([obs, a], -1)
    return nets.ensemble_apply(critic, x)[..., 0]  # [2, ...]

  def q_min(critic, obs, a):
    return q_all(critic, obs, a).min(0)

  tx = lambda lr: optax.adam(lr)
  net = sac_pieces.SACNets(O, D, H, init_actor, init_critic, policy, q_min, tx)

  # --- init -----------------------------------------------------------------
  def init(rng, hp):
    ks = jax.random.split(rng, 8)
    actor, critic = init_actor(ks[0]), init_critic(ks[1])
    obs, env_state = jax.vmap(env.reset, (0, None))(
        jax.random.split(ks[2], E), env.params)
    skill = (jax.random.randint(ks[3], (E,), 0, K) if K
             else jnp.zeros((E,), jnp.int32))
    fields, extra_opt = ({}, {}) if pieces.init is None else pieces.init(
        net, ks[4:7], actor, hp)
    opt = dict(actor=tx(hp.lr).init(actor), critic=tx(hp.lr).init(critic),
               alpha=tx(hp.lr).init(jnp.zeros(())), **extra_opt)
    n = config.buffer_size
    buf = Buffer(jnp.zeros((n, OA)), jnp.zeros((n, D)), jnp.zeros((n,)),
                 jnp.zeros((n, OA)), jnp.zeros((n,)),
                 jnp.zeros((n,), jnp.int32), jnp.zeros((), jnp.int32),
                 jnp.zeros((), jnp.int32))
    return SACState(
        actor=actor, critic=critic, critic_target=critic,
        actor_target=None, ensemble=None, disc=None,
        log_alpha=jnp.asarray(config.init_log_alpha, jnp.float32),
        log_lambda=jnp.asarray(hp.mi_init_log_lambda, jnp.float32),
        opt=opt, in_norm=None, out_norm=None, ig_norm=None,
        causal_w=jnp.ones((D,)), dormant=jnp.zeros(()),
        buffer=buf, env_state=env_state, obs=obs, skill=skill,
        ep_return=jnp.zeros((E,)), last_return=jnp.full((E,), jnp.nan),
        n_updates=jnp.zeros((), jnp.int32), rng=ks[7])._replace(**fields)

  # --- one gradient step ------------------------------------------------------
  def update(st: SACState, key, hp):
    b = st.buffer
    ks = jax.random.split(key, 6)
    idx = jax.random.randint(ks[0], (config.batch_size,), 0,
                             jnp.maximum(b.size, 1))
    batch = sac_pieces.Replay(b.obs[idx], b.action[idx], b.reward[idx],
                              b.next_obs[idx], b.terminated[idx], b.skill[idx])
    if pieces.reward is not None:
      batch = batch._replace(reward=pieces.reward(net, st, batch))
    obs, act, nobs = batch.obs, batch.action, batch.next_obs
    alpha = pieces.alpha(st, hp)
    # critic
    a2, lp2, _ = policy(st.actor, nobs, ks[1], hp, st.era_delta)
    logp2 = pieces.logp(lp2, st)
    qn = pieces.target_q(net, st.critic_target, nobs, a2, ks[2], hp)
    soft = qn - alpha * logp2
    if pieces.bonus is not None:
      soft = soft + pieces.bonus(net, st, nobs[:, :O], a2)[0]
    y = sg(batch.reward + hp.gamma * (1.0 - batch.terminated) * soft)

    def critic_loss(c):
      q = q_all(c, obs, act)
      return jnp.sum(jnp.mean((q - y[None]) ** 2, -1))

    lq, gq = jax.value_and_grad(critic_loss)(st.critic)
    upd, opt_c = tx(hp.lr).update(gq, st.opt["critic"], st.critic)
    critic = optax.apply_updates(st.critic, upd)

    # actor
    def actor_loss(p):
      a, lp, ent = policy(p, obs, ks[3], hp, st.era_delta)
      logp = pieces.logp(lp, st)
      loss = alpha * logp - q_min(critic, obs, a)
      aux = dict(logp=logp, gauss_entropy=ent)
      if pieces.bonus is not None:
        bonus, aux["bonus"] = pieces.bonus(net, st, obs[:, :O], a)
        loss = loss - bonus
      return jnp.mean(loss), aux

    (la, aux), ga = jax.value_and_grad(actor_loss, has_aux=True)(st.actor)
    upd, opt_a = tx(hp.lr).update(ga, st.opt["actor"], st.actor)
    actor = optax.apply_updates(st.actor, upd)
    do_actor = pieces.actor_gate(st)
    pick = lambda new, old: jax.tree.map(
        lambda x, y: jnp.where(do_actor, x, y), new, old)
    actor, opt_a = pick(actor, st.actor), pick(opt_a, st.opt["actor"])
    opt = dict(st.opt, critic=opt_c, actor=opt_a)

    # temperature
    log_alpha = st.log_alpha
    if pieces.tune_alpha:
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
    metrics = {}
    if pieces.after_update is not None:
      new, metrics = pieces.after_update(net, new, st, batch, ks[4], hp, aux,
                                         ga)
    metrics.update(critic_loss=lq, actor_loss=la, alpha=alpha,
                   entropy=-jnp.mean(aux["logp"]),
                   gauss_entropy=jnp.mean(aux["gauss_entropy"]),
                   q=jnp.mean(y))
    return new, metrics

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
    if pieces.before_step is not None:
      st = pieces.before_step(net, st, t)

    learn = (t + 1) * E >= config.learning_starts
    zero_m = jax.eval_shape(lambda: update(st, k_upd, hp)[1])
    zero_m = jax.tree.map(lambda s: jnp.full(s.shape, jnp.nan, s.dtype),
                          zero_m)
    st, m = jax.lax.cond(learn, lambda s: update(s, k_upd, hp),
                         lambda s: (s, zero_m), st)
    if pieces.after_step is not None:
      st, m = pieces.after_step(net, st, m, learn, k_reset, hp)
    m = dict(m, episode_return=jnp.nanmean(st.last_return))
    return st, m

  def train(rng, hyper: SACHyper | None = None):
    hp = default_hyper(config, env) if hyper is None else hyper
    st = init(rng, hp)
    return jax.lax.scan(lambda s, t: iteration(s, t, hp), st,
                        jnp.arange(num_steps))

  return train


def eval_policy(config: SACConfig, state: SACState, rng, num_episodes: int = 4,
                env: envs_lib.Env | None = None, max_steps: int = 200,
                hyper: SACHyper | None = None, *,
                deterministic: bool = True) -> Array:
  """Mean undiscounted return of the actor over a few episodes.

  Runs ``max_steps`` steps in ``num_episodes`` parallel envs; each env counts
  only its first episode.

  Args:
    config: the :class:`SACConfig` the state was trained with.
    state: a :class:`SACState` (only ``actor`` and ``era_delta`` are read).
    rng: PRNG key (env resets; with ``deterministic=False`` also actions).
    num_episodes: parallel envs, one episode each.
    env: the environment (default from ``config.env_name``).
    max_steps: steps to run (≥ the episode length for full episodes).
    hyper: the :class:`SACHyper` of the run (default from ``config``); read
      by the stochastic policy head (ERA's target entropy).
    deterministic: ``True`` (default; the usual SAC evaluation) acts with
      the mean action ``tanh(μ(s))``, which is also the centre of ERA's
      truncated normal. ``False`` samples ``a ~ π(·|s)`` from the variant's
      policy head, as in training.

  Returns:
    A scalar: the mean return over the ``num_episodes`` first episodes.
  """
  pieces = make_pieces(config)
  if pieces.num_skills:
    raise ValueError(
        f"eval_policy: variant {config.variant!r} (DIAYN) has an actor "
        f"conditioned on one of {pieces.num_skills} skills; evaluating it "
        "needs a skill, which eval_policy does not take")
  env = make_env(config) if env is None else env
  hp = default_hyper(config, env) if hyper is None else hyper
  D = env.action_dim

  def act(obs, key):
    out = nets.mlp_apply(state.actor, obs)
    if deterministic:
      return jnp.tanh(out[..., :D])
    return pieces.policy_head(out[..., :D], out[..., D:], key, hp,
                              state.era_delta)[0]

  return envs_lib.first_episode_return(env, act, rng, num_episodes, max_steps)
