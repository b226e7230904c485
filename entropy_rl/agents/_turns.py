"""Multi-turn rollouts: the context buffer, policy turns, on device or via
Python.

The environments are :mod:`entropy_rl.agents._envs`'
(:class:`~entropy_rl.agents.AgentEnv`, :class:`~entropy_rl.agents.PythonEnv`).
:func:`plain_rollout` runs whole episodes of an AgentEnv on device: a
``lax.scan`` over turns whose body calls the sampler (one KV cache over the
episode, :func:`policy_turn`; or a prefill of the whole context,
:func:`sample_turn`), ``vmap(env.step)`` and appends the action and the
observation to a fixed-size left-padded context buffer. Finished episodes
keep sampling (fixed shapes) but their turns are masked and their state
frozen (PureJaxRL style). :func:`python_rollout` calls a jitted per-turn
sampler, steps the PythonEnv objects on the host and appends with the same
jitted function. The branching rollout (:mod:`entropy_rl.agents._branching`)
is built from the same public pieces (:func:`make_policy`,
:class:`TurnRecord`, :func:`episodes`, the keys);
:func:`entropy_rl.agents.rollout` picks one of the two on-device rollouts.

Both draw the same keys: turn t uses ``split(fold_in(k_turns, t))`` into a
sampler key and an environment key (split into one key per row), and the
reset key of row ``g·G + j`` is key g of ``split(k_reset, num_groups)``
(every member of a GRPO group sees the same task). So a pure-JAX
environment wrapped in :class:`~entropy_rl.agents.JaxEnvAsPython` gives the
on-device rollout token for token (tested).

The context buffer holds ``C = O0 + T·(L + O)`` tokens (``spec.context_len``),
the longest episode, so nothing is ever dropped and both layouts
(:mod:`entropy_rl.agents._layouts`) are exact.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from entropy_rl.agents import _envs as envs_lib
from entropy_rl.agents import _layouts as layouts
from entropy_rl.core import types
from entropy_rl.sampling import processors as processors_lib
from entropy_rl.sampling import sampler as sampler_lib

Array = types.Array
PRNGKey = types.PRNGKey


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
  """One action of every row, as the sampler drew it."""

  tokens: Array  # [R, L] int32
  mask: Array  # [R, L] bool (up to and including an end token)
  logp: Array  # [R, L] f32
  entropy: Array  # [R, L] f32


def sample_turn(fns: Any, params: Any, context: Array, context_mask: Array,
                rng: PRNGKey, *, action_len: int,
                sampling: processors_lib.SamplingMethod = (
                    processors_lib.SamplingMethod()),
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
                sampling: processors_lib.SamplingMethod = (
                    processors_lib.SamplingMethod()),
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
# Turn bookkeeping shared by the rollouts (plain, Python, branching).


class TurnRecord(NamedTuple):
  """What a rollout keeps of one turn of every row (stacked over turns:
  [T, R, ...]; :func:`episodes` turns the stack into both layouts).

  Attributes:
    prompt: [R, C] int32 context before the turn's action.
    prompt_mask: [R, C] bool, its real tokens.
    action: [R, L] int32 action tokens (pad where masked).
    action_mask: [R, L] f32, 1 on the tokens of a turn the row took.
    logp: [R, L] f32 behaviour log-probabilities (0 where masked).
    entropy: [R, L] f32 sampling entropies (0 where masked).
    obs: [R, O] int32 observation tokens (pad where masked).
    obs_mask: [R, O] bool.
    reward: [R] f32 (0 for a turn not taken).
    done: [R] bool, the episode ended at this turn (or was cut at T).
    turn_mask: [R] bool, the row took this turn.
  """

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
  rec = TurnRecord(buf.tokens, buf.mask, action, amask.astype(jnp.float32),
                   logp, ent, obs, omask, reward, done, active)
  buf = append_turn(buf, t, action, amask, logp, ent, obs, omask, pad_id)
  return buf, active & ~done, rec


def episodes(recs: TurnRecord, buf: Buffer, aux: Mapping[str, Array],
             group_size: int) -> layouts.Episodes:
  """Turn records [T, R, ...] and the final buffer -> both layouts.

  Args:
    recs: the stacked :class:`TurnRecord` of every turn, [T, R, ...].
    buf: the final context :class:`Buffer` [R, C].
    aux: trajectory-level values {name: [R]} (environment metrics).
    group_size: G; row r is in group ``r // G``.

  Returns:
    :class:`~entropy_rl.agents.Episodes`: L1 (one row per turn, R·T rows,
    row-major over trajectories) and L2 (one row per trajectory).
  """
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


def check_groups(num_groups: int, group_size: int) -> int:
  """R = ``num_groups · group_size`` rows; ValueError if either is < 1."""
  if num_groups < 1 or group_size < 1:
    raise ValueError(f"num_groups ({num_groups}) and group_size "
                     f"({group_size}) must be at least 1")
  return num_groups * group_size


DECODES = ("cache", "prefill")


class Policy(NamedTuple):
  """Static sampling settings of a rollout and its three steps per turn
  (build with :func:`make_policy`).

  ``start(params, obs0 [R, O0]) -> (buf, ds)``: the context buffer and,
  with ``decode="cache"``, the KV cache (else None).
  ``act(params, buf, ds, k_s, active [R], pp, sp) -> (ds, TurnSample)``:
  one action of every row (:func:`policy_turn` or :func:`sample_turn`).
  ``observe(params, buf, ds, active, t, smp, obs, reward, done) -> (buf,
  ds, active, TurnRecord)``: masks the turn to the ``active`` rows, records
  it, appends action and observation to the buffer (and feeds the
  observation to the cache); a row stops after ``done`` or turn T − 1.
  """

  fns: Any
  spec: envs_lib.EnvSpec
  sampling: processors_lib.SamplingMethod
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


def make_policy(fns: Any, spec: envs_lib.EnvSpec,
                sampling: processors_lib.SamplingMethod,
                processors: Sequence[types.LogitsProcessor], decode: str,
                cache_dtype: Any) -> Policy:
  """A :class:`Policy`; ``decode`` is one of :data:`DECODES` (see
  :func:`plain_rollout`)."""
  if decode not in DECODES:
    raise ValueError(f"decode must be one of {DECODES}, got {decode!r}")
  return Policy(fns, spec, sampling, tuple(processors), decode, cache_dtype)


# ----------------------------------------------------------------------------
# On-device rollout.


def plain_rollout(fns: Any, params: Any, env: envs_lib.AgentEnv,
                  rng: PRNGKey, *, num_groups: int, group_size: int,
                  sampling: processors_lib.SamplingMethod = (
                      processors_lib.SamplingMethod()),
                  processors: Sequence[types.LogitsProcessor] = (),
                  processor_params: Sequence[Any] | None = None,
                  sampling_params: Sequence[Any] | None = None,
                  decode: str = "cache", cache_dtype: Any = None
                  ) -> layouts.Episodes:
  """Whole independent episodes of a pure-JAX environment on device
  (jit-able); :func:`entropy_rl.agents.rollout` without ``branching``.

  R = ``num_groups · group_size`` episodes; row ``g·G + j`` is member j of
  group g (same reset key). One ``lax.scan`` over the T turns: sample an
  action, ``vmap(env.step)``, mask finished rows, append the action and the
  observation to the context.

  Args:
    fns: model functions (``entropy_rl.models.as_functions``).
    params: model parameters.
    env: the :class:`~entropy_rl.agents.AgentEnv`.
    rng: PRNG key.
    num_groups: tasks per rollout.
    group_size: episodes per task (GRPO's G).
    sampling, processors, processor_params, sampling_params: as in
      :func:`entropy_rl.sampling.sample`; ``processor_params`` may also be
      a function ``t -> params`` of the (traced) turn, e.g. DR-PO's
      teacher-forced roll-in (:func:`entropy_rl.agents.rollin_processor`).
    decode: ``"cache"`` (default): one KV cache over the whole episode,
      each turn decodes L tokens and feeds the observation
      (:func:`policy_turn`); ``"prefill"``: the library sampler on the
      whole context every turn (:func:`sample_turn`; quadratic in turns,
      kept as the reference).
    cache_dtype: KV-cache dtype (default: the model's).

  Returns:
    :class:`~entropy_rl.agents.Episodes` (L1 and L2).
  """
  spec = env.spec
  r = check_groups(num_groups, group_size)
  pol = make_policy(fns, spec, sampling, processors, decode, cache_dtype)
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
  return episodes(recs, buf, aux, group_size)


# ----------------------------------------------------------------------------
# Python environments.


class PythonRollout(NamedTuple):
  """Jitted pieces of :func:`python_rollout` for one model and spec."""

  keys: Callable[..., Any]
  start: Callable[..., Any]
  act: Callable[..., Any]
  observe: Callable[..., Any]
  finish: Callable[..., layouts.Episodes]


def make_python_rollout(fns: Any, spec: envs_lib.EnvSpec, *,
                        group_size: int,
                        sampling: processors_lib.SamplingMethod = (
                            processors_lib.SamplingMethod()),
                        processors: Sequence[types.LogitsProcessor] = (),
                        decode: str = "cache", cache_dtype: Any = None
                        ) -> PythonRollout:
  """Compiles the per-turn pieces once (reuse it across iterations)."""
  pol = make_policy(fns, spec, sampling, processors, decode, cache_dtype)

  @jax.jit
  def act(params, buf, ds, k_turns, t, active, pp, sp):
    k_s, k_e = turn_keys(k_turns, t, buf.tokens.shape[0])
    ds, smp = pol.act(params, buf, ds, k_s, active, pp, sp)
    return ds, smp, k_e

  return PythonRollout(
      keys=functools.partial(_keys_jit, group_size=group_size),
      start=jax.jit(pol.start), act=act, observe=jax.jit(pol.observe),
      finish=jax.jit(lambda recs, buf, aux: episodes(recs, buf, aux,
                                                      group_size)))


@functools.partial(jax.jit, static_argnums=(1,), static_argnames=(
    "group_size",))
def _keys_jit(rng, num_groups, *, group_size):
  k_reset, k_turns = rollout_keys(rng)
  return reset_keys(k_reset, num_groups, group_size), k_turns


def python_rollout(fns: Any, params: Any,
                   envs: Sequence[envs_lib.PythonEnv],
                   spec: envs_lib.EnvSpec, rng: PRNGKey, *, group_size: int,
                   sampling: processors_lib.SamplingMethod = (
                       processors_lib.SamplingMethod()),
                   processors: Sequence[types.LogitsProcessor] = (),
                   processor_params: Any = None,
                   sampling_params: Sequence[Any] | None = None,
                   decode: str = "cache",
                   compiled: PythonRollout | None = None
                   ) -> layouts.Episodes:
  """Episodes of host-side environments between jitted policy turns.

  Args:
    fns, params: the model.
    envs: R = ``num_groups · group_size``
      :class:`~entropy_rl.agents.PythonEnv` objects, one per row (row
      ``g·G + j`` is member j of group g).
    spec: their :class:`~entropy_rl.agents.EnvSpec` (O0, O, L, T, pad and
      end ids).
    rng: PRNG key (the same key schedule as :func:`plain_rollout`).
    group_size: G.
    sampling, processors, sampling_params: the sampler's.
    processor_params: one params pytree per processor, or a function
      ``t -> params`` of the turn (same shapes every turn), e.g. to force
      scripted or demonstration actions with
      :func:`entropy_rl.agents.rollin_processor`.
    decode: as in :func:`plain_rollout`.
    compiled: :func:`make_python_rollout` output to reuse (else built here).

  Returns:
    :class:`~entropy_rl.agents.Episodes`. The loop stops early once
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
  obs0 = np.array([envs_lib.pad_tokens(env.reset(rkeys[i]),
                                       spec.init_obs_len, pad)
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
      obs[i] = envs_lib.pad_tokens(o, spec.obs_len, pad)
      reward[i], done[i] = float(rw), bool(d)
    buf, ds, active, rec = cp.observe(params, buf, ds, active, jnp.int32(t),
                                      smp, jnp.asarray(obs),
                                      jnp.asarray(reward), jnp.asarray(done))
    recs.append(rec)
  # Turns after every episode ended: the frozen context, nothing else.
  while len(recs) < spec.max_turns:
    z = jnp.zeros((r, spec.action_len), jnp.float32)
    recs.append(TurnRecord(
        buf.tokens, buf.mask, jnp.full((r, spec.action_len), pad, jnp.int32),
        z, z, z, jnp.full((r, spec.obs_len), pad, jnp.int32),
        jnp.zeros((r, spec.obs_len), bool), jnp.zeros((r,), jnp.float32),
        jnp.zeros((r,), bool), jnp.zeros((r,), bool)))
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *recs)
  names = sorted(envs[0].metrics())
  aux = {k: jnp.asarray([float(env.metrics()[k]) for env in envs],
                        jnp.float32) for k in names}
  return cp.finish(stacked, buf, aux)
