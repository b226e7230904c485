"""Builds a multi-turn agent experiment from an ``agent_*`` config.

``build(config)`` returns an :class:`Experiment`: the environment, the
model, the transform chain of the method, the jitted rollout (cached across
methods that share a model shape and environment, so a comparison compiles
it once) and ``iterate(states) -> (states, metrics)``, one RL iteration of
``num_seeds`` vmapped seeds (token game) or of one seed through the Python
adapter (calculator task).

Methods (``config.method``; ``config.method_kwargs`` go to the method's
constructor, see each one's defaults below):

* ``grpo``: trajectory-level GRPO advantages only.
* ``epo``: + :func:`entropy_rl.agents.epo` (entropy bonus and per-turn
  corridor smoothing; gate at ``max_turns // 2``, β over the run).
* ``empg``: + :func:`entropy_rl.agents.empg` (step-entropy modulation of the
  advantage and the future-clarity bonus).
* ``aepo``: + :func:`entropy_rl.agents.agentic_aepo` (entropy-aware
  advantage, gradient-preserving upper clip, ``sg_scope`` = which reading
  of the clip scope); with ``rollout.branching.enabled`` the token-game
  rollout is AEPO's entropy-balanced branching rollout
  (:func:`entropy_rl.agents.branching.branching_rollout`; unused budget
  slots are left out of the advantages and the metrics; with
  ``rollout.branching.pre_monitor`` the global-sample count m per task
  comes from AEPO's entropy pre-monitoring). Not available
  through the Python adapter (calculator task).
* ``dr_po``: dataset resets (:func:`entropy_rl.agents.dr_po.turn_rollin`):
  each episode is, with probability ``dr_po.reset_prob``, reset to the
  state after L ~ U{1, …, ℓ−1} teacher-forced turns of the reference
  trajectory (ℓ = ``dr_po.demo_turns`` turns of ``dr_po.demo_action``; the
  environment answers them as usual), then the policy plays on; the forced
  turns are out of the PG mask (:func:`entropy_rl.agents.dr_po_turns`).
  Token game only.
* ``spear``: cosine tool-call bonus (:func:`entropy_rl.agents.
  toolcall_reward`) before the advantages, + Clip-Cov (on-policy settings);
  Dr.BoT clip 0.2/0.28. With ``replay.enabled`` (layout l2): the
  self-imitation replay. Each iteration first draws a replay pass from the
  buffer (:func:`entropy_rl.agents.spear.replay_pass`: triggered above
  1.5·``buffer_size`` rows, advantages recalibrated against the median
  stored group mean, kept if ≥ 0, power-of-two subsample), appends those
  ``buffer_size`` rows to the on-policy batch with weight w(t)
  (:func:`entropy_rl.agents.mix_replay`, the replay-loss ramp), trains, then
  admits the rollout's positive-advantage trajectories and the step's group
  statistics (:func:`entropy_rl.agents.spear.admit`). Iteration states are
  then ``(TrainState, ReplayState)``. Token game (on-device rollout) only.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import entropy_rl as er
from entropy_rl import agents
from entropy_rl import regularizers
from entropy_rl import sampling as sampling_lib
from entropy_rl.agents import _branching as branching_lib
from entropy_rl.agents import _calculator as calc_lib
from entropy_rl.agents import _env as env_lib
from entropy_rl.agents import _spear as spear_lib
from entropy_rl.agents import _train as train_lib
from entropy_rl.core import ops
from entropy_rl.models import as_functions
from entropy_rl.models import Decoder
from entropy_rl.models import DecoderConfig
from entropy_rl.training import init_train_state
from entropy_rl.training import types as train_types

from entropy_rl.agents import _epo as epo_lib
from entropy_rl.agents import _token_game as game_lib
METHODS = ("grpo", "epo", "empg", "aepo", "spear", "dr_po")


class Experiment(NamedTuple):
  config: Any
  spec: env_lib.EnvSpec
  fns: Any
  init: Callable[[], Any]  # -> stacked TrainStates [num_seeds]
  iterate: Callable[[Any], tuple[Any, dict[str, Any]]]
  num_seeds: int


def make_transform(c, max_turns: int) -> er.EntropyTransform:
  """The method's chain (advantages first, or after SPEAR's reward bonus)."""
  kw = c.method_kwargs.to_dict()
  adv = ("advantages", train_lib.episode_advantages())
  m = c.method
  if m == "grpo":
    return er.named_chain(adv)
  if m == "epo":
    kw = {**dict(entropy_coef=0.005, smooth_coef=10.0, kappa_low=0.0,
                 kappa_high=2.0, alpha=0.1, variant="paper",
                 gate_turn=max_turns // 2,
                 num_epochs=c.train.num_steps), **kw}
    return er.named_chain(adv, ("epo", agents.epo(max_turns=max_turns,
                                                  **kw)))
  if m == "empg":
    kw = {**dict(k=1.0, k_f=1.0, zeta=0.1), **kw}
    return er.named_chain(adv, ("empg", agents.empg(max_turns=max_turns,
                                                    **kw)))
  if m == "aepo":
    kw = {**dict(adv_weight=0.2, sg_scope="all_upper"), **kw}
    return er.named_chain(adv, ("aepo", agents.agentic_aepo(**kw)))
  if m == "spear":
    kw = spear_kwargs(c)
    tool = agents.toolcall_reward(kw.pop("total_steps"), mode=kw.pop("mode"))
    replay = ((("replay", spear_lib.replay_advantages()),)
              if replay_config(c) is not None else ())
    return er.named_chain(("toolcall", tool), adv, *replay,
                          ("clip_cov", regularizers.clip_cov(**kw)))
  if m == "dr_po":
    return er.named_chain(adv, ("dr_po", agents.dr_po_turns()))
  raise ValueError(f"unknown method {m!r}; valid: {', '.join(METHODS)}")


def spear_kwargs(c) -> dict[str, Any]:
  return {**dict(total_steps=max(c.train.num_steps // 2, 1), mode="cosine",
                 ratio=2e-4, cov_low=1.0, cov_high=5.0),
          **c.method_kwargs.to_dict()}


def replay_config(c) -> spear_lib.ReplayConfig | None:
  """``replay`` -> a ReplayConfig, or None (disabled, absent or not SPEAR)."""
  r = c.get("replay")
  if c.method != "spear" or r is None or not r.enabled:
    return None
  kw = {k: v for k, v in r.to_dict().items() if k != "enabled"}
  if kw.get("total_steps") is None:
    kw["total_steps"] = max(c.train.num_steps // 2, 1)
  return spear_lib.ReplayConfig(**kw)


class DatasetReset(NamedTuple):
  """DR-PO's static reset settings (hashable: part of the rollout cache)."""
  reset_prob: float
  demo: tuple[tuple[int, ...], ...]  # [ℓ, L] reference action tokens


def dr_po_config(c) -> DatasetReset | None:
  if c.method != "dr_po":
    return None
  d = c.dr_po
  demo = tuple(tuple(int(x) for x in d.demo_action)
               for _ in range(d.demo_turns))
  return DatasetReset(float(d.reset_prob), demo)


def dataset_reset_rollout(fns, env, g, n, sampling, branch_cfg,
                          reset: DatasetReset, params, rng):
  """One rollout whose episodes start from dataset states (DR-PO):
  ``aux['rollin_turns']`` holds each row's teacher-forced turns."""
  k_roll, k_reset = jax.random.split(rng)
  demo = jnp.asarray(reset.demo, jnp.int32)  # [ℓ, L]
  rollin = agents.rollin_lengths(k_reset, jnp.full((g * n,), demo.shape[0]),
                                 reset.reset_prob)
  ep = env_lib.rollout(
      fns, params, env, k_roll, num_groups=g, group_size=n,
      sampling=sampling, processors=(_ROLLIN,),
      processor_params=agents.turn_rollin(demo, rollin),
      branching=branch_cfg)
  t_max = env.spec.max_turns
  f = rollin.astype(jnp.float32)
  return ep._replace(
      turns=ep.turns._replace(aux={**ep.turns.aux,
                                   "rollin_turns": jnp.repeat(f, t_max)}),
      trajectories=ep.trajectories._replace(
          aux={**ep.trajectories.aux, "rollin_turns": f}))


_ROLLIN = agents.rollin_processor()


def make_objective(c) -> er.Objective:
  o = c.objective
  eps_high = 0.28 if c.method == "spear" and o.eps_high == o.eps_low else (
      o.eps_high)
  return er.ppo_clip(o.eps_low, eps_high, agg=o.agg)


BRANCH_AUX = ("valid", "branch_turn", "branch_source", "fresh",
              "global_samples", "h_root", "h_tool")


def branching_config(c):
  """``rollout.branching`` -> a BranchingConfig, or None (disabled/absent)."""
  b = c.rollout.get("branching")
  if b is None or not b.enabled:
    return None
  kw = {k: v for k, v in b.to_dict().items() if k != "enabled"}
  cfg = branching_lib.BranchingConfig(**kw)
  branching_lib.check_config(cfg, c.rollout.group_size)
  return cfg


def episode_metrics(trajs, max_turns: int) -> dict[str, Any]:
  """Success, return, tool use and per-turn action entropy of a rollout.

  With a branching rollout (``aux['valid']``) the means are over the
  trajectories that exist, plus ``branches`` / ``fresh_samples`` /
  ``global_samples`` per group and, with pre-monitoring, the mean
  ``h_root`` / ``h_tool`` (over groups that saw a tool result).
  """
  h, present = epo_lib.per_turn_entropy(trajs.entropy, trajs.loss_mask,
                                        trajs.segment_ids, max_turns)
  valid = trajs.aux.get("valid")
  w = jnp.ones_like(trajs.returns) if valid is None else valid
  m = {k: ops.masked_mean(v, w) for k, v in trajs.aux.items()
       if k not in BRANCH_AUX}
  if valid is not None:
    groups = jnp.maximum(jnp.max(trajs.group_ids) + 1, 1).astype(jnp.float32)
    m["branches"] = jnp.sum(trajs.aux["branch_turn"] >= 0) / groups
    m["fresh_samples"] = jnp.sum(trajs.aux["fresh"]) / groups
    m["trajectories"] = jnp.sum(valid) / groups
    m["global_samples"] = jnp.mean(trajs.aux["global_samples"])
    for k in ("h_root", "h_tool"):
      if k in trajs.aux:
        v = trajs.aux[k]
        m[k] = ops.masked_mean(jnp.nan_to_num(v), jnp.isfinite(v))
  m.update(
      episode_return=ops.masked_mean(trajs.returns, w),
      num_turns=ops.masked_mean(trajs.num_turns.astype(jnp.float32), w),
      action_entropy=ops.masked_mean(trajs.entropy, trajs.loss_mask),
      turn_entropy=jnp.where(present, h, jnp.nan))
  if "n_tool_calls" in trajs.aux and "success" in trajs.aux:
    used = trajs.aux["n_tool_calls"] > 0
    ok = trajs.aux["success"]
    m["success_with_tool"] = ops.masked_mean(ok, used & (w > 0))
    m["success_without_tool"] = ops.masked_mean(ok, ~used & (w > 0))
    m["tool_use_rate"] = ops.masked_mean(used.astype(jnp.float32), w)
    won = (ok > 0)[:, None] & (trajs.loss_mask > 0)
    m["entropy_successful"] = ops.masked_mean(trajs.entropy, won)
  # Entropy of the first (command) token of each turn.
  first = (trajs.segment_ids >= 0) & (
      trajs.segment_ids != jnp.pad(trajs.segment_ids, ((0, 0), (1, 0)),
                                   constant_values=-1)[:, :-1])
  m["command_entropy"] = ops.masked_mean(trajs.entropy, first)
  return m


_ROLLOUTS: dict = {}
_FNS: dict = {}


def _model(c, vocab_size: int):
  mc = c.model
  return DecoderConfig(vocab_size=vocab_size, hidden_size=mc.hidden_size,
                       num_layers=mc.num_layers, num_heads=mc.num_heads,
                       num_kv_heads=mc.num_kv_heads,
                       intermediate_size=mc.intermediate_size)


def build(c) -> Experiment:
  """An :class:`Experiment` for config ``c`` (see the module docstring)."""
  if c.env.kind == "token_game":
    env = game_lib.token_game(**c.env.token_game.to_dict())
    spec, envs, tok = env.spec, None, None
  elif c.env.kind == "calculator":
    cc = c.env.calculator.to_dict()
    envs, spec, tok = calc_lib.calculator_task(
        cc.pop("name"), num_envs=c.rollout.num_groups * c.rollout.group_size,
        **cc)
    env = None
  else:
    raise ValueError(f"unknown env kind {c.env.kind!r}")
  mcfg = _model(c, spec.vocab_size)
  seeds = [c.seed + i for i in range(c.num_seeds)]
  if mcfg not in _FNS:  # one set of model functions per shape
    _FNS[mcfg] = as_functions(Decoder(mcfg, rngs=nnx.Rngs(0)))[0]
  fns = _FNS[mcfg]
  transform = make_transform(c, spec.max_turns)
  objective = make_objective(c)
  oc = c.optimizer
  optimizer = optax.adam(oc.learning_rate, b1=oc.b1, b2=oc.b2)
  temp = c.rollout.temperature
  sampling = (sampling_lib.SamplingMethod() if temp == 1.0
              else sampling_lib.temperature(temp))
  step_fn = train_lib.make_agent_train_step(
      fns, objective, transform, optimizer, epochs=c.train.epochs,
      minibatches=c.train.minibatches, max_grad_norm=oc.max_grad_norm,
      temperature=temp)
  g, n = c.rollout.num_groups, c.rollout.group_size
  branch_cfg = branching_config(c)
  layout = c.rollout.layout
  if layout not in ("l1", "l2"):
    raise ValueError(f"rollout.layout must be 'l1' or 'l2', got {layout!r}")

  rcfg = replay_config(c)
  if rcfg is not None:
    if layout != "l2":
      raise ValueError("SPEAR replay needs rollout.layout='l2'")
    if (g * n + rcfg.buffer_size) % c.train.minibatches:
      raise ValueError(f"{g * n} rollout rows + {rcfg.buffer_size} replay "
                       f"rows do not split into {c.train.minibatches} "
                       "minibatches")
    skw = spear_kwargs(c)

  def init():
    states = []
    for s in seeds:
      _, params = as_functions(Decoder(mcfg, rngs=nnx.Rngs(s)))
      states.append(init_train_state(params, optimizer, transform, rng=s))
    states = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
    if rcfg is None:
      return states
    row = jax.tree.map(lambda x: jnp.zeros(x.shape[1:], x.dtype),
                       traj_shapes(jax.tree.map(lambda x: x[0],
                                                states.params)))
    rs = spear_lib.init_replay_state(rcfg, row)
    return states, jax.tree.map(
        lambda x: jnp.broadcast_to(x, (len(seeds),) + x.shape), rs)

  def learn(state, ep):
    if rcfg is not None:
      return learn_replay(state, ep)
    data = ep.trajectories if layout == "l2" else ep.turns
    state, m = step_fn(state, train_lib.train_inputs(data))
    m.update(episode_metrics(ep.trajectories, spec.max_turns))
    return state, m

  def learn_replay(carry, ep):
    state, rs = carry
    trajs = ep.trajectories
    rs, rep = spear_lib.replay_pass(
        rs, train_types.step_key(state, "replay"), rcfg)
    w = spear_lib.replay_weight(state.step, rcfg.total_steps, rcfg.coef)
    inp = train_lib.mix_replay(train_lib.train_inputs(trajs),
                               train_lib.train_inputs(rep.rows),
                               rep.advantages, rep.ok, w)
    new_state, m = step_fn(state, inp)
    # Admission with the advantages the update used (bonus included).
    rewards = trajs.returns + spear_lib.toolcall_bonus(
        trajs.aux["n_tool_calls"], state.step, skw["total_steps"],
        mode=skw["mode"])
    valid = trajs.aux.get("valid")
    adv = train_lib.episode_grpo(rewards, trajs.group_ids, valid=valid)
    rs = spear_lib.admit(rs, trajs, rewards, adv, trajs.group_ids,
                         state.step, rcfg, valid)
    m.update(episode_metrics(trajs, spec.max_turns))
    m.update(replayed_rows=jnp.sum(rep.ok.astype(jnp.float32)),
             replay_weight=w,
             replay_buffer_rows=jnp.sum(rs.buffer.valid.astype(
                 jnp.float32)))
    return (new_state, rs), m

  train_of = (lambda st: st) if rcfg is None else (lambda st: st[0])

  if env is not None:
    reset = dr_po_config(c)
    key = (mcfg, tuple(sorted(c.env.token_game.to_dict().items())), g, n,
           temp, branch_cfg, reset)
    if key not in _ROLLOUTS:
      if reset is None:
        _ROLLOUTS[key] = jax.jit(jax.vmap(
            lambda p, k: env_lib.rollout(fns, p, env, k, num_groups=g,
                                         group_size=n, sampling=sampling,
                                         branching=branch_cfg)))
      else:
        _ROLLOUTS[key] = jax.jit(jax.vmap(functools.partial(
            dataset_reset_rollout, fns, env, g, n, sampling, branch_cfg,
            reset)))
    roll = _ROLLOUTS[key]
    learn_v = jax.jit(jax.vmap(learn))

    def traj_shapes(params):
      return jax.eval_shape(lambda p: env_lib.rollout(
          fns, p, env, jax.random.PRNGKey(0), num_groups=g, group_size=n,
          sampling=sampling, branching=branch_cfg), params).trajectories

    def iterate(states):
      tr = train_of(states)
      keys = jax.vmap(lambda s: train_types.step_key(s, "rollout"))(tr)
      return learn_v(states, roll(tr.params, keys))
  else:
    if branch_cfg is not None:
      raise ValueError("rollout.branching is only available for the "
                       "on-device (token_game) rollout")
    compiled = env_lib.make_python_rollout(fns, spec, group_size=n,
                                           sampling=sampling)
    if rcfg is not None:
      raise ValueError("SPEAR replay is only wired into the on-device "
                       "(token_game) rollout")
    if c.method == "dr_po":
      raise ValueError("DR-PO dataset resets are only wired into the "
                       "on-device (token_game) rollout")
    learn_j = jax.jit(learn)

    def iterate(states):
      one = jax.tree.map(lambda x: x[0], states)
      tr = train_of(one)
      ep = env_lib.python_rollout(
          fns, tr.params, envs, spec, train_types.step_key(tr, "rollout"),
          group_size=n, compiled=compiled)
      one, m = learn_j(one, ep)
      return (jax.tree.map(lambda x: x[None], one),
              jax.tree.map(lambda x: x[None], m))

  del tok
  return Experiment(c, spec, fns, init, iterate, len(seeds))


def to_python(metrics: dict[str, Any]) -> dict[str, Any]:
  """Device metrics [seeds, ...] -> JSON-able lists per seed."""
  out = {}
  for k, v in metrics.items():
    a = np.asarray(v, np.float64)
    out[k] = a.tolist()
  return out
