"""From an ``agent`` config to a multi-turn agent experiment.

With :mod:`entropy_rl.builders` (RLVR) and :mod:`entropy_rl.classic_builders`
this is one of the three library modules that read a ConfigDict; everything
under ``jit`` sees the plain objects built here once.

:func:`build` returns an :class:`AgentExperiment`: the environment, the
model, the transform chain, the jitted rollout (cached across configs that
share a model shape, an environment and rollout settings, so a comparison
compiles it once) and ``iterate(states) -> (states, metrics)``, one RL
iteration of ``num_seeds`` vmapped seeds (token game) or of one seed
through the Python adapter (calculator task).

Methods are configured like RLVR ones: ``config.regularizers.order`` names
the chain's members, each a dict with ``kind`` (a constructor of
:mod:`entropy_rl.agents` or :mod:`entropy_rl.regularizers` returning an
``EntropyTransform``) and its keyword arguments; the defaults are the
constructors' own::

    config.regularizers.order = ("advantages", "epo")
    config.regularizers.advantages = dict(kind="episode_advantages")
    config.regularizers.epo = dict(kind="epo", entropy_coef=0.005, ...)

Rollout-side settings, each off unless its ``enabled`` is set:

* ``rollout.branching``: AEPO's entropy-balanced branching rollout
  (:func:`entropy_rl.agents.branching_rollout`; unused budget slots are left
  out of the advantages and the metrics; with ``pre_monitor`` the
  global-sample count m per task comes from AEPO's entropy pre-monitoring).
  Token game (on-device rollout) only.
* ``rollout.dataset_reset``: DR-PO's dataset resets
  (:func:`entropy_rl.agents.turn_rollin`): each episode is, with probability
  ``reset_prob``, reset to the state after L ~ U{1, …, ℓ−1} teacher-forced
  turns of the reference trajectory (ℓ = ``demo_turns`` turns of
  ``demo_action``; the environment answers them as usual), then the policy
  plays on; ``aux['rollin_turns']`` marks the forced turns (a
  ``dr_po_turns`` member takes them out of the PG mask). Token game only.
* ``replay`` (layout l2, token game only): SPEAR's self-imitation replay.
  Each iteration first draws a replay pass from the buffer
  (:func:`entropy_rl.agents.replay_pass`: triggered above
  ``trigger``·``buffer_size`` rows, advantages recalibrated against the
  median stored group mean, kept if ≥ 0, power-of-two subsample), appends
  those ``buffer_size`` rows to the on-policy batch
  (:func:`entropy_rl.agents.mix_replay`), trains on ``L_on + w(t)·L_replay``
  (:func:`entropy_rl.agents.replay_loss` wraps the chain; w(t) is the
  replay-loss ramp; a ``spear_clip_cov`` member gives replayed rows
  SPEAR's replay Clip-Cov settings), then
  admits the rollout's positive-advantage trajectories and the step's group
  statistics, with the rewards the update used (a ``toolcall_reward``
  member's bonus included). A ``replay`` member
  (:func:`entropy_rl.agents.replay_advantages`) is inserted after the last
  advantage estimator. Iteration states are then
  ``(TrainState, ReplayState)``.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from entropy_rl import agents
from entropy_rl import builders
from entropy_rl import regularizers
from entropy_rl import sampling as sampling_lib
from entropy_rl.agents import _branching as branching_lib
from entropy_rl.agents import _epo as epo_lib
from entropy_rl.agents import _spear as spear_lib
from entropy_rl.core import combine
from entropy_rl.core import ops
from entropy_rl.core import types as core_types
from entropy_rl.models import as_functions
from entropy_rl.models import Decoder
from entropy_rl.models import DecoderConfig
from entropy_rl.training import init_train_state
from entropy_rl.training import types as train_types

ENV_KINDS = ("token_game", "calculator")
LAYOUTS = ("l1", "l2")

# The smallest valid value of each size / count field of an agent config
# (``builders.check_sizes``, before anything is built; rollout.branching's
# are checked when it is enabled: its initial_rollouts follows group_size).
SIZE_MINIMUMS: dict[str, int] = {
    "num_seeds": 1, "log_every": 1,
    "train.num_steps": 1, "train.epochs": 1, "train.minibatches": 1,
    "rollout.num_groups": 1, "rollout.group_size": 1,
    "rollout.dataset_reset.demo_turns": 1,
    "model.hidden_size": 1, "model.num_layers": 1, "model.num_heads": 1,
    "model.num_kv_heads": 1, "model.intermediate_size": 1,
    "env.token_game.num_slots": 1, "env.token_game.num_values": 1,
    "env.token_game.max_turns": 1, "env.token_game.command_mod": 1,
    "env.calculator.max_turns": 1, "env.calculator.action_len": 1,
    "env.calculator.obs_len": 1, "env.calculator.init_obs_len": 1,
    "env.calculator.size": 1,
    "replay.buffer_size": 1, "replay.baseline_size": 1,
    "replay.tolerate_steps": 0, "replay.total_steps": 1,
}


class AgentExperiment(NamedTuple):
  """A built agent experiment.

  Attributes:
    config: the config it was built from (a record; nothing reads it).
    spec: the environment's :class:`entropy_rl.agents.EnvSpec`.
    fns: the model functions.
    init: ``() -> states``, stacked TrainStates [num_seeds] (with SPEAR's
      replay: ``(TrainStates, ReplayStates)``).
    iterate: ``states -> (states, metrics)``, one RL iteration; metrics
      have a leading seed axis.
    num_seeds: the number of vmapped seeds.
  """
  config: Any
  spec: agents.EnvSpec
  fns: Any
  init: Callable[[], Any]
  iterate: Callable[[Any], tuple[Any, dict[str, Any]]]
  num_seeds: int


# ------------------------------------------------------------ transforms


def transform_registry() -> dict[str, Callable[..., Any]]:
  """``kind -> constructor``: ``regularizers.TRANSFORMS`` then
  ``agents.TRANSFORMS`` (an agent method shadows a same-named regularizer)."""
  return {**regularizers.TRANSFORMS, **agents.TRANSFORMS}


def _unknown(what: str, name: Any, valid) -> ValueError:
  valid = sorted(valid)
  close = difflib.get_close_matches(str(name), valid, 3)
  hint = f"; did you mean {close}?" if close else ""
  return ValueError(f"unknown {what} {name!r}{hint} Valid: {', '.join(valid)}")


def _member(name: str, spec: Mapping[str, Any],
            registry: Mapping[str, Callable[..., Any]],
            objective_kw: Mapping[str, Any] | None = None
            ) -> core_types.EntropyTransform:
  """One chain member; ``objective_kw`` (the objective's ``agg``) fills the
  arguments of that name the constructor takes and the spec leaves out
  (DR-PO's PG mask must aggregate like the objective)."""
  kind = spec.get("kind")
  if kind not in registry:
    raise _unknown(f"agent method kind for {name!r}", kind, registry)
  fn = registry[kind]
  kw = {k: tuple(v) if isinstance(v, list) else v
        for k, v in spec.items() if k != "kind"}
  params = inspect.signature(fn).parameters
  bad = sorted(set(kw) - set(params))
  if bad:
    raise ValueError(f"agent method {kind!r} ({name!r}) got unknown "
                     f"arguments {bad}; its arguments are "
                     f"{', '.join(params)}")
  for k, v in (objective_kw or {}).items():
    if k in params and k not in kw:
      kw[k] = v
  return fn(**kw)


def build_transform(cfg: Any, *, replay: bool = False,
                    agg: str = "token-mean", smtsn: str = "verl"
                    ) -> core_types.EntropyTransform:
  """``config.regularizers`` -> ``named_chain`` in ``order``.

  Args:
    cfg: a ConfigDict with ``order`` (tuple of names) and one sub-dict per
      name with ``kind`` and keyword arguments.
    replay: insert ``("replay", agents.replay_advantages())`` after the last
      member whose kind is an advantage estimator (``*advantages``), and
      wrap the chain in :func:`entropy_rl.agents.replay_loss` (the loss
      ``L_on + w·L_replay``).
    agg, smtsn: the objective's aggregation (read with ``replay``, and
      passed as ``agg`` to members whose constructor takes one and whose
      entry does not set it: ``dr_po``, ``dr_po_turns``).

  Returns:
    The named chain.
  """
  spec = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
  order = tuple(spec.get("order", ()))
  registry = transform_registry()
  members = []
  for name in order:
    if name not in spec:
      raise _unknown("regularizer entry (config.regularizers.order names "
                     "an entry that is not defined)", name,
                     [k for k in spec if k != "order"])
    members.append((name, _member(name, spec[name], registry,
                                  {"agg": agg})))
  if replay:
    adv = [i for i, n in enumerate(order)
           if str(spec[n].get("kind", "")).endswith("advantages")]
    at = adv[-1] + 1 if adv else 0
    members.insert(at, ("replay", agents.replay_advantages()))
    return agents.replay_loss(combine.named_chain(*members), agg=agg,
                              smtsn=smtsn)
  return combine.named_chain(*members)


def _toolcall_kwargs(config: Any) -> dict[str, Any] | None:
  """``total_steps`` and ``mode`` of the chain's ``toolcall_reward`` member
  (its constructor's defaults filled in), or None without one."""
  r = config.regularizers
  specs = [r[n].to_dict() for n in r.order if r[n].kind == "toolcall_reward"]
  if not specs:
    return None
  bound = inspect.signature(agents.toolcall_reward).bind(
      **{k: v for k, v in specs[0].items() if k != "kind"})
  bound.apply_defaults()
  return dict(bound.arguments)


# --------------------------------------------------------- rollout settings


def replay_config(c: Any) -> agents.ReplayConfig | None:
  """``replay`` -> a ReplayConfig, or None (absent or disabled)."""
  r = c.get("replay")
  if r is None or not r.enabled:
    return None
  kw = {k: v for k, v in r.to_dict().items() if k != "enabled"}
  return agents.ReplayConfig(**kw)


class DatasetReset(NamedTuple):
  """DR-PO's static reset settings (hashable: part of the rollout cache)."""
  reset_prob: float
  demo: tuple[tuple[int, ...], ...]  # [ℓ, L] reference action tokens


def dataset_reset_config(c: Any) -> DatasetReset | None:
  """``rollout.dataset_reset`` -> DatasetReset, or None (absent/disabled)."""
  d = c.rollout.get("dataset_reset")
  if d is None or not d.enabled:
    return None
  demo = tuple(tuple(int(x) for x in d.demo_action)
               for _ in range(d.demo_turns))
  return DatasetReset(float(d.reset_prob), demo)


_ROLLIN = agents.rollin_processor()


def dataset_reset_rollout(fns, env, g, n, sampling, branch_cfg,
                          reset: DatasetReset, params, rng):
  """One rollout whose episodes start from dataset states (DR-PO):
  ``aux['rollin_turns']`` holds each row's teacher-forced turns."""
  k_roll, k_reset = jax.random.split(rng)
  demo = jnp.asarray(reset.demo, jnp.int32)  # [ℓ, L]
  rollin = agents.rollin_lengths(k_reset, jnp.full((g * n,), demo.shape[0]),
                                 reset.reset_prob)
  ep = agents.rollout(
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


def branching_config(c: Any) -> agents.BranchingConfig | None:
  """``rollout.branching`` -> a BranchingConfig, or None (absent/disabled)."""
  b = c.rollout.get("branching")
  if b is None or not b.enabled:
    return None
  kw = {k: v for k, v in b.to_dict().items() if k != "enabled"}
  cfg = agents.BranchingConfig(**kw)
  branching_lib.check_config(cfg, c.rollout.group_size)
  return cfg


# ---------------------------------------------------------------- metrics


BRANCH_AUX = ("valid", "branch_turn", "branch_source", "fresh",
              "global_samples", "h_root", "h_tool")


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


def to_python(metrics: dict[str, Any]) -> dict[str, Any]:
  """Device metrics [seeds, ...] -> JSON-able lists per seed."""
  return {k: np.asarray(v, np.float64).tolist() for k, v in metrics.items()}


# ------------------------------------------------------------- experiment


_ROLLOUTS: dict = {}
_FNS: dict = {}


def build_model_config(c: Any, vocab_size: int) -> DecoderConfig:
  """``config.model`` -> the decoder's config (vocabulary from the env)."""
  mc = c.model
  return DecoderConfig(vocab_size=vocab_size, hidden_size=mc.hidden_size,
                       num_layers=mc.num_layers, num_heads=mc.num_heads,
                       num_kv_heads=mc.num_kv_heads,
                       intermediate_size=mc.intermediate_size)


def build_env(c: Any):
  """``config.env`` -> ``(env, python_envs, spec)``: ``env`` a JAX
  environment (token game) or None, ``python_envs`` the Python adapter's
  environments (calculator) or None."""
  kind = c.env.kind
  if kind == "token_game":
    env = agents.token_game(**c.env.token_game.to_dict())
    return env, None, env.spec
  if kind == "calculator":
    cc = c.env.calculator.to_dict()
    envs, spec, _ = agents.calculator_task(
        cc.pop("name"), num_envs=c.rollout.num_groups * c.rollout.group_size,
        **cc)
    return None, envs, spec
  raise _unknown("env kind", kind, ENV_KINDS)


def build(c: Any) -> AgentExperiment:
  """An :class:`AgentExperiment` for config ``c`` (see the module doc)."""
  builders.check_sizes(c, SIZE_MINIMUMS)
  env, envs, spec = build_env(c)
  mcfg = build_model_config(c, spec.vocab_size)
  seeds = [c.seed + i for i in range(c.num_seeds)]
  if mcfg not in _FNS:  # one set of model functions per shape
    _FNS[mcfg] = as_functions(Decoder(mcfg, rngs=nnx.Rngs(0)))[0]
  fns = _FNS[mcfg]
  rcfg = replay_config(c)
  objective = builders.build_objective(c.objective)
  transform = build_transform(c.regularizers, replay=rcfg is not None,
                              agg=objective.agg, smtsn=objective.smtsn)
  optimizer = builders.build_optimizer(c.optimizer, c.train.num_steps)
  temp = c.rollout.temperature
  sampling = (sampling_lib.SamplingMethod() if temp == 1.0
              else sampling_lib.temperature(temp))
  step_fn = agents.make_agent_train_step(
      fns, objective, transform, optimizer, epochs=c.train.epochs,
      minibatches=c.train.minibatches,
      max_grad_norm=c.optimizer.max_grad_norm, temperature=temp)
  g, n = c.rollout.num_groups, c.rollout.group_size
  branch_cfg = branching_config(c)
  reset = dataset_reset_config(c)
  layout = c.rollout.layout
  if layout not in LAYOUTS:
    raise ValueError(f"rollout.layout must be 'l1' or 'l2', got {layout!r}")

  if rcfg is not None:
    if layout != "l2":
      raise ValueError("SPEAR replay needs rollout.layout='l2'")
    if (g * n + rcfg.buffer_size) % c.train.minibatches:
      raise ValueError(f"{g * n} rollout rows + {rcfg.buffer_size} replay "
                       f"rows do not split into {c.train.minibatches} "
                       "minibatches")
  # The tool-call bonus the update adds to the returns (replay admission).
  tool_kw = _toolcall_kwargs(c)

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
    rs = agents.init_replay_state(rcfg, row)
    return states, jax.tree.map(
        lambda x: jnp.broadcast_to(x, (len(seeds),) + x.shape), rs)

  def learn(state, ep):
    if rcfg is not None:
      return learn_replay(state, ep)
    data = ep.trajectories if layout == "l2" else ep.turns
    state, m = step_fn(state, agents.train_inputs(data))
    m.update(episode_metrics(ep.trajectories, spec.max_turns))
    return state, m

  def learn_replay(carry, ep):
    state, rs = carry
    trajs = ep.trajectories
    rs, rep = agents.replay_pass(
        rs, train_types.step_key(state, "replay"), rcfg)
    w = agents.replay_weight(state.step, rcfg.total_steps, rcfg.coef)
    inp = agents.mix_replay(agents.train_inputs(trajs),
                            agents.train_inputs(rep.rows),
                            rep.advantages, rep.ok, w)
    new_state, m = step_fn(state, inp)
    # Admission with the advantages the update used (bonus included).
    rewards = trajs.returns
    if tool_kw is not None:
      rewards = rewards + agents.toolcall_bonus(
          trajs.aux["n_tool_calls"], state.step, **tool_kw)
    valid = trajs.aux.get("valid")
    adv = agents.episode_grpo(rewards, trajs.group_ids, valid=valid)
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
    key = (mcfg, tuple(sorted(c.env.token_game.to_dict().items())), g, n,
           temp, branch_cfg, reset)
    if key not in _ROLLOUTS:
      if reset is None:
        _ROLLOUTS[key] = jax.jit(jax.vmap(
            lambda p, k: agents.rollout(fns, p, env, k, num_groups=g,
                                        group_size=n, sampling=sampling,
                                        branching=branch_cfg)))
      else:
        _ROLLOUTS[key] = jax.jit(jax.vmap(functools.partial(
            dataset_reset_rollout, fns, env, g, n, sampling, branch_cfg,
            reset)))
    roll = _ROLLOUTS[key]
    learn_v = jax.jit(jax.vmap(learn))

    def traj_shapes(params):
      return jax.eval_shape(lambda p: agents.rollout(
          fns, p, env, jax.random.PRNGKey(0), num_groups=g, group_size=n,
          sampling=sampling, branching=branch_cfg), params).trajectories

    def iterate(states):
      tr = train_of(states)
      keys = jax.vmap(lambda s: train_types.step_key(s, "rollout"))(tr)
      return learn_v(states, roll(tr.params, keys))
  else:
    for what, on in (("rollout.branching", branch_cfg),
                     ("SPEAR replay", rcfg),
                     ("DR-PO dataset resets (rollout.dataset_reset)", reset)):
      if on is not None:
        raise ValueError(f"{what} is only wired into the on-device "
                         "(token_game) rollout")
    compiled = agents.make_python_rollout(fns, spec, group_size=n,
                                          sampling=sampling)
    learn_j = jax.jit(learn)

    def iterate(states):
      one = jax.tree.map(lambda x: x[0], states)
      tr = train_of(one)
      ep = agents.python_rollout(
          fns, tr.params, envs, spec, train_types.step_key(tr, "rollout"),
          group_size=n, compiled=compiled)
      one, m = learn_j(one, ep)
      return (jax.tree.map(lambda x: x[None], one),
              jax.tree.map(lambda x: x[None], m))

  return AgentExperiment(c, spec, fns, init, iterate, len(seeds))


__all__ = (
    "AgentExperiment", "branching_config", "build", "build_env",
    "build_model_config", "build_transform", "dataset_reset_config",
    "dataset_reset_rollout", "DatasetReset", "episode_metrics",
    "replay_config", "SIZE_MINIMUMS", "to_python", "transform_registry",
)
