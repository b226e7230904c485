"""What each entropy method changes in SAC: small pieces on one skeleton.

:func:`entropy_rl.classic.sac.make_train` is one SAC loop (spec §B0). An
entropy method changes it in a few named places, never anywhere else; a
:class:`SACPieces` holds one method's choice for each place (``None`` or the
default: SAC's own). The places, in the order an update meets them::

    r     = reward(batch)               DIAYN: log q_φ(z|s) − log p(z)
    a', ℓ = policy_head(actor(s'))      ERA: its activation, truncated N
    log π = logp(ℓ)                     Σ_i ℓ_i; ACE: Σ_i w_i·ℓ_i
    α     = alpha(state)                ERA: 0; DIAYN: fixed
    y     = r + γ(1 − d)·(target_q(s', a') − α·log π(a'|s') + bonus(s', a'))
    L_π   = E[α·log π(ã|s) − min_j Q_j(s, ã) − bonus(s, ã)]
    L_α   = −E[log α·sg(log π + H̄)]     only if tune_alpha
    gate  = actor_gate(state)           ACE: actor, α, Q̄ every k updates
    state = after_update(state)         ERA: δ; MaxInfoRL: ensemble, λ;
                                        DIAYN: discriminator; ACE: dormancy

with ``target_q`` band-limited SAC's smoothed Q̄ and ``bonus`` MaxInfoRL's
λ·IG; around each environment step come ``before_step`` (ACE's causal
weights) and ``after_step`` (ACE's soft reset). Builders (:func:`sac_pieces`,
:func:`era_pieces`, :func:`bandlimited_pieces`, :func:`ace_pieces`,
:func:`maxinfo_pieces`, :func:`diayn_pieces`) read the config once, at build
time; nothing under ``jit`` looks at a variant name. The maths of each method
lives in its own module (:mod:`~entropy_rl.classic.era`,
:mod:`~entropy_rl.classic.bandlimited`, :mod:`~entropy_rl.classic.ace`,
:mod:`~entropy_rl.classic.maxinfo`, :mod:`~entropy_rl.classic.diayn`); this
module only wires it into SAC.

A piece that needs the skeleton's networks takes a :class:`SACNets` first.
States are the skeleton's ``SACState``; pieces return new ones with
``_replace``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from entropy_rl.classic import ace as ace_lib
from entropy_rl.classic import bandlimited as bl_lib
from entropy_rl.classic import diayn as diayn_lib
from entropy_rl.classic import era as era_lib
from entropy_rl.classic import maxinfo as mi_lib
from entropy_rl.classic import nets

Array = jax.Array


class Replay(NamedTuple):
  """One replayed minibatch ([B] leading axis)."""

  obs: Array  # [B, O + K] agent observation (DIAYN: with one-hot z)
  action: Array  # [B, D]
  reward: Array  # [B]
  next_obs: Array  # [B, O + K]
  terminated: Array  # [B] f32
  skill: Array  # [B] int (DIAYN; zeros otherwise)


class SACNets(NamedTuple):
  """The skeleton's networks and sizes, handed to the pieces that need them.

  Attributes:
    obs_dim: O, the environment's observation size (without DIAYN's z).
    action_dim: D.
    hidden: width of every hidden layer.
    init_actor: ``key -> actor params``.
    init_critic: ``key -> twin critic params``.
    policy: ``(actor, obs, key, hp, delta=None) -> (a [.., D], log π_i
      [.., D], Gaussian entropy [..])`` with the method's head.
    q_min: ``(critic, obs, a) -> min_j Q_j [..]``.
    tx: ``lr -> optax.GradientTransformation`` (every optimiser of the loop).
  """

  obs_dim: int
  action_dim: int
  hidden: int
  init_actor: Callable[[Array], Any]
  init_critic: Callable[[Array], Any]
  policy: Callable[..., tuple[Array, Array, Array]]
  q_min: Callable[[Any, Array, Array], Array]
  tx: Callable[[Any], optax.GradientTransformation]


def tanh_gaussian_head(mu, pre, key, hp, delta):
  """SAC's head: log σ = clip(pre), a = tanh(μ + σ·ε) (with the tanh log-det).

  Returns:
    ``(a [.., D], log π_i [.., D], log σ [.., D])``.
  """
  del hp, delta
  log_std = jnp.clip(pre, nets.LOG_STD_MIN, nets.LOG_STD_MAX)
  a, lp = nets.tanh_gaussian_sample(key, mu, log_std)
  return a, lp, log_std


def sum_logp(logp_per_dim, st):
  """log π(a|s) = Σ_i log π_i."""
  del st
  return logp_per_dim.sum(-1)


def learned_alpha(st, hp):
  """α = exp(log α), tuned by L_α."""
  del hp
  return jnp.exp(st.log_alpha)


def fixed_alpha(st, hp):
  """α = the hyperparameter ``alpha`` (autotune off, DIAYN)."""
  del st
  return hp.alpha


def no_alpha(st, hp):
  """α = 0 (ERA: the entropy floor is in the activation)."""
  del st, hp
  return jnp.zeros(())


def twin_min_target(net: SACNets, critic_target, next_obs, action, key, hp):
  """min_j Q̄_j(s', a'), SAC's target critic."""
  del key, hp
  return net.q_min(critic_target, next_obs, action)


def always(st):
  """The actor, α and the target network move at every update."""
  del st
  return jnp.asarray(True)


class SACPieces(NamedTuple):
  """One entropy method's choices at SAC's variation points (module docstring).

  Attributes:
    policy_head: ``(μ, pre, key, hp, delta) -> (a, log π_i, log σ)`` on the
      actor's two output halves; ``delta`` is ``SACState.era_delta``.
    logp: ``(log π_i [.., D], state) -> log π [..]``.
    alpha: ``(state, hp) -> α``.
    tune_alpha: take a step on L_α = −E[log α·sg(log π + H̄)].
    num_skills: K > 0 appends a one-hot skill to the observation and
      redraws it at every episode end (DIAYN).
    init: ``(net, keys [3], actor, hp) -> (state fields, optimiser states)``
      for the method's own networks and scalars, or None (three keys kept
      for the methods' networks: MaxInfoRL draws from the first, DIAYN from
      the second).
    reward: ``(net, state, Replay) -> r [B]`` replacing the task reward, or
      None.
    target_q: ``(net, critic_target, s', a', key, hp) -> Q̄(s', a') [B]``.
    bonus: ``(net, state, raw obs, a) -> (b [B], aux [B])``: an extra entropy
      added to the soft value in the target and to the actor's objective, or
      None.
    actor_gate: ``state -> bool``: whether this update moves the actor, α
      and the target critic.
    after_update: ``(net, new, old, Replay, key, hp, actor_aux, actor_grads)
      -> (new, metrics)``: the method's own learning after SAC's, or None;
      ``actor_aux`` holds the actor loss's ``logp`` and ``gauss_entropy``
      [B] and, with a bonus, the bonus's aux as ``bonus``.
    before_step: ``(net, state, t) -> state`` after storing transition t and
      before its update, or None.
    after_step: ``(net, state, metrics, learn, key, hp) -> (state,
      metrics)`` after the update of step t, or None.
  """

  policy_head: Callable[..., tuple[Array, Array, Array]] = tanh_gaussian_head
  logp: Callable[[Array, Any], Array] = sum_logp
  alpha: Callable[[Any, Any], Array] = learned_alpha
  tune_alpha: bool = True
  num_skills: int = 0
  init: Callable[..., tuple[dict, dict]] | None = None
  reward: Callable[..., Array] | None = None
  target_q: Callable[..., Array] = twin_min_target
  bonus: Callable[..., tuple[Array, Array]] | None = None
  actor_gate: Callable[[Any], Array] = always
  after_update: Callable[..., tuple[Any, dict]] | None = None
  before_step: Callable[..., Any] | None = None
  after_step: Callable[..., tuple[Any, dict]] | None = None


# --- SAC ----------------------------------------------------------------------


def sac_pieces(config) -> SACPieces:
  """SAC (Haarnoja et al. 2018): α learned, or fixed if ``autotune`` is off."""
  if config.autotune:
    return SACPieces()
  return SACPieces(alpha=fixed_alpha, tune_alpha=False)


# --- ERA ----------------------------------------------------------------------


def era_pieces(config) -> SACPieces:
  """SAC-ERA (:mod:`~entropy_rl.classic.era`): no α, the entropy floor D·h is
  ERA's activation on a truncated normal; optional δ compensation.
  """

  def target_h(hp, delta, d):
    """Per-dimension ERA target with the compensation: h + δ/D."""
    return hp.era_h if delta is None else hp.era_h + delta / d

  def head(mu, pre, key, hp, delta):
    log_std = era_lib.era_log_std(pre, target_h(hp, delta, pre.shape[-1]),
                                  config.era_log_std_min)
    a, lp = nets.truncated_normal_sample(key, jnp.tanh(mu), jnp.exp(log_std))
    return a, lp, log_std

  def init(net, keys, actor, hp):
    del keys, actor
    return (dict(era_delta=jnp.asarray(config.era_delta, jnp.float32)),
            dict(era_delta=net.tx(hp.lr).init(jnp.zeros(()))))

  def after_update(net, new, st, batch, key, hp, aux, grads):
    """Realised entropy of π(·|s) and, if on, one step on ERA's δ loss."""
    del key, aux, grads
    d = net.action_dim
    out = nets.mlp_apply(st.actor, batch.obs)
    log_std = era_lib.era_log_std(out[..., d:],
                                  target_h(hp, st.era_delta, d),
                                  config.era_log_std_min)
    h_real = jnp.mean(era_lib.truncated_normal_entropy(
        jnp.tanh(out[..., :d]), jnp.exp(log_std)).sum(-1))
    if config.era_autotune_delta:
      delta, opt_d = era_lib.delta_step(
          net.tx(hp.lr), st.era_delta, st.opt["era_delta"], h_real,
          d * hp.era_h)
      new = new._replace(era_delta=delta, opt=dict(new.opt, era_delta=opt_d))
    return new, dict(era_entropy=h_real, era_delta=new.era_delta)

  return SACPieces(policy_head=head, alpha=no_alpha, tune_alpha=False,
                   init=init, after_update=after_update)


# --- band-limited SAC --------------------------------------------------------


def bandlimited_pieces(config) -> SACPieces:
  """Band-limited SAC (:mod:`~entropy_rl.classic.bandlimited`): the target
  critic smoothed over its action by a kernel of width σ_bl.
  """

  def target_q(net, critic_target, next_obs, action, key, hp):
    return bl_lib.band_limited_q(
        lambda o, a: net.q_min(critic_target, o, a), next_obs, action,
        hp.bl_sigma, config.bl_kernel, key, config.bl_samples)

  return sac_pieces(config)._replace(target_q=target_q)


# --- ACE ----------------------------------------------------------------------


def ace_pieces(config) -> SACPieces:
  """ACE (:mod:`~entropy_rl.classic.ace`): causal weights w on the per-dim
  log π, actor/α/target every ``ace_target_update_interval`` updates,
  gradient dormancy, soft reset.
  """

  def logp(logp_per_dim, st):
    return ace_lib.weighted_logp(logp_per_dim, st.causal_w)

  def actor_gate(st):
    return st.n_updates % config.ace_target_update_interval == 0

  def after_update(net, new, st, batch, key, hp, aux, grads):
    del net, st, batch, key, hp, aux
    new = new._replace(dormant=ace_lib.dormant_ratio(
        grads, config.ace_dormant_threshold))
    return new, dict(dormant=new.dormant)

  def causal(net, st):
    n = min(config.ace_causal_sample, config.buffer_size)
    idx = (st.buffer.ptr - 1 - jnp.arange(n)) % config.buffer_size
    b = st.buffer
    eff = ace_lib.causal_effects(b.obs[idx, :net.obs_dim], b.action[idx],
                                 b.reward[idx], config.ace_causal_method)
    return st._replace(causal_w=ace_lib.causal_weights(eff))

  def before_step(net, st, t):
    """Refits the causal weights every ``ace_causal_interval`` env steps."""
    e = config.num_envs
    return jax.lax.cond(((t + 1) * e) % config.ace_causal_interval < e,
                        lambda s: causal(net, s), lambda s: s, st)

  def reset_f(st):
    if config.ace_reset_mode == "causal_reset":
      return ace_lib.causal_reset_factor(st.causal_w)
    return ace_lib.reset_factor(st.dormant)

  def reset(net, st, key, hp):
    actor, critic, critic_t = ace_lib.reset_networks(
        key, reset_f(st), st.actor, st.critic, st.critic_target,
        net.init_actor, net.init_critic)
    opt = dict(st.opt, actor=net.tx(hp.lr).init(actor),
               critic=net.tx(hp.lr).init(critic))
    return st._replace(actor=actor, critic=critic, critic_target=critic_t,
                       opt=opt)

  def after_step(net, st, m, learn, key, hp):
    if config.ace_reset_interval:
      # After update number u (0-based), reset when u % reset_interval == 0
      # and u > reset_start.
      u = st.n_updates - 1
      do_reset = (learn & (u > config.ace_reset_start)
                  & (u % config.ace_reset_interval == 0))
      m = dict(m, reset=do_reset.astype(jnp.float32),
               reset_factor=reset_f(st))
      st = jax.lax.cond(do_reset, lambda s: reset(net, s, key, hp),
                        lambda s: s, st)
    return st, dict(m, causal_w=st.causal_w)

  return sac_pieces(config)._replace(
      logp=logp, actor_gate=actor_gate, after_update=after_update,
      before_step=before_step, after_step=after_step)


# --- MaxInfoRL ----------------------------------------------------------------


def _ig(st, ensemble, obs, action):
  """(normalised IG, raw IG) [B] of the ensemble at (s, a).

  The ensemble's O + 1 outputs are two keys, next observation [:O] and
  reward [O:]; IG averages within each key, then over the two.
  """
  x = mi_lib.normalize(st.in_norm, jnp.concatenate([obs, action], -1))
  preds = nets.ensemble_apply(ensemble, x)  # [E, B, O + 1]
  o = obs.shape[-1]
  ig = mi_lib.information_gain((preds[..., :o], preds[..., o:]))
  return mi_lib.normalize(st.ig_norm, ig), ig


def maxinfo_pieces(config) -> SACPieces:
  """MaxInfoRL (:mod:`~entropy_rl.classic.maxinfo`): λ·IG of a dynamics
  ensemble as an extra entropy in the target and the actor; λ tuned against
  a Polyak-lagged actor.
  """

  def init(net, keys, actor, hp):
    o, d, h = net.obs_dim, net.action_dim, net.hidden
    ensemble = nets.ensemble_init(keys[0], config.mi_ensemble,
                                  (o + d, h, h, o + 1))
    fields = dict(actor_target=actor, ensemble=ensemble,
                  in_norm=mi_lib.running_norm_init((o + d,)),
                  out_norm=mi_lib.running_norm_init((o + 1,)),
                  ig_norm=mi_lib.running_norm_init(()))
    tx = net.tx(hp.lr)
    return fields, dict(ensemble=tx.init(ensemble),
                        **{"lambda": tx.init(jnp.zeros(()))})

  def bonus(net, st, obs, action):
    del net
    ig, _ = _ig(st, st.ensemble, obs, action)
    return jnp.exp(st.log_lambda) * ig, ig

  def after_update(net, new, st, batch, key, hp, aux, grads):
    del grads
    o = net.obs_dim
    raw, nraw = batch.obs[:, :o], batch.next_obs[:, :o]
    x = jnp.concatenate([raw, batch.action], -1)
    tgt = jnp.concatenate([nraw - raw, batch.reward[:, None]], -1)
    in_norm = mi_lib.running_norm_update(st.in_norm, x)
    out_norm = mi_lib.running_norm_update(st.out_norm, tgt)
    xn = mi_lib.normalize(in_norm, x)
    tn = mi_lib.normalize(out_norm, tgt)

    def ens_loss(p):
      pred = nets.ensemble_apply(p, xn)  # keys: next obs [:o], reward [o:]
      return mi_lib.ensemble_loss((pred[..., :o], pred[..., o:]),
                                  (tn[..., :o], tn[..., o:]))

    g = jax.grad(ens_loss)(st.ensemble)
    u, opt_e = net.tx(hp.lr).update(g, st.opt["ensemble"], st.ensemble)
    ensemble = optax.apply_updates(st.ensemble, u)
    opt = dict(new.opt, ensemble=opt_e)
    # λ: compare the current and the lagged (target) actor.
    _, ig_raw = _ig(st, st.ensemble, raw,
                    net.policy(new.actor, batch.obs, key, hp)[0])
    ig_norm = mi_lib.running_norm_update(st.ig_norm, ig_raw)
    log_lambda = new.log_lambda
    if config.mi_autotune_lambda:
      a_bar = net.policy(st.actor_target, batch.obs, key, hp)[0]
      ig_bar, _ = _ig(st, st.ensemble, raw, a_bar)
      g_l = jax.grad(mi_lib.lambda_loss)(st.log_lambda, aux["bonus"], ig_bar)
      u, opt_l = net.tx(hp.lr).update(g_l, st.opt["lambda"])
      log_lambda = st.log_lambda + u
      opt["lambda"] = opt_l
    actor_target = jax.tree.map(lambda t, s: hp.tau * s + (1 - hp.tau) * t,
                                st.actor_target, new.actor)
    new = new._replace(ensemble=ensemble, opt=opt, in_norm=in_norm,
                       out_norm=out_norm, ig_norm=ig_norm,
                       log_lambda=log_lambda, actor_target=actor_target)
    return new, dict(ig=jnp.mean(aux["bonus"]), **{
        "lambda": jnp.exp(new.log_lambda)})

  return sac_pieces(config)._replace(init=init, bonus=bonus,
                                     after_update=after_update)


# --- DIAYN --------------------------------------------------------------------


def diayn_pieces(config) -> SACPieces:
  """DIAYN (:mod:`~entropy_rl.classic.diayn`): K skills appended to the
  observation, the discriminator's pseudo-reward, fixed α.
  """
  k = config.diayn_skills

  def init(net, keys, actor, hp):
    del actor
    o, h = net.obs_dim, net.hidden
    disc = nets.mlp_init(keys[1], (o, h, h, k))
    return dict(disc=disc), dict(disc=net.tx(hp.lr).init(disc))

  def reward(net, st, batch):
    o = net.obs_dim
    d_in = (batch.obs[:, :o] if config.diayn_disc_on == "s"
            else batch.next_obs[:, :o])
    return diayn_lib.pseudo_reward(nets.mlp_apply(st.disc, d_in),
                                   batch.skill, k)

  def after_update(net, new, st, batch, key, hp, aux, grads):
    del key, aux, grads
    raw = batch.obs[:, :net.obs_dim]

    def dl(p):
      return diayn_lib.discriminator_loss(nets.mlp_apply(p, raw), batch.skill)

    gd = jax.grad(dl)(st.disc)
    u, opt_d = net.tx(hp.lr).update(gd, st.opt["disc"], st.disc)
    new = new._replace(disc=optax.apply_updates(st.disc, u),
                       opt=dict(new.opt, disc=opt_d))
    return new, dict(disc_acc=diayn_lib.discriminator_accuracy(
        nets.mlp_apply(st.disc, raw), batch.skill))

  return SACPieces(alpha=fixed_alpha, tune_alpha=False, num_skills=k,
                   init=init, reward=reward, after_update=after_update)


BUILDERS = dict(sac=sac_pieces, era=era_pieces,
                bandlimited=bandlimited_pieces, ace=ace_pieces,
                maxinfo=maxinfo_pieces, diayn=diayn_pieces)
