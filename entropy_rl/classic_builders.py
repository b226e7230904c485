"""From a ``classic`` config to a seed-vmapped classic-RL run.

With :mod:`entropy_rl.builders` (RLVR) and :mod:`entropy_rl.agent_builders`
this is one of the three library modules that read a ConfigDict; everything
under ``jit`` sees plain objects built here once.

``config.algorithm`` names the algorithm with ``kind`` and holds its
settings, in the RLVR dialect (``kind`` plus keyword arguments)::

    config.algorithm = dict(kind="sac", variant="era", total_steps=2000, ...)

For the loops (``sac``, ``ppo``, ``trpo``, ``mdqn``, ``moss``,
``doraemon``) the other keys are the fields of the algorithm's config
(:class:`entropy_rl.classic.sac.SACConfig`, ``PPOConfig``, ...), whose
defaults apply to the keys left out; for the tabular studies (``mdvi``,
``maxent_exploration``, ``bobw``, ``moco``) they are the study's sizes.

:func:`build` returns ``curves(keys) -> {name: array [seeds, T, ...]}``: the
run's metric curves, one row per seed key (one ``jit(vmap(...))`` per
study).
"""

from __future__ import annotations

import difflib
from typing import Any, Callable

import jax
import jax.numpy as jnp

from entropy_rl import builders
from entropy_rl.classic import bobw
from entropy_rl.classic import doraemon
from entropy_rl.classic import envs
from entropy_rl.classic import maxent_exploration as mex
from entropy_rl.classic import mdqn
from entropy_rl.classic import mdvi
from entropy_rl.classic import moco
from entropy_rl.classic import moss_agent
from entropy_rl.classic import ppo
from entropy_rl.classic import sac
from entropy_rl.classic import tabular
from entropy_rl.classic import trpo

Curves = Callable[[jax.Array], dict[str, jax.Array]]


def _settings(cfg: Any) -> dict[str, Any]:
  """The algorithm's settings: ``config.algorithm`` without ``kind``."""
  kw = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
  kw.pop("kind", None)
  return kw


def _fields(cls, kw: dict[str, Any]):
  """``cls(**kw)``, naming a misspelt field with a did-you-mean."""
  bad = sorted(set(kw) - set(cls._fields))
  if bad:
    close = {b: difflib.get_close_matches(b, cls._fields, 1) for b in bad}
    raise ValueError(f"{cls.__name__} has no field(s) {bad} (did you mean "
                     f"{close}?); its fields are {', '.join(cls._fields)}")
  return cls(**kw)


def _sac(kw: dict[str, Any]) -> Curves:
  train = sac.make_train(_fields(sac.SACConfig, kw))

  def curves(keys):
    _, m = jax.jit(jax.vmap(train))(keys)
    out = {"episode_return": m["episode_return"], "entropy": m["entropy"]}
    for k in ("gauss_entropy", "era_entropy", "era_delta", "alpha",
              "disc_acc", "lambda", "dormant"):
      if k in m:
        out[k] = m[k]
    if "causal_w" in m:  # ACE: spread of the causal weights, max w − min w
      out["causal_w_spread"] = m["causal_w"].max(-1) - m["causal_w"].min(-1)
    return out
  return curves


def _pg(lib, config_cls) -> Callable[[dict[str, Any]], Curves]:
  def build_pg(kw):
    train = lib.make_train(_fields(config_cls, kw))

    def curves(keys):
      _, m = jax.jit(jax.vmap(train))(keys)
      return {k: m[k] for k in ("episode_return", "entropy", "kl") if k in m}
    return curves
  return build_pg


def _doraemon(kw: dict[str, Any]) -> Curves:
  if "ppo" in kw:  # nested PPOConfig / DoraemonConfig fields
    kw["ppo"] = _fields(ppo.PPOConfig, kw["ppo"])
  if "doraemon" in kw:
    kw["doraemon"] = _fields(doraemon.DoraemonConfig, kw["doraemon"])
  train = doraemon.make_train(_fields(doraemon.DoraemonTrainConfig, kw))

  def curves(keys):
    _, _, m = jax.jit(jax.vmap(train))(keys)
    return {k: m[k] for k in ("entropy", "success", "success_is", "kl_step",
                              "eval_return", "train_return")}
  return curves


def _mdqn(kw: dict[str, Any]) -> Curves:
  train = mdqn.make_train(_fields(mdqn.MDQNConfig, kw))

  def curves(keys):
    _, m = jax.jit(jax.vmap(train))(keys)
    return {k: m[k] for k in ("episode_return", "policy_entropy", "loss")}
  return curves


def _moss(kw: dict[str, Any]) -> Curves:
  kw["env_kwargs"] = tuple(tuple(p) for p in kw.get("env_kwargs", ()))
  train = moss_agent.make_train(_fields(moss_agent.MOSSConfig, kw))

  def curves(keys):
    _, m = jax.jit(jax.vmap(train))(keys)
    return {k: m[k] for k in ("intr_explore", "intr_control",
                              "intrinsic_reward", "cpc_loss")}
  return curves


def _mdvi(kw: dict[str, Any]) -> Curves:
  """MD-VI on a random MDP: sub-optimality of each λ's policies."""
  mdp = envs.random_mdp(jax.random.PRNGKey(0), kw["num_states"],
                        kw.get("num_actions", 3), gamma=0.9)
  q = tabular.value_iteration(mdp, 500)
  v_star = tabular.policy_evaluation(mdp, jax.nn.one_hot(q.argmax(-1),
                                                         q.shape[-1]))[0]
  tau, iters = kw.get("tau", 0.05), kw["iters"]
  noise = kw.get("noise_std", 1.0)

  def curves(keys):
    out = {}
    for lam in kw.get("lams", (0.0, 2.0)):
      def one(key, lam=lam):
        _, pis = mdvi.mdvi_solve(mdp, lam, tau, iters, key, noise)
        vs = jax.vmap(lambda p: tabular.policy_evaluation(mdp, p)[0])(pis)
        return jnp.mean(v_star - vs, -1)
      out[f"suboptimality_lambda={lam}"] = jax.jit(jax.vmap(one))(keys)
    return out
  return curves


def _maxent(kw: dict[str, Any]) -> Curves:
  """Visitation entropy of random, EntGame and UCBVI-Ent exploration."""
  mdp = envs.gridworld_mdp(kw["size"], horizon=kw["horizon"])

  def curves(keys):
    return {f"visitation_entropy_{a}": jax.jit(jax.vmap(
        lambda key, a=a: mex.run_exploration(mdp, a, kw["episodes"], key)[1]
    ))(keys) for a in ("random", "entgame", "ucbvi_ent")}
  return curves


def _bobw(kw: dict[str, Any]) -> Curves:
  """Returns of FTRL policy optimisation under each regulariser
  (deterministic: the same curve for every seed)."""
  mdp = envs.chain_mdp(kw["n"], gamma=0.9, slip=0.1)

  def curves(keys):
    out = {}
    for reg in bobw.REGULARIZERS:
      _, r = bobw.bobw_po(mdp, kw["iters"], reg, kw["eta0"])
      out[f"return_{reg}"] = jnp.broadcast_to(r, (keys.shape[0],) + r.shape)
    return out
  return curves


def _moco(kw: dict[str, Any]) -> Curves:
  """MoCoVI vs value iteration on a perturbed model: error to V*."""
  s, iters = kw["num_states"], kw["iters"]

  def one(key):
    k1, k2 = jax.random.split(key)
    mdp = envs.random_mdp(k1, s, 2, gamma=0.9)
    p_hat = jax.random.dirichlet(k2, jnp.full(s, 1.0), (s, 2))
    v_true = tabular.value_iteration(mdp, 300).max(-1)
    _, vs = moco.mocovi(mdp, p_hat, iters, kw["num_basis"])

    def vi(v, _):
      v = jnp.max(mdp.R + mdp.gamma * p_hat @ v, -1)
      return v, v
    _, vs_hat = jax.lax.scan(vi, jnp.zeros(s), None, iters)
    return dict(moco_error=jnp.abs(vs - v_true).max(-1),
                vi_on_phat_error=jnp.abs(vs_hat - v_true).max(-1))
  return lambda keys: jax.jit(jax.vmap(one))(keys)


ALGORITHMS: dict[str, Callable[[dict[str, Any]], Curves]] = dict(
    sac=_sac, doraemon=_doraemon, mdvi=_mdvi, mdqn=_mdqn, moss=_moss,
    maxent_exploration=_maxent, bobw=_bobw, moco=_moco,
    ppo=_pg(ppo, ppo.PPOConfig), trpo=_pg(trpo, trpo.TRPOConfig))


# The smallest valid value of each size / count setting an algorithm may
# have (``config.algorithm.<name>``; DORAEMON's nested ``ppo`` and
# ``doraemon`` too); 0 where 0 means "off".
_SETTING_MINIMUMS: dict[str, int] = {
    "total_steps": 1, "num_envs": 1, "num_steps": 1, "buffer_size": 1,
    "batch_size": 1, "learning_starts": 0, "hidden": 1, "update_epochs": 1,
    "num_minibatches": 1, "train_every": 1, "target_update_every": 1,
    "eps_decay_steps": 0, "update_every": 1, "cic_hidden": 1,
    "skill_dim": 1, "skill_every": 1, "partitions": 1, "n_step": 1,
    "knn_k": 1, "episode_len": 1, "cg_iters": 1, "max_backtracks": 1,
    "critic_steps": 1, "bl_samples": 1, "ace_causal_interval": 1,
    "ace_causal_sample": 1, "ace_reset_interval": 0, "ace_reset_start": 0,
    "ace_target_update_interval": 1, "mi_ensemble": 1, "diayn_skills": 1,
    "solver_steps": 1, "outer_iters": 1, "ppo_updates_per_iter": 1,
    "eval_episodes": 1, "eval_steps": 1, "num_states": 1, "num_actions": 1,
    "iters": 1, "size": 1, "horizon": 1, "episodes": 1, "n": 1,
    "num_basis": 1,
}
# ... as dotted keys of a classic config (``builders.check_sizes``).
SIZE_MINIMUMS: dict[str, int] = {
    "num_seeds": 1,
    **{f"algorithm.{prefix}{k}": v for prefix in ("", "ppo.", "doraemon.")
       for k, v in _SETTING_MINIMUMS.items()}}


def build(config: Any) -> Curves:
  """``config.algorithm`` -> ``curves(keys)`` (see the module doc)."""
  builders.check_sizes(config, SIZE_MINIMUMS)
  kind = config.algorithm.kind
  if kind not in ALGORITHMS:
    close = difflib.get_close_matches(str(kind), sorted(ALGORITHMS), 3)
    hint = f"; did you mean {close}?" if close else ""
    raise ValueError(f"unknown classic algorithm {kind!r}{hint} Valid: "
                     f"{', '.join(sorted(ALGORITHMS))}")
  return ALGORITHMS[kind](_settings(config.algorithm))


def seed_keys(config: Any) -> jax.Array:
  """``num_seeds`` keys from ``config.seed`` (one per vmapped seed)."""
  return jax.random.split(jax.random.PRNGKey(config.seed), config.num_seeds)


__all__ = ("ALGORITHMS", "build", "Curves", "seed_keys", "SIZE_MINIMUMS")
