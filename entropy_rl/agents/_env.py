"""Text-agent environments and multi-turn rollouts, on device or via Python.

An agent environment takes the policy's action tokens and returns
observation tokens, a reward and a done flag per turn. Two kinds:

* :class:`AgentEnv`: pure JAX functions ``reset(rng) -> (state, obs [O0])``
  and ``step(state, action [L], rng) -> (state, obs [O], reward, done)``
  with static sizes (:class:`EnvSpec`). :func:`rollout` runs whole episodes
  on device: a ``lax.scan`` over turns whose body calls the sampler
  (prefill of the context, then L decode steps), ``vmap(env.step)`` and
  appends the action and the observation to a fixed-size left-padded
  context buffer. Finished episodes keep sampling (fixed shapes) but their
  turns are masked and their state frozen (PureJaxRL style).
* :class:`PythonEnv` objects (tools, simulators, reasoning-gym checkers):
  :func:`python_rollout` calls a jitted per-turn sampler, steps the Python
  environments on the host and appends with the same jitted function.

Both draw the same keys: turn t uses ``split(fold_in(k_turns, t))`` into a
sampler key and an environment key (split into one key per row), and the
reset key of row ``g·G + j`` is key g of ``split(k_reset, num_groups)``
(every member of a GRPO group sees the same task). So a pure-JAX
environment wrapped in :class:`JaxEnvAsPython` gives the on-device rollout
token for token (tested).

Observations use ``spec.pad_id`` for "no token" (they are masked), so a
Python environment may return fewer than O tokens; longer ones are cut to
O. The context buffer holds ``C = O0 + T·(L + O)`` tokens, the longest
episode, so nothing is ever dropped and both layouts
(``entropy_rl.agents.layouts``) are exact.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, NamedTuple, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from entropy_rl.agents import _layouts as layouts
from entropy_rl.core import types
from entropy_rl.sampling import methods as methods_lib
from entropy_rl.sampling import sampler as sampler_lib

Array = types.Array
PRNGKey = types.PRNGKey


class EnvSpec(NamedTuple):
  """Static sizes of a text-agent environment.

  Attributes:
    action_len: L, tokens the policy emits per turn (at most; an end token
      stops a turn early).
    obs_len: O, observation tokens per turn (at most).
    init_obs_len: O0, tokens of the first observation (the task).
    max_turns: T; the episode is cut after T turns.
    vocab_size: V the observations live in.
    pad_id: the padding token ("no token" in observations).
    end_ids: tokens that end an action early (included in it).
  """

  action_len: int
  obs_len: int
  init_obs_len: int
  max_turns: int
  vocab_size: int
  pad_id: int = 0
  end_ids: tuple[int, ...] = ()

  @property
  def context_len(self) -> int:
    """C = O0 + T·(L + O): the whole episode."""
    return self.init_obs_len + self.max_turns * (self.action_len +
                                                 self.obs_len)


class AgentEnv(NamedTuple):
  """A pure-JAX text environment (one episode; the rollout vmaps it).

  Attributes:
    reset: ``reset(rng) -> (state, obs [O0] int32)``.
    step: ``step(state, action [L] int32, rng) -> (state, obs [O] int32,
      reward () f32, done () bool)``. Called only while the episode is on.
    spec: the :class:`EnvSpec`.
    metrics: ``metrics(state) -> {name: () array}`` read at the end of the
      episode (trajectory-level ``aux``, e.g. ``success``,
      ``n_tool_calls``); the names are static.
  """

  reset: Callable[[PRNGKey], tuple[Any, Array]]
  step: Callable[[Any, Array, PRNGKey], tuple[Any, Array, Array, Array]]
  spec: EnvSpec
  metrics: Callable[[Any], Mapping[str, Array]] = lambda state: {}


class PythonEnv(Protocol):
  """A host-side environment for :func:`python_rollout` (one episode).

  ``reset(key)`` gets a JAX PRNG key (use ``np.asarray(key)`` as a numpy
  seed) and returns the first observation's tokens; ``step(action, key)``
  gets the action tokens of the turn (up to and including an end token)
  and returns ``(obs tokens, reward, done)``; ``metrics()`` gives the
  trajectory-level values (same names for every row). None of them may
  raise on a malformed action: return reward 0.
  """

  def reset(self, key: Any) -> Sequence[int]:
    ...

  def step(self, action: Sequence[int], key: Any
           ) -> tuple[Sequence[int], float, bool]:
    ...

  def metrics(self) -> Mapping[str, float]:
    ...


# ----------------------------------------------------------------------------
# The context buffer.


class Buffer(NamedTuple):
  """Left-padded context of every row, with per-slot bookkeeping."""

  tokens: Array  # [R, C] int32
  mask: Array  # [R, C] bool
  segment_ids: Array  # [R, C] int32 turn of action tokens, −1 elsewhere
  logp: Array  # [R, C] f32
  entropy: Array  # [R, C] f32


def init_buffer(obs: Array, context_len: int, pad_id: int = 0) -> Buffer:
  """The buffer holding the first observations [R, O0] (pad = no token)."""
  r, o0 = obs.shape
  if o0 > context_len:
    raise ValueError(f"obs has {o0} tokens, more than context_len="
                     f"{context_len}")
  m = obs != pad_id
  tok = jnp.concatenate([jnp.full((r, context_len - o0), pad_id, jnp.int32),
                         obs.astype(jnp.int32)], axis=1)
  m = jnp.concatenate([jnp.zeros((r, context_len - o0), bool), m], axis=1)
  m, tok = layouts.pack_right(m, tok, width=context_len)
  z = jnp.zeros((r, context_len), jnp.float32)
  return Buffer(jnp.where(m, tok, pad_id), m,
                jnp.full((r, context_len), -1, jnp.int32), z, z)


def append_turn(buf: Buffer, turn: Array, action: Array, action_mask: Array,
                logp: Array, entropy: Array, obs: Array, obs_mask: Array,
                pad_id: int = 0) -> Buffer:
  """Appends the masked action [R, L] and observation [R, O] tokens.

  ``turn`` (the segment id of the action tokens) is a scalar or one per
  row [R].
  """
  r, c = buf.tokens.shape
  l, o = action.shape[1], obs.shape[1]
  cat = lambda *xs: jnp.concatenate(xs, axis=1)
  m = cat(buf.mask, action_mask, obs_mask)
  tok = cat(buf.tokens, action.astype(jnp.int32), obs.astype(jnp.int32))
  turn = jnp.asarray(turn, jnp.int32)
  turn = turn[:, None] if turn.ndim == 1 else turn
  seg = cat(buf.segment_ids, jnp.broadcast_to(turn, (r, l)),
            jnp.full((r, o), -1, jnp.int32))
  zo = jnp.zeros((r, o), jnp.float32)
  lp = cat(buf.logp, logp, zo)
  ent = cat(buf.entropy, entropy, zo)
  m, tok, seg, lp, ent = layouts.pack_right(m, tok, seg, lp, ent, width=c)
  return Buffer(jnp.where(m, tok, pad_id), m, jnp.where(m, seg, -1),
                jnp.where(m, lp, 0.0), jnp.where(m, ent, 0.0))


# ----------------------------------------------------------------------------
# One policy turn.


class TurnSample(NamedTuple):
  tokens: Array  # [R, L] int32
  mask: Array  # [R, L] bool (up to and including an end token)
  logp: Array  # [R, L] f32
  entropy: Array  # [R, L] f32


def sample_turn(fns: Any, params: Any, context: Array, context_mask: Array,
                rng: PRNGKey, *, action_len: int,
                sampling: methods_lib.SamplingMethod = (
                    methods_lib.SamplingMethod()),
                processors: Sequence[types.LogitsProcessor] = (),
                processor_params: Sequence[Any] | None = None,
                sampling_params: Sequence[Any] | None = None,
                end_ids: Sequence[int] = (), pad_id: int = 0) -> TurnSample:
  """One action of every row: :func:`entropy_rl.sampling.sample_traced`.

  Usable inside ``jit`` / ``scan`` (no host-side validation): prefill of
  the left-padded context [R, C] (every row needs ≥ 1 real token), then
  ``action_len − 1`` KV-cache decode steps. logp/entropy are those of the
  processed distribution the token was drawn from (the behaviour policy).
  """
  out = sampler_lib.sample_traced(
      fns, params, context, context_mask, rng, max_new_tokens=int(action_len),
      sampling=sampling, processors=processors,
      processor_params=processor_params, sampling_params=sampling_params,
      end_ids=end_ids, num_samples=1, pad_id=pad_id, early_stop=False)
  return TurnSample(out.tokens, out.mask, out.logp, out.entropy)


# ----------------------------------------------------------------------------
# Multi-turn decoding over one KV cache (the sampler's continue-from-cache
# functions).

# The policy's KV cache over the whole episode so far. Every turn appends
# L + O slots (masked where a token does not exist), so the cache holds
# ``C = O0 + T·(L + O)`` slots; positions count real tokens only, exactly as
# in the left-padded buffer.
DecodeState = sampler_lib.DecodeState


def feed(fns: Any, params: Any, ds: DecodeState, tokens: Array,
         mask: Array) -> DecodeState:
  """Writes tokens [R, S] (``mask``: real) into the cache; the next logits
  are those after each row's last real token (unchanged if none).
  :func:`entropy_rl.sampling.feed_tokens`."""
  return sampler_lib.feed_tokens(fns, params, ds, tokens, mask)


def init_decode(fns: Any, params: Any, obs: Array, context_len: int,
                pad_id: int = 0, cache_dtype: Any = None) -> DecodeState:
  """A cache of ``context_len`` slots holding the first observations."""
  return sampler_lib.init_decode_state(fns, params, obs, obs != pad_id,
                                       context_len, cache_dtype)


def policy_turn(fns: Any, params: Any, ds: DecodeState, rng: PRNGKey,
                active: Array, *, action_len: int,
                sampling: methods_lib.SamplingMethod = (
                    methods_lib.SamplingMethod()),
                processors: Sequence[types.LogitsProcessor] = (),
                processor_params: Sequence[Any] | None = None,
                sampling_params: Sequence[Any] | None = None,
                end_ids: Sequence[int] = (), pad_id: int = 0
                ) -> tuple[DecodeState, TurnSample]:
  """One action of every row from the cache: L draws, each token fed back.

  :func:`entropy_rl.sampling.continue_traced`: the draws follow
  :func:`entropy_rl.sampling.sample` exactly (the processors then
  ``draw_and_stats``; the same per-row key schedule from ``rng``; ``pos`` =
  the step within the turn), so with equal logits the tokens equal
  :func:`sample_turn`'s. Rows that are not ``active`` sample too (fixed
  shapes) but write nothing into the cache.
  """
  ds, out = sampler_lib.continue_traced(
      fns, params, ds, rng, max_new_tokens=int(action_len),
      sampling=sampling, processors=processors,
      processor_params=processor_params, sampling_params=sampling_params,
      end_ids=end_ids, pad_id=pad_id, write=active)
  return ds, TurnSample(out.tokens, out.mask, out.logp, out.entropy)


# ----------------------------------------------------------------------------
# Keys.


def rollout_keys(rng: PRNGKey) -> tuple[PRNGKey, PRNGKey]:
  """``(k_reset, k_turns)`` of a rollout."""
  k_reset, k_turns = jax.random.split(rng)
  return k_reset, k_turns


def reset_keys(k_reset: PRNGKey, num_groups: int, group_size: int) -> Array:
  """[R] reset keys; the G members of a group share theirs."""
  return jnp.repeat(jax.random.split(k_reset, num_groups), group_size, axis=0)


def turn_keys(k_turns: PRNGKey, t: Array | int, rows: int
              ) -> tuple[PRNGKey, Array]:
  """``(sampler key, [R] environment keys)`` of turn t."""
  k_s, k_e = jax.random.split(jax.random.fold_in(k_turns, t))
  return k_s, jax.random.split(k_e, rows)


# ----------------------------------------------------------------------------
# Turn bookkeeping shared by both rollouts.


class _Record(NamedTuple):
  prompt: Array
  prompt_mask: Array
  action: Array
  action_mask: Array
  logp: Array
  entropy: Array
  obs: Array
  obs_mask: Array
  reward: Array
  done: Array
  turn_mask: Array


def _after_env(buf, active, t, smp: TurnSample, obs, reward, done, *,
               max_turns, pad_id):
  """Masks the turn, records it and appends it: -> (buf, active, record)."""
  amask = smp.mask & active[:, None]
  omask = (obs != pad_id) & active[:, None]
  reward = jnp.where(active, reward.astype(jnp.float32), 0.0)
  done = active & (done.astype(bool) | (t >= max_turns - 1))
  action = jnp.where(amask, smp.tokens, pad_id).astype(jnp.int32)
  logp = jnp.where(amask, smp.logp, 0.0)
  ent = jnp.where(amask, smp.entropy, 0.0)
  obs = jnp.where(omask, obs, pad_id).astype(jnp.int32)
  rec = _Record(buf.tokens, buf.mask, action, amask.astype(jnp.float32), logp,
                ent, obs, omask, reward, done, active)
  buf = append_turn(buf, t, action, amask, logp, ent, obs, omask, pad_id)
  return buf, active & ~done, rec


def _episodes(recs: _Record, buf: Buffer, aux: Mapping[str, Array],
              group_size: int) -> layouts.Episodes:
  """Turn records [T, R, ...] and the final buffer -> both layouts."""
  t_max, r = recs.reward.shape
  flat = lambda x: jnp.swapaxes(x, 0, 1).reshape((r * t_max,) + x.shape[2:])
  returns = recs.reward.sum(0)  # [R]
  group_ids = jnp.arange(r, dtype=jnp.int32) // group_size
  per_row = lambda x: jnp.repeat(x, t_max, axis=0)
  turns = layouts.TurnBatch(
      prompt=flat(recs.prompt), prompt_mask=flat(recs.prompt_mask),
      action=flat(recs.action), action_mask=flat(recs.action_mask),
      logp=flat(recs.logp), entropy=flat(recs.entropy), obs=flat(recs.obs),
      obs_mask=flat(recs.obs_mask), reward=flat(recs.reward),
      done=flat(recs.done), turn_mask=flat(recs.turn_mask),
      traj_ids=per_row(jnp.arange(r, dtype=jnp.int32)),
      turn_ids=jnp.tile(jnp.arange(t_max, dtype=jnp.int32), r),
      group_ids=per_row(group_ids), returns=per_row(returns),
      aux={k: per_row(v) for k, v in aux.items()})
  trajs = layouts.TrajBatch(
      tokens=buf.tokens, token_mask=buf.mask,
      loss_mask=(buf.segment_ids >= 0).astype(jnp.float32),
      segment_ids=buf.segment_ids, logp=buf.logp, entropy=buf.entropy,
      turn_rewards=recs.reward.T,
      num_turns=recs.turn_mask.sum(0).astype(jnp.int32), returns=returns,
      group_ids=group_ids, aux=dict(aux))
  return layouts.Episodes(turns, trajs)


def _check_groups(num_groups: int, group_size: int) -> int:
  if num_groups < 1 or group_size < 1:
    raise ValueError(f"num_groups ({num_groups}) and group_size "
                     f"({group_size}) must be at least 1")
  return num_groups * group_size


DECODES = ("cache", "prefill")


class _Policy(NamedTuple):
  """Static sampling settings of a rollout."""
  fns: Any
  spec: EnvSpec
  sampling: methods_lib.SamplingMethod
  processors: tuple[types.LogitsProcessor, ...]
  decode: str
  cache_dtype: Any

  def start(self, params, obs0):
    buf = init_buffer(obs0, self.spec.context_len, self.spec.pad_id)
    if self.decode == "prefill":
      return buf, None
    return buf, init_decode(self.fns, params, obs0, self.spec.context_len,
                            self.spec.pad_id, self.cache_dtype)

  def act(self, params, buf, ds, k_s, active, pp, sp):
    kw = dict(action_len=self.spec.action_len, sampling=self.sampling,
              processors=self.processors, processor_params=pp,
              sampling_params=sp, end_ids=self.spec.end_ids,
              pad_id=self.spec.pad_id)
    if self.decode == "prefill":
      return ds, sample_turn(self.fns, params, buf.tokens, buf.mask, k_s,
                             **kw)
    return policy_turn(self.fns, params, ds, k_s, active, **kw)

  def observe(self, params, buf, ds, active, t, smp, obs, reward, done):
    buf, new_active, rec = _after_env(
        buf, active, t, smp, obs, reward, done,
        max_turns=self.spec.max_turns, pad_id=self.spec.pad_id)
    if ds is not None:
      ds = feed(self.fns, params, ds, rec.obs, rec.obs_mask)
    return buf, ds, new_active, rec


def _policy(fns, spec, sampling, processors, decode, cache_dtype) -> _Policy:
  if decode not in DECODES:
    raise ValueError(f"decode must be one of {DECODES}, got {decode!r}")
  return _Policy(fns, spec, sampling, tuple(processors), decode, cache_dtype)


# ----------------------------------------------------------------------------
# On-device rollout.


def rollout(fns: Any, params: Any, env: AgentEnv, rng: PRNGKey, *,
            num_groups: int, group_size: int,
            sampling: methods_lib.SamplingMethod = (
                methods_lib.SamplingMethod()),
            processors: Sequence[types.LogitsProcessor] = (),
            processor_params: Sequence[Any] | None = None,
            sampling_params: Sequence[Any] | None = None,
            decode: str = "cache", cache_dtype: Any = None,
            branching: Any = None) -> layouts.Episodes:
  """Whole episodes of a pure-JAX environment on device (jit-able).

  R = ``num_groups · group_size`` episodes; row ``g·G + j`` is member j of
  group g (same reset key). One ``lax.scan`` over the T turns: sample an
  action, ``vmap(env.step)``, mask finished rows, append the action and the
  observation to the context.

  Args:
    fns: model functions (``entropy_rl.models.as_functions``).
    params: model parameters.
    env: the :class:`AgentEnv`.
    rng: PRNG key.
    num_groups: tasks per rollout.
    group_size: episodes per task (GRPO's G).
    sampling, processors, processor_params, sampling_params: as in
      :func:`entropy_rl.sampling.sample`; ``processor_params`` may also be
      a function ``t -> params`` of the (traced) turn, e.g. DR-PO's
      teacher-forced roll-in (:func:`entropy_rl.agents.dr_po.rollin_processor`).
    decode: ``"cache"`` (default): one KV cache over the whole episode,
      each turn decodes L tokens and feeds the observation
      (:func:`policy_turn`); ``"prefill"``: the library sampler on the
      whole context every turn (:func:`sample_turn`; quadratic in turns,
      kept as the reference).
    cache_dtype: KV-cache dtype (default: the model's).
    branching: None (every row an independent episode), or an
      :class:`entropy_rl.agents.branching.BranchingConfig`: AEPO's
      entropy-balanced branching rollout
      (:func:`entropy_rl.agents.branching.branching_rollout`).

  Returns:
    :class:`~entropy_rl.agents.layouts.Episodes` (L1 and L2).
  """
  if branching is not None:
    from entropy_rl.agents import _branching as branching_lib  # pylint: disable=g-import-not-at-top
    return branching_lib.branching_rollout(
        fns, params, env, rng, num_groups=num_groups, group_size=group_size,
        branching=branching, sampling=sampling, processors=processors,
        processor_params=processor_params, sampling_params=sampling_params,
        decode=decode, cache_dtype=cache_dtype)
  spec = env.spec
  r = _check_groups(num_groups, group_size)
  pol = _policy(fns, spec, sampling, processors, decode, cache_dtype)
  k_reset, k_turns = rollout_keys(rng)
  state, obs0 = jax.vmap(env.reset)(reset_keys(k_reset, num_groups,
                                               group_size))
  buf, ds = pol.start(params, obs0)

  pp_fn = processor_params if callable(processor_params) else (
      lambda t: processor_params)

  def body(carry, t):
    buf, ds, state, active = carry
    k_s, k_e = turn_keys(k_turns, t, r)
    ds, smp = pol.act(params, buf, ds, k_s, active, pp_fn(t),
                      sampling_params)
    new_state, obs, reward, done = jax.vmap(env.step)(state, smp.tokens, k_e)
    state = jax.tree.map(
        lambda a, b: jnp.where(active.reshape((r,) + (1,) * (a.ndim - 1)),
                               a, b), new_state, state)
    buf, ds, active, rec = pol.observe(params, buf, ds, active, t, smp, obs,
                                       reward, done)
    return (buf, ds, state, active), rec

  (buf, _, state, _), recs = jax.lax.scan(
      body, (buf, ds, state, jnp.ones((r,), bool)),
      jnp.arange(spec.max_turns, dtype=jnp.int32))
  aux = {k: jnp.asarray(v, jnp.float32)
         for k, v in jax.vmap(env.metrics)(state).items()}
  return _episodes(recs, buf, aux, group_size)


# ----------------------------------------------------------------------------
# Python environments.


def _pad_to(tokens: Sequence[int], n: int, pad_id: int) -> list[int]:
  tokens = [int(x) for x in list(tokens)[:n]]
  return tokens + [pad_id] * (n - len(tokens))


class PythonRollout(NamedTuple):
  """Jitted pieces of :func:`python_rollout` for one model and spec."""

  keys: Callable[..., Any]
  start: Callable[..., Any]
  act: Callable[..., Any]
  observe: Callable[..., Any]
  finish: Callable[..., layouts.Episodes]


def make_python_rollout(fns: Any, spec: EnvSpec, *, group_size: int,
                        sampling: methods_lib.SamplingMethod = (
                            methods_lib.SamplingMethod()),
                        processors: Sequence[types.LogitsProcessor] = (),
                        decode: str = "cache", cache_dtype: Any = None
                        ) -> PythonRollout:
  """Compiles the per-turn pieces once (reuse it across iterations)."""
  pol = _policy(fns, spec, sampling, processors, decode, cache_dtype)

  @jax.jit
  def act(params, buf, ds, k_turns, t, active, pp, sp):
    k_s, k_e = turn_keys(k_turns, t, buf.tokens.shape[0])
    ds, smp = pol.act(params, buf, ds, k_s, active, pp, sp)
    return ds, smp, k_e

  return PythonRollout(
      keys=functools.partial(_keys_jit, group_size=group_size),
      start=jax.jit(pol.start), act=act, observe=jax.jit(pol.observe),
      finish=jax.jit(lambda recs, buf, aux: _episodes(recs, buf, aux,
                                                      group_size)))


@functools.partial(jax.jit, static_argnums=(1,), static_argnames=(
    "group_size",))
def _keys_jit(rng, num_groups, *, group_size):
  k_reset, k_turns = rollout_keys(rng)
  return reset_keys(k_reset, num_groups, group_size), k_turns


def python_rollout(fns: Any, params: Any, envs: Sequence[PythonEnv],
                   spec: EnvSpec, rng: PRNGKey, *, group_size: int,
                   sampling: methods_lib.SamplingMethod = (
                       methods_lib.SamplingMethod()),
                   processors: Sequence[types.LogitsProcessor] = (),
                   processor_params: Any = None,
                   sampling_params: Sequence[Any] | None = None,
                   decode: str = "cache",
                   compiled: PythonRollout | None = None
                   ) -> layouts.Episodes:
  """Episodes of host-side environments between jitted policy turns.

  Args:
    fns, params: the model.
    envs: R = ``num_groups · group_size`` :class:`PythonEnv` objects, one
      per row (row ``g·G + j`` is member j of group g).
    spec: their :class:`EnvSpec` (O0, O, L, T, pad and end ids).
    rng: PRNG key (the same key schedule as :func:`rollout`).
    group_size: G.
    sampling, processors, sampling_params: the sampler's.
    processor_params: one params pytree per processor, or a function
      ``t -> params`` of the turn (same shapes every turn), e.g. to force
      scripted or demonstration actions with
      :func:`entropy_rl.agents.dr_po.rollin_processor`.
    decode: as in :func:`rollout`.
    compiled: :func:`make_python_rollout` output to reuse (else built here).

  Returns:
    :class:`~entropy_rl.agents.layouts.Episodes`. The loop stops early once
    every episode is done; the remaining turns are recorded as masked.
  """
  r = len(envs)
  if r == 0 or r % group_size:
    raise ValueError(f"len(envs)={r} is not a positive multiple of "
                     f"group_size={group_size}")
  num_groups = r // group_size
  cp = compiled or make_python_rollout(fns, spec, group_size=group_size,
                                       sampling=sampling,
                                       processors=processors, decode=decode)
  if processor_params is None:
    processor_params = tuple(p.init() for p in processors)
  pp_fn = processor_params if callable(processor_params) else (
      lambda t: processor_params)
  sp = sampling.init() if sampling_params is None else tuple(sampling_params)
  pad = spec.pad_id
  rkeys, k_turns = cp.keys(rng, num_groups)
  rkeys = np.asarray(rkeys)
  obs0 = np.array([_pad_to(env.reset(rkeys[i]), spec.init_obs_len, pad)
                   for i, env in enumerate(envs)], np.int32)
  buf, ds = cp.start(params, jnp.asarray(obs0))
  active = jnp.ones((r,), bool)
  recs = []
  for t in range(spec.max_turns):
    live = np.asarray(active)
    if not live.any():
      break
    ds, smp, k_e = cp.act(params, buf, ds, k_turns, jnp.int32(t), active,
                          tuple(pp_fn(t)), sp)
    tok, msk, ekeys = (np.asarray(smp.tokens), np.asarray(smp.mask),
                       np.asarray(k_e))
    obs = np.full((r, spec.obs_len), pad, np.int32)
    reward = np.zeros((r,), np.float32)
    done = np.zeros((r,), bool)
    for i, env in enumerate(envs):
      if not live[i]:
        continue
      o, rw, d = env.step([int(x) for x in tok[i][msk[i]]], ekeys[i])
      obs[i] = _pad_to(o, spec.obs_len, pad)
      reward[i], done[i] = float(rw), bool(d)
    buf, ds, active, rec = cp.observe(params, buf, ds, active, jnp.int32(t),
                                      smp, jnp.asarray(obs),
                                      jnp.asarray(reward), jnp.asarray(done))
    recs.append(rec)
  # Turns after every episode ended: the frozen context, nothing else.
  while len(recs) < spec.max_turns:
    z = jnp.zeros((r, spec.action_len), jnp.float32)
    recs.append(_Record(
        buf.tokens, buf.mask, jnp.full((r, spec.action_len), pad, jnp.int32),
        z, z, z, jnp.full((r, spec.obs_len), pad, jnp.int32),
        jnp.zeros((r, spec.obs_len), bool), jnp.zeros((r,), jnp.float32),
        jnp.zeros((r,), bool), jnp.zeros((r,), bool)))
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *recs)
  names = sorted(envs[0].metrics())
  aux = {k: jnp.asarray([float(env.metrics()[k]) for env in envs],
                        jnp.float32) for k in names}
  return cp.finish(stacked, buf, aux)


class JaxEnvAsPython:
  """A pure-JAX :class:`AgentEnv` behind the :class:`PythonEnv` protocol
  (one episode; jitted reset/step). For testing the Python adapter against
  the on-device rollout, and for mixing environment kinds."""

  _cache: dict = {}

  def __init__(self, env: AgentEnv):
    self.env = env
    key = id(env)
    if key not in JaxEnvAsPython._cache:
      JaxEnvAsPython._cache[key] = (jax.jit(env.reset), jax.jit(env.step),
                                    jax.jit(env.metrics), env)
    self._reset, self._step, self._metrics, _ = JaxEnvAsPython._cache[key]
    self.state = None

  def reset(self, key):
    self.state, obs = self._reset(jnp.asarray(key))
    return [int(x) for x in np.asarray(obs) if x != self.env.spec.pad_id]

  def step(self, action, key):
    spec = self.env.spec
    a = jnp.asarray(_pad_to(action, spec.action_len, spec.pad_id), jnp.int32)
    self.state, obs, reward, done = self._step(self.state, a, jnp.asarray(key))
    return ([int(x) for x in np.asarray(obs) if x != spec.pad_id],
            float(reward), bool(done))

  def metrics(self):
    return {k: float(v) for k, v in self._metrics(self.state).items()}
