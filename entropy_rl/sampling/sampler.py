"""On-device autoregressive sampler over a KV cache.

``sample(fns, params, prompt_tokens, prompt_mask, rng, *, max_new_tokens,
...)`` runs one jitted program:

1. **Prefill**: the left-padded prompts [B, P] go through
   ``fns.hidden`` once with a P-slot cache; positions are
   ``cumsum(mask) − 1`` so padding shifts nothing. Only the last position's
   logits are computed.
2. **Fan-out**: row ``b·n + j`` of the R = B·n decode rows is sample j of
   prompt b. With ``share_prompt`` (the default for n > 1 on models that
   support it, see :class:`DecodeSettings`) the prefilled prompt cache is
   *shared*: each decode step attends over it as a prefix of B rows, read
   once per prompt instead of once per sample, and the decode cache holds
   only the generated tokens. Otherwise the prefilled cache (not the
   prompt) is repeated n times into the R-row decode cache with one
   ``dynamic_update_slice``.
3. **Decode**: a ``lax.while_loop`` over blocks of ``block_size`` steps, each
   block a ``lax.scan`` of single-token steps through ``fns.hidden``; the
   loop stops when every row has emitted an end token (or after
   ``max_new_tokens``). Each step processes the logits (the method's
   processors), draws a token and computes, in the same fused pass, the
   log-probability and entropy of the distribution it drew from. The last
   block is cut to the steps left, so no step runs past N. With
   ``num_buckets`` > 1 (the CPU default) the blocks run in that many
   stretches, each over a cache cut to the slots it can reach, grown by a
   copy between stretches: early steps do not read the empty slots.

:func:`sample_traced` is the same program as a traceable function (no
host-side checks; call it inside ``jit`` / ``scan``), and
:func:`init_decode_state` / :func:`feed_tokens` / :func:`continue_traced`
extend an existing KV cache with observations and sampled tokens (the
multi-turn agent rollouts, ``entropy_rl.agents.rollout``).

Outputs have fixed shapes [R, N]. A row's ``mask`` is 1 from its first
token up to and **including** its first end token; after it, tokens are
``pad_id`` and logp/entropy are 0. No host round trip happens between the
prefill and the returned arrays.

``logp`` / ``entropy`` are those of softmax(z') where z' are the logits
after every processor: at the sampling temperature and, under a truncation
(top-k/p, min-p, Top-H), of the truncated, renormalised distribution. This
is the behaviour policy of the rollout, the ``old_logp`` the PPO ratio
needs (spec A6 (b)); a training pass that recomputes log-probs from the
model at temperature T gives the untruncated distribution instead.

The model interface (``entropy_rl.models.as_functions``): ``fns.hidden(params,
tokens [B,S], positions [B,S], mask [B,S], cache) -> (hidden [B,S,D],
cache)`` writing slots [index, index+S); ``fns.logits(params, hidden)`` f32;
``fns.head(params) -> W [D, V]``; ``fns.init_cache(batch, max_len,
dtype=None)``; ``fns.config``. Models whose ``fns.shared_prefix`` is true
also take ``fns.hidden(..., cache, prefix=prompt_cache)`` (a read-only
cache shared by groups of n consecutive rows; `entropy_rl.models.Decoder`).
Optional: ``fns.logits_t(params, hidden [R, D]) -> [V, R]`` (the logits
transposed).

On a TPU target (`entropy_rl.parallel.target_platform`) the program
differs where the layout matters, with the same distributions:

* The draw reads vocabulary-major logits [V, R] (``fns.logits_t``, see
  `_vocab_major`; `processors.draw_and_stats_vocab_major`): no padded [R, C,
  S] relayout, one pass for the statistics.
* The prompt is shared for any n (`_share_prompt`) when the decode runs
  the paged kernel (``config.decode_attention``, "paged" by default on
  TPU): the decode cache then holds the generated tokens from slot 0, in
  pages, and declares them (``KVCache.lengths``), so each step reads only
  its live slots.
* Parameters are cast once to the compute dtype (`_in_compute_dtype`; on
  every platform, exact).

On CPU every number is what it was before these paths existed.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from entropy_rl import parallel
from entropy_rl.core import types
from entropy_rl.models import attention as attention_lib
from entropy_rl.models import decoder as decoder_lib
from entropy_rl.sampling import processors as proc_lib

Array = types.Array
LogitsProcessor = types.LogitsProcessor
SamplingMethod = proc_lib.SamplingMethod


@dataclasses.dataclass(frozen=True)
class DecodeSettings:
  """How the sampler runs its decode: static settings, one ``jit`` key.

  They set how the program runs, not what it samples: ``block_size``,
  ``num_buckets`` and ``early_stop`` leave the outputs unchanged (tested),
  ``share_prompt`` changes them up to float rounding, and ``cache_dtype``
  sets the precision of the cache. A value: equal settings hash equal, so
  rebuilding them does not recompile.

  Attributes:
    block_size: decode steps per ``lax.scan`` block between early-stop
      checks. None: 16 in :func:`sample` and :func:`make_sampler`; all
      steps in one block in :func:`sample_traced` (the cheapest choice
      under an outer ``scan``).
    num_buckets: run the decode in this many stretches of whole blocks,
      each attending over a cache cut to the slots it can reach (grown,
      with a copy, between stretches). Early steps then skip the empty
      slots (on average about half of them for long generations) for one
      compiled stretch each. None: 4 on CPU, 1 on accelerators (see
      `_num_buckets`).
    share_prompt: decode against one shared cache of the B prompts (True)
      instead of n copies of it (False). None: shared when ``num_samples >
      1`` and the model supports it (``fns.shared_prefix``), and for any n
      when the decode runs the paged kernel. Sharing reads each prompt's
      keys and values once per step instead of n times.
    early_stop: stop once every row ended (False: always N steps).
    cache_dtype: KV-cache dtype (None: the model's compute dtype).
    max_len: cache length in tokens (None: P + N − 1, the minimum).
  """

  block_size: int | None = None
  num_buckets: int | None = None
  share_prompt: bool | None = None
  early_stop: bool = True
  cache_dtype: Any = None
  max_len: int | None = None


_DECODE_FIELDS = tuple(f.name for f in dataclasses.fields(DecodeSettings))
_BLOCK_SIZE = 16  # sample's and make_sampler's default block_size


def _decode_settings(settings: DecodeSettings | None,
                     deprecated: dict[str, Any], caller: str
                     ) -> DecodeSettings:
  """``settings`` (default ``DecodeSettings()``) with the deprecated keyword
  arguments (``block_size=``, ``num_buckets=``, ...) applied over it."""
  unknown = sorted(set(deprecated) - set(_DECODE_FIELDS))
  if unknown:
    raise TypeError(f"{caller}() got unexpected keyword arguments {unknown}")
  if settings is None:
    settings = DecodeSettings()
  elif not isinstance(settings, DecodeSettings):
    raise ValueError(f"settings must be a DecodeSettings, got "
                     f"{type(settings).__name__}")
  return dataclasses.replace(settings, **deprecated) if deprecated else settings


class SampleOutput(NamedTuple):
  """Fixed-shape rollouts of R = B·num_samples rows and N new tokens.

  Row ``b·n + j`` is sample j of prompt b.
  """

  tokens: Array  # [R, N] int32, pad_id after the end token
  logp: Array  # [R, N] f32 log-prob under the distribution sampled from
  entropy: Array  # [R, N] f32 entropy of that distribution (nats)
  mask: Array  # [R, N] bool, generated tokens incl. the end token
  lengths: Array  # [R] int32 = mask.sum(-1)
  ended: Array  # [R] bool, emitted an end token
  prompt_tokens: Array  # [R, P] the prompts, repeated
  prompt_mask: Array  # [R, P] bool
  group_ids: Array  # [R] int32 prompt index b
  num_steps: Array  # [] int32 decode positions actually run (early stop)


class Sampler(NamedTuple):
  """A compiled-once sampler (see :func:`make_sampler`).

  Attributes:
    init_cache: ``init_cache(batch, prompt_len) -> cache`` for ``batch``
      prompts (the cache holds ``batch · num_samples`` rows).
    generate: ``generate(params, prompt_tokens, prompt_mask, rng, cache,
      processor_params=None, sampling_params=None) -> (SampleOutput,
      cache)``, jitted, with ``cache`` donated: pass the returned cache to
      the next call so its buffer is reused in place.
  """

  init_cache: Callable[[int, int], Any]
  generate: Callable[..., tuple[SampleOutput, Any]]


# ----------------------------------------------------------------------------
# Validation (host side, static shapes only).


def _vocab_size(fns, params) -> int:
  """V of the LM head (abstract evaluation: no computation)."""
  w = jax.eval_shape(fns.head, params)
  return int(w.shape[-1])


def _strong(x: Any) -> Any:
  """Python / NumPy scalars and arrays as 32-bit, non-weak-typed arrays, so
  ``0.5`` and ``jnp.float32(0.5)`` share one compiled program."""
  if isinstance(x, jax.Array):
    return x
  a = np.asarray(x)
  if a.dtype == np.float64:
    a = a.astype(np.float32)
  elif a.dtype == np.int64:
    a = a.astype(np.int32)
  return jnp.asarray(a)


def _check_params_tuple(name: str, value: Any, procs: Sequence[Any]) -> tuple:
  if value is None:
    value = tuple(p.init() for p in procs)
  if not isinstance(value, (tuple, list)) or len(value) != len(procs):
    raise ValueError(f"{name} must be a tuple with one entry per processor "
                     f"({len(procs)}), got {value!r}")
  return jax.tree.map(_strong, tuple(value))


def _validate(fns, params, prompt_tokens, prompt_mask, *, max_new_tokens,
              sampling, end_ids, num_samples, block_size, processors, pad_id,
              max_len, vocab_size):
  """Checks the static arguments; returns (B, P, V, max_len)."""
  if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens <= 0:
    raise ValueError(f"max_new_tokens must be a positive int, got "
                     f"{max_new_tokens!r}")
  if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
    raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
  if not isinstance(block_size, (int, np.integer)) or block_size < 1:
    raise ValueError(f"block_size must be an int >= 1, got {block_size!r}")
  proc_lib.check_method(sampling)
  for p in processors:
    if not isinstance(p, LogitsProcessor):
      raise ValueError(f"processors must be LogitsProcessors, got "
                       f"{type(p).__name__}")
  if prompt_tokens.ndim != 2:
    raise ValueError(f"prompt_tokens must be [B, P], got shape "
                     f"{tuple(prompt_tokens.shape)}")
  if tuple(prompt_mask.shape) != tuple(prompt_tokens.shape):
    raise ValueError(f"prompt_mask shape {tuple(prompt_mask.shape)} != "
                     f"prompt_tokens shape {tuple(prompt_tokens.shape)}")
  if not jnp.issubdtype(prompt_tokens.dtype, jnp.integer):
    raise ValueError(f"prompt_tokens must be integers, got "
                     f"{prompt_tokens.dtype}")
  b, p = prompt_tokens.shape
  if b < 1 or p < 1:
    raise ValueError(f"prompt_tokens must have B >= 1 rows and P >= 1 "
                     f"columns, got shape {(b, p)}")
  v = _vocab_size(fns, params)
  cfg_v = getattr(getattr(fns, "config", None), "vocab_size", None)
  if cfg_v is not None and cfg_v != v:
    raise ValueError(f"vocabulary mismatch: fns.config.vocab_size = {cfg_v} "
                     f"but the LM head has {v} columns")
  if vocab_size is not None and vocab_size > v:
    raise ValueError(f"vocabulary mismatch: the tokenizer has {vocab_size} "
                     f"tokens but the model only {v}")
  bad = [e for e in end_ids if not 0 <= e < v]
  if bad:
    raise ValueError(f"end_ids {bad} are outside the model's vocabulary "
                     f"[0, {v})")
  if not 0 <= pad_id < v:
    raise ValueError(f"pad_id {pad_id} is outside the vocabulary [0, {v})")
  if isinstance(prompt_tokens, np.ndarray) and prompt_tokens.size:
    hi, lo = int(prompt_tokens.max()), int(prompt_tokens.min())
    if hi >= v or lo < 0:
      raise ValueError(f"vocabulary mismatch: prompt token ids span "
                       f"[{lo}, {hi}] but the model's vocabulary is [0, {v})")
  need = p + max_new_tokens - 1
  if max_len is None:
    max_len = need
  if p > max_len or need > max_len:
    raise ValueError(
        f"the cache holds max_len = {max_len} tokens but the prompts have "
        f"P = {p} and generating {max_new_tokens} tokens needs {need}")
  return b, p, v, max_len


# ----------------------------------------------------------------------------
# The jitted program.


def _repeat_rows(x: Array, n: int, axis: int) -> Array:
  return x if n == 1 else jnp.repeat(x, n, axis=axis)


def _fan_out(small, cache, n: int):
  """Writes the prefilled cache (B rows, P slots) into the R-row cache.

  k and v may be arrays [L, B, K, T, Dh] or pytrees of per-layer arrays
  [B, K, T, Dh]: the row axis is the fourth from the end.
  """
  def put(big, part):
    part = _repeat_rows(part, n, part.ndim - 4).astype(big.dtype)
    return lax.dynamic_update_slice(big, part, (0,) * big.ndim)
  k = jax.tree.map(put, cache.k, small.k)
  v = jax.tree.map(put, cache.v, small.v)
  p = small.valid.shape[1]
  valid = jnp.zeros_like(cache.valid)
  valid = lax.dynamic_update_slice(valid, _repeat_rows(small.valid, n, 0),
                                   (0, 0))
  return cache._replace(k=k, v=v, valid=valid,
                        index=jnp.asarray(p, cache.index.dtype))


_CPU_BUCKETS = 4


def _num_buckets(num_buckets: int | None, fns=None) -> int:
  """The decode's stretches (static): ``num_buckets``, or by default 4 on
  CPU (1.08x at N = 64, 1.44x at N = 256; BENCHMARKS.md); on TPU 4 when
  the decode attends by einsums over the cache (estimated 39.9k vs 37.9k
  tokens/s for Qwen2.5-0.5B shapes on one v5e, B = 256, N = 256) and 1
  when it runs the paged kernel (`_paged_decode`), which already reads
  only the live slots; 1 elsewhere (not measured; a stretch's cache copy
  doubles the cache's peak memory). The platform is the one the program
  is built for (`entropy_rl.parallel.target_platform`: a TPU mesh when
  compiling for a TPU from a CPU host)."""
  if num_buckets is None:
    platform = parallel.target_platform()
    if platform == "cpu" or (platform == "tpu" and not _paged_decode(fns)):
      return _CPU_BUCKETS
    return 1
  if not isinstance(num_buckets, (int, np.integer)) or num_buckets < 1:
    raise ValueError(f"num_buckets must be an int >= 1, got {num_buckets!r}")
  return int(num_buckets)


def _paged_decode(fns) -> bool:
  """Whether the model's decode steps attend through the paged kernel on
  the target platform (static): ``fns.config.decode_attention`` resolves
  to "paged" (`entropy_rl.models.attention.resolve_decode`; "auto" on a
  TPU target)."""
  impl = getattr(getattr(fns, "config", None), "decode_attention", None)
  return impl is not None and attention_lib.resolve_decode(
      impl, parallel.target_platform()) == "paged"


def _share_prompt(fns, share_prompt: bool | None, num_samples: int) -> bool:
  """Whether the decode attends over a shared prompt cache (static).

  By default: for n > 1 samples per prompt, and for any n when the decode
  runs the paged kernel (`_paged_decode`), which needs the layout sharing
  gives (a prompt cache and a cache of generated tokens, each filled from
  slot 0).
  """
  supported = bool(getattr(fns, "shared_prefix", False))
  if share_prompt is None:
    return supported and (num_samples > 1 or _paged_decode(fns))
  if share_prompt and not supported:
    raise ValueError("share_prompt=True needs model functions that accept a "
                     "shared prefix (fns.shared_prefix, e.g. "
                     "entropy_rl.models.as_functions); this model's do not")
  return bool(share_prompt)


def _resize_cache(cache, length: int):
  """The cache with ``length`` slots: its first slots, or zero/invalid
  slots appended (k and v: the slot axis is the second from the end)."""
  t = cache.valid.shape[1]
  if length == t:
    return cache

  def fit(x, axis):
    if length < t:
      return lax.slice_in_dim(x, 0, length, axis=axis % x.ndim)
    pad = [(0, 0)] * x.ndim
    pad[axis % x.ndim] = (0, length - t)
    return jnp.pad(x, pad)
  return cache._replace(k=jax.tree.map(lambda x: fit(x, -2), cache.k),
                        v=jax.tree.map(lambda x: fit(x, -2), cache.v),
                        valid=fit(cache.valid, 1))


def _segments(num_steps: int, block_size: int, num_buckets: int):
  """Decode steps 1..num_steps as blocks, grouped into buckets.

  Returns a list of (stop, full_blocks, tail): bucket j runs
  ``full_blocks`` blocks of ``block_size`` steps and then ``tail`` (<
  block_size) steps, ending before step ``stop``; only the last bucket has
  a tail.
  """
  n_full, tail = divmod(num_steps, block_size)
  blocks = [block_size] * n_full + ([tail] if tail else [])
  if not blocks:
    return []
  groups = np.array_split(np.arange(len(blocks)), min(num_buckets,
                                                      len(blocks)))
  out, stop = [], 1
  for g in groups:
    lengths = [blocks[i] for i in g]
    stop += sum(lengths)
    out.append((stop, sum(1 for x in lengths if x == block_size),
                sum(x for x in lengths if x != block_size)))
  return out


def _in_compute_dtype(fns, params):
  """The floating parameters in ``fns.config.dtype``, once per rollout.

  A model that casts every weight to its compute dtype before use (the
  `entropy_rl.models.Decoder`: matmul weights, biases, norm scales and the
  embedding are all ``astype(config.dtype)`` where they are read) computes
  exactly the same numbers from the cast parameters, and a decode step
  then streams them in that dtype (half the bytes of float32 parameters
  under a bfloat16 model) instead of casting inside every step. Without
  ``fns.config.dtype``, the parameters as given.
  """
  dtype = getattr(getattr(fns, "config", None), "dtype", None)
  if dtype is None:
    return params

  def cast(x):
    x = jnp.asarray(x) if not hasattr(x, "dtype") else x
    if jnp.issubdtype(x.dtype, jnp.floating) and x.dtype != dtype:
      return x.astype(dtype)
    return x
  return jax.tree.map(cast, params)


def _vocab_major(fns, params, processors, sampling) -> bool:
  """Whether the decode draws from vocabulary-major logits [V, R] (static).

  On a TPU target, for models with ``fns.logits_t(params, hidden [R, D])
  -> [V, R]`` (`entropy_rl.models.as_functions`), when every processor
  has a vocabulary-major form (none, or a temperature:
  `methods.supports_vocab_major`), the draw is ``cdf`` or ``argmax``, and
  8 divides V. ``E h`` then comes out of the LM head in the layout the
  chunked statistics read (`methods.draw_and_stats_vocab_major`): no
  transposition, no relayout. Elsewhere, and always on CPU (whose
  numbers stay exactly as they were), [R, V] rows.
  """
  if (parallel.target_platform() != "tpu"
      or getattr(fns, "logits_t", None) is None
      or sampling.draw not in ("cdf", "argmax")
      or not proc_lib.supports_vocab_major(processors)):
    return False
  return proc_lib.vocab_major_chunk(_vocab_size(fns, params)) is not None


def _page(fns, share: bool) -> int:
  """The decode cache's slots are a multiple of this (static): the paged
  kernel's page size when the decode runs it over a shared prompt, else
  1."""
  return attention_lib.PAGE_SIZES[0] if share and _paged_decode(fns) else 1


def _round_up(x: int, m: int) -> int:
  return -(-x // m) * m


def _decode_slots(prompt_len: int, max_len: int, share: bool,
                  page: int = 1) -> int:
  """Slots of the R-row decode cache: all of max_len, or (sharing the
  prompt cache) those after the prompt, at least one, rounded up to a
  multiple of ``page``."""
  return _round_up(max(max_len - prompt_len, 1), page) if share else max_len


def _resolve(fns, settings: DecodeSettings, num_samples: int,
             block_size: int) -> DecodeSettings:
  """The static settings of the program: ``block_size`` (None: the given
  default), the platform's ``num_buckets`` and ``share_prompt`` (see
  `_num_buckets`, `_share_prompt`). ``cache_dtype`` and ``max_len`` shape
  the cache argument, not the program: they are left out (None)."""
  return DecodeSettings(
      block_size=int(block_size if settings.block_size is None
                     else settings.block_size),
      num_buckets=_num_buckets(settings.num_buckets, fns),
      share_prompt=_share_prompt(fns, settings.share_prompt, num_samples),
      early_stop=bool(settings.early_stop))


def _emit(z, t, done, keys, uniforms, *, procs, proc_params, rng_proc, draw,
          end, pad_id, vocab_major=False):
  """One decode step's token: processes the logits z [R, V] of step t (z
  [V, R] with ``vocab_major``), draws from softmax(z') and masks the rows
  ``done`` [R] had already ended. The same in :func:`sample` and
  :func:`continue_traced`.

  Returns:
    (tokens, logp, entropy, live, done') [R]: ``pad_id`` / 0 where not
    live; done' adds the rows whose token is in ``end``.
  """
  if vocab_major:
    process = proc_lib.apply_processors_vocab_major
    draw_fn = proc_lib.draw_and_stats_vocab_major
  else:
    process, draw_fn = proc_lib.apply_processors, proc_lib.draw_and_stats
  z = process(z.astype(jnp.float32), procs, proc_params,
              rng=jax.random.fold_in(rng_proc, t), pos=t)
  tok, logp, ent = draw_fn(z, keys, draw, uniforms)
  live = ~done
  is_end = jnp.any(tok[:, None] == end[None, :], -1)
  tok = jnp.where(live, tok, pad_id).astype(jnp.int32)
  return (tok, jnp.where(live, logp, 0.0), jnp.where(live, ent, 0.0), live,
          done | (live & is_end))


def _sample_impl(params, prompt_tokens, prompt_mask, rng, cache,
                 processor_params, sampling_params, *, fns, max_new_tokens,
                 sampling, processors, end_ids, num_samples, pad_id,
                 settings):
  """The whole rollout; see the module docstring. Returns (out, cache).

  ``settings`` is resolved (`_resolve`): an int ``block_size`` and
  ``num_buckets``, a bool ``share_prompt``. With ``share_prompt``,
  ``cache`` holds the R rows' generated tokens only (`_decode_slots`) and
  the prefilled B-row prompt cache is passed to every decode step as a
  shared prefix. With ``num_buckets`` > 1 the decode runs in that many
  stretches, each over a cache cut to the slots it can reach (grown
  between stretches), so early steps do not read empty slots.
  """
  block_size, early_stop = settings.block_size, settings.early_stop
  share_prompt, num_buckets = settings.share_prompt, settings.num_buckets
  b, p = prompt_tokens.shape
  n, big_n = num_samples, max_new_tokens
  r = b * n
  params = _in_compute_dtype(fns, params)
  mask = prompt_mask.astype(bool)
  tokens = prompt_tokens.astype(jnp.int32)
  procs = tuple(processors) + tuple(sampling.processors)
  proc_params = tuple(processor_params) + tuple(sampling_params)
  end = jnp.asarray(end_ids if end_ids else (-1,), jnp.int32)

  # Prefill into a P-slot cache, then fan out to the R-row decode cache.
  # The barrier keeps XLA from constant-folding attention over the empty cache.
  small = lax.optimization_barrier(
      fns.init_cache(b, p, dtype=jax.tree.leaves(cache.k)[0].dtype))
  h, small = fns.hidden(params, tokens,
                        decoder_lib.positions_from_mask(mask), mask, small)
  # Vocabulary-major logits [V, R] where the draw runs on them (TPU), else
  # [R, V] rows (see `_vocab_major`).
  vocab_major = _vocab_major(fns, params, procs, sampling)
  logits = fns.logits_t if vocab_major else fns.logits
  row_axis = 1 if vocab_major else 0
  logits0 = logits(params, h[:, -1])  # [B, V] (or [V, B]) f32
  # The paged decode kernel reads the decode cache's live slots, which it
  # declares (KVCache.lengths: filled from slot 0 in the shared layout);
  # the prompt cache stays a prefix attended by einsums.
  page = _page(fns, share_prompt) if "lengths" in getattr(
      cache, "_fields", ()) else 1
  if share_prompt:
    prefix = small
    cache = cache._replace(valid=jnp.zeros_like(cache.valid),
                           index=jnp.zeros_like(cache.index))
    if page > 1:
      cache = cache._replace(lengths=jnp.zeros((r,), jnp.int32))
  else:
    prefix = None
    cache = _fan_out(small, cache, n)
  logits0 = _repeat_rows(logits0, n, row_axis)  # [R, V] (or [V, R])
  base_pos = _repeat_rows(jnp.sum(mask, -1, dtype=jnp.int32), n, 0)  # [R]

  rng_rows, rng_proc = jax.random.split(rng)
  row_keys = jax.random.split(rng_rows, r)  # row i's stream: f(rng, i, t)

  def step_keys(t):
    """Row keys of step t [R]: row i's stream depends on (rng, i, t) only."""
    return jax.vmap(jax.random.fold_in, (0, None))(row_keys, t)

  def emit(z, t, done, uniforms=None):
    """Processes logits z [R, V] (or [V, R]) of token t and draws it."""
    keys = None if uniforms is not None else step_keys(t)
    return _emit(z, t, done, keys, uniforms, procs=procs,
                 proc_params=proc_params, rng_proc=rng_proc,
                 draw=sampling.draw, end=end, pad_id=pad_id,
                 vocab_major=vocab_major)

  t0_tok, t0_logp, t0_ent, t0_live, done = emit(
      logits0, jnp.asarray(0, jnp.int32), jnp.zeros((r,), bool))

  # Decode steps after the prefill's token: full blocks, then a shorter
  # tail block, so no step runs past N (a step beyond it would write past
  # the cache's last slot at a position outside the RoPE tables).
  out_tok = jnp.full((big_n, r), pad_id, jnp.int32)
  out_logp = jnp.zeros((big_n, r), jnp.float32)
  out_ent = jnp.zeros((big_n, r), jnp.float32)
  out_live = jnp.zeros((big_n, r), bool)
  out_tok = out_tok.at[0].set(t0_tok)
  out_logp = out_logp.at[0].set(t0_logp)
  out_ent = out_ent.at[0].set(t0_ent)
  out_live = out_live.at[0].set(t0_live)
  ones = jnp.ones((r, 1), bool)

  def step(carry, u):
    t, cache, last, done = carry
    pos = (base_pos + t - 1)[:, None]
    if prefix is None:
      h, cache = fns.hidden(params, last[:, None], pos, ones, cache)
    else:
      h, cache = fns.hidden(params, last[:, None], pos, ones, cache,
                            prefix=prefix)
    z = logits(params, h[:, 0])  # [R, V] (or [V, R])
    tok, logp, ent, live, done = emit(z, t, done, u)
    return (t + 1, cache, tok, done), (tok, logp, ent, live)

  def block(state, length):
    t, cache, last, done, bufs = state
    # The cdf draw's uniforms for the whole block in one vectorised pass
    # (the same numbers as step by step; a per-step threefry loop cost ~3%
    # of a CPU decode step).
    us = None
    if sampling.draw == "cdf":
      us = proc_lib.cdf_uniforms(jax.vmap(step_keys)(
          t + jnp.arange(length, dtype=jnp.int32)))  # [L, R]
    (t2, cache, last, done), ys = lax.scan(
        step, (t, cache, last, done), us, length=length)
    bufs = tuple(lax.dynamic_update_slice(buf, y, (t, 0))
                 for buf, y in zip(bufs, ys))
    return t2, cache, last, done, bufs

  def counted(body):
    """``body`` on (k, state): k counts the loop's own blocks from 0, so
    without early stop its trip count is a constant XLA (and
    `entropy_rl.aot`) can read off the condition."""
    return lambda ks: (ks[0] + 1, body(ks[1]))

  def cond(ks, blocks):
    k, (_, _, _, done, _) = ks
    go = k < blocks
    return (go & ~jnp.all(done)) if early_stop else go

  segments = _segments(big_n - 1, block_size, num_buckets)
  full_len = cache.valid.shape[1]
  base = 0 if share_prompt else p  # the slot step t writes: base + t - 1
  state = (jnp.asarray(1, jnp.int32), cache, t0_tok, done,
           (out_tok, out_logp, out_ent, out_live))
  for j, (stop, n_full, tail) in enumerate(segments):
    if len(segments) > 1:  # the slots this stretch can reach
      length = full_len if j == len(segments) - 1 else min(
          _round_up(base + stop - 1, page), full_len)
      state = state[:1] + (_resize_cache(state[1], length),) + state[2:]
    zero = jnp.zeros((), jnp.int32)
    if n_full:
      _, state = lax.while_loop(
          functools.partial(cond, blocks=n_full),
          counted(functools.partial(block, length=block_size)), (zero, state))
    if tail:  # at most once; a while_loop updates the cache in place
      _, state = lax.while_loop(
          functools.partial(cond, blocks=1),
          counted(functools.partial(block, length=tail)), (zero, state))
  t_end, cache, _, _, bufs = state
  tok, logp, ent, live = (x.T for x in bufs)
  ended = jnp.any(live & jnp.any(tok[..., None] == end, -1), -1)
  out = SampleOutput(
      tokens=tok, logp=logp, entropy=ent, mask=live,
      lengths=jnp.sum(live, -1, dtype=jnp.int32), ended=ended,
      prompt_tokens=_repeat_rows(tokens, n, 0),
      prompt_mask=_repeat_rows(mask, n, 0),
      group_ids=jnp.repeat(jnp.arange(b, dtype=jnp.int32), n),
      num_steps=jnp.minimum(t_end, big_n))
  return out, cache


_STATIC = ("fns", "max_new_tokens", "sampling", "processors", "end_ids",
           "num_samples", "pad_id", "settings")
_sample_jit = jax.jit(_sample_impl, static_argnames=_STATIC,
                      donate_argnames=("cache",))


# ----------------------------------------------------------------------------
# Public entry points.


def sample(fns, params, prompt_tokens: Array, prompt_mask: Array, rng: Array,
           *, max_new_tokens: int,
           sampling: SamplingMethod = proc_lib.SamplingMethod(),
           end_ids: Sequence[int] = (), num_samples: int = 1,
           processors: Sequence[LogitsProcessor] = (),
           processor_params: Sequence[Any] | None = None,
           sampling_params: Sequence[Any] | None = None,
           pad_id: int = 0, vocab_size: int | None = None,
           settings: DecodeSettings | None = None,
           **deprecated: Any) -> SampleOutput:
  """Samples ``max_new_tokens`` tokens for each left-padded prompt.

  Compiled once per set of static arguments (the model functions, shapes,
  method, processors, end ids, settings, ...); processor parameters are
  traced, so a controller may change them every call. Methods, processors
  and settings are values: rebuilding equal ones reuses the compilation.

  Args:
    fns: the model's ``LMFns`` (``entropy_rl.models.as_functions``).
    params: the model's parameters.
    prompt_tokens: [B, P] int, left-padded.
    prompt_mask: [B, P] bool, 1 = real token; every row needs at least one.
    rng: a PRNG key. Row i's randomness depends only on (rng, i, step), so
      padding a prompt differently does not change its samples.
    max_new_tokens: N > 0.
    sampling: a :class:`SamplingMethod` (default: categorical at T = 1).
    end_ids: token ids that end a row (included in its mask).
    num_samples: n samples per prompt; R = B·n output rows.
    processors: extra :class:`LogitsProcessor`s applied to the raw logits
      *before* the method's processors (HAPO, EM-INF, ...).
    processor_params: one params pytree per entry of ``processors``
      (default: their ``init()``); scalars or per-row [R] arrays.
    sampling_params: the same for ``sampling.processors`` (e.g. AEPO's
      temperature: ``({"temperature": T},)`` for :func:`temperature`).
    pad_id: token written after a row's end.
    vocab_size: the tokenizer's vocabulary size, if known (checked against
      the model's).
    settings: the :class:`DecodeSettings` (block size, buckets, shared
      prompt, early stop, cache dtype and length; default
      ``DecodeSettings()``, with ``block_size`` 16).
    **deprecated: ``block_size``, ``num_buckets``, ``share_prompt``,
      ``early_stop``, ``cache_dtype``, ``max_len`` as keyword arguments,
      applied over ``settings``. Deprecated: pass ``settings=``; they keep
      working for one release.

  Returns:
    A :class:`SampleOutput` with [R, N] tokens, logp, entropy and mask.

  Raises:
    ValueError: non-positive ``max_new_tokens``, a prompt longer than the
      cache, a vocabulary mismatch (tokenizer vs model, end/pad/prompt ids
      outside the model's vocabulary), or malformed arguments.

  Examples:
    Two left-padded prompts, two top-k samples each, on a small random
    decoder; methods and settings are values, so equal ones share the
    compilation:

    >>> import jax
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from entropy_rl import models, sampling
    >>> cfg = models.DecoderConfig(vocab_size=16, hidden_size=16,
    ...                            num_layers=1, num_heads=2, num_kv_heads=1,
    ...                            intermediate_size=32)
    >>> fns, params = models.as_functions(models.Decoder(cfg, rngs=nnx.Rngs(0)))
    >>> prompts = jnp.array([[0, 3, 4], [5, 6, 7]])
    >>> mask = jnp.array([[False, True, True], [True, True, True]])
    >>> out = sampling.sample(
    ...     fns, params, prompts, mask, jax.random.key(0), max_new_tokens=4,
    ...     sampling=sampling.top_k(5), num_samples=2,
    ...     settings=sampling.DecodeSettings(block_size=2))
    >>> out.tokens.shape, out.logp.shape, out.entropy.shape
    ((4, 4), (4, 4), (4, 4))
    >>> sampling.top_k(5) == sampling.top_k(5)
    True
  """
  settings = _decode_settings(settings, deprecated, "sample")
  end_ids = tuple(int(e) for e in end_ids)
  processors = tuple(processors)
  block_size = (_BLOCK_SIZE if settings.block_size is None
                else settings.block_size)
  b, p, _, max_len = _validate(
      fns, params, prompt_tokens, prompt_mask, max_new_tokens=max_new_tokens,
      sampling=sampling, end_ids=end_ids, num_samples=num_samples,
      block_size=block_size, processors=processors, pad_id=pad_id,
      max_len=settings.max_len, vocab_size=vocab_size)
  processor_params = _check_params_tuple("processor_params", processor_params,
                                         processors)
  sampling_params = _check_params_tuple("sampling_params", sampling_params,
                                        sampling.processors)
  static = _resolve(fns, settings, int(num_samples), int(block_size))
  share = static.share_prompt
  cache = fns.init_cache(b * num_samples,
                         _decode_slots(p, max_len, share, _page(fns, share)),
                         dtype=settings.cache_dtype)
  out, _ = _sample_jit(
      params, jnp.asarray(prompt_tokens), jnp.asarray(prompt_mask), rng,
      cache, processor_params, sampling_params, fns=fns,
      max_new_tokens=int(max_new_tokens), sampling=sampling,
      processors=processors, end_ids=end_ids, num_samples=int(num_samples),
      pad_id=int(pad_id), settings=static)
  return out


def sample_traced(fns, params, prompt_tokens: Array, prompt_mask: Array,
                  rng: Array, *, max_new_tokens: int,
                  sampling: SamplingMethod = proc_lib.SamplingMethod(),
                  end_ids: Sequence[int] = (), num_samples: int = 1,
                  processors: Sequence[LogitsProcessor] = (),
                  processor_params: Sequence[Any] | None = None,
                  sampling_params: Sequence[Any] | None = None,
                  pad_id: int = 0, settings: DecodeSettings | None = None,
                  **deprecated: Any) -> SampleOutput:
  """:func:`sample` as a traceable function: call it inside ``jit``/``scan``.

  The same program as :func:`sample` (prefill, fan-out, KV-cache decode)
  without the host-side checks, so it can run on traced prompts, e.g. once
  per turn inside the ``lax.scan`` of a multi-turn rollout. With the same
  arguments and key it returns exactly :func:`sample`'s outputs (tested;
  bit for bit when the processor parameters are traced values, as
  :func:`sample` passes them: constants let XLA fold, e.g., the division by
  a temperature, which can change the last bit of logp).
  The caller is responsible for what :func:`sample` validates: integer
  prompts [B, P] of in-vocabulary ids with at least one real token per row,
  ``max_new_tokens`` > 0, and a ``max_len`` (default P + N − 1) that holds
  the prompt and the new tokens.

  Args:
    fns, params, prompt_tokens, prompt_mask, rng, max_new_tokens, sampling,
      end_ids, num_samples, processors, pad_id: as in :func:`sample`
      (static: everything but the params, the prompts, the key and the
      processor parameters).
    processor_params, sampling_params: as in :func:`sample`; default
      ``init()`` of each processor.
    settings: as in :func:`sample`, except that ``block_size`` None runs
      all decode steps in one block (the cheapest choice under an outer
      ``scan``).
    **deprecated: the settings as keyword arguments, as in :func:`sample`.

  Returns:
    A :class:`SampleOutput` with [B·num_samples, N] arrays.
  """
  settings = _decode_settings(settings, deprecated, "sample_traced")
  processors = tuple(processors)
  pp = (tuple(p.init() for p in processors) if processor_params is None
        else tuple(processor_params))
  sp = (sampling.init() if sampling_params is None
        else tuple(sampling_params))
  b, p = prompt_tokens.shape
  max_len = settings.max_len
  if max_len is None:
    max_len = p + int(max_new_tokens) - 1
  static = _resolve(fns, settings, int(num_samples),
                    max(int(max_new_tokens) - 1, 1))
  share = static.share_prompt
  # The barrier keeps XLA from specialising the decode on an all-zero cache,
  # so the compiled arithmetic (and the floats) equal :func:`sample`'s.
  cache = lax.optimization_barrier(
      fns.init_cache(b * int(num_samples),
                     _decode_slots(p, max_len, share, _page(fns, share)),
                     dtype=settings.cache_dtype))
  out, _ = _sample_impl(
      params, prompt_tokens.astype(jnp.int32), prompt_mask.astype(bool), rng,
      cache, pp, sp, fns=fns, max_new_tokens=int(max_new_tokens),
      sampling=sampling, processors=processors,
      end_ids=tuple(int(e) for e in end_ids), num_samples=int(num_samples),
      pad_id=int(pad_id), settings=static)
  return out


# ----------------------------------------------------------------------------
# Continuing from an existing KV cache (multi-turn decoding).


class DecodeState(NamedTuple):
  """A KV cache being extended, and the logits of the next token.

  The cache holds every token fed so far (masked slots included: a row's
  positions count its real tokens only, as in a left-padded prompt), so a
  caller can alternate :func:`feed_tokens` (e.g. an environment's
  observation) and :func:`continue_traced` (the policy's next tokens)
  without ever re-running the prefix.
  """

  cache: Any  # the model's KV cache, [R, C] slots
  logits: Array  # [R, V] f32 next-token logits (after the last real token)
  pos: Array  # [R] int32 real tokens so far


class DecodeOutput(NamedTuple):
  """The tokens drawn by :func:`continue_traced` ([R, N])."""

  tokens: Array  # [R, N] int32, pad_id after the end token
  mask: Array  # [R, N] bool, up to and including the end token
  logp: Array  # [R, N] f32 log-prob under the processed distribution
  entropy: Array  # [R, N] f32 entropy of that distribution (nats)


def feed_tokens(fns, params, state: DecodeState, tokens: Array,
                mask: Array) -> DecodeState:
  """Writes tokens [R, S] (``mask``: real) into the cache (traceable).

  Slots [index, index + S) of the cache are written (masked ones marked
  invalid); the next logits are those after each row's last real token
  (unchanged for a row with none).
  """
  mask = mask.astype(bool)
  positions = state.pos[:, None] + decoder_lib.positions_from_mask(mask)
  h, cache = fns.hidden(params, tokens.astype(jnp.int32), positions, mask,
                        state.cache)
  s = tokens.shape[1]
  last = s - 1 - jnp.argmax(mask[:, ::-1], axis=1)  # [R]
  h_last = jnp.take_along_axis(h, last[:, None, None], axis=1)[:, 0]
  z = fns.logits(params, h_last).astype(jnp.float32)
  has = jnp.any(mask, axis=1)
  return DecodeState(cache, jnp.where(has[:, None], z, state.logits),
                     state.pos + mask.sum(1, dtype=jnp.int32))


def init_decode_state(fns, params, tokens: Array, mask: Array,
                      max_len: int, cache_dtype: Any = None) -> DecodeState:
  """A ``max_len``-slot cache holding the (padded) tokens [R, S] (traceable).

  Unlike :func:`sample`'s prefill, the real tokens need not be left-aligned:
  masked slots anywhere are skipped, positions count real tokens only.
  """
  r = tokens.shape[0]
  v = int(jax.eval_shape(fns.head, params).shape[-1])
  state = DecodeState(fns.init_cache(r, max_len, dtype=cache_dtype),
                      jnp.zeros((r, v), jnp.float32),
                      jnp.zeros((r,), jnp.int32))
  return feed_tokens(fns, params, state, tokens, mask)


def continue_traced(fns, params, state: DecodeState, rng: Array, *,
                    max_new_tokens: int,
                    sampling: SamplingMethod = proc_lib.SamplingMethod(),
                    processors: Sequence[LogitsProcessor] = (),
                    processor_params: Sequence[Any] | None = None,
                    sampling_params: Sequence[Any] | None = None,
                    end_ids: Sequence[int] = (), pad_id: int = 0,
                    write: Array | None = None
                    ) -> tuple[DecodeState, DecodeOutput]:
  """Draws N tokens per row after the cached context, feeding each back.

  The draws follow :func:`sample` exactly: the processors (``pos`` = the
  step 0..N−1), then ``draw_and_stats``, with the same per-row key
  schedule from ``rng`` (row i's stream depends only on (rng, i, step)).
  So from equal logits the tokens equal :func:`sample_traced`'s on the
  same key (tested), without re-running the prefix. Traceable; a row stops
  after an end token (later tokens ``pad_id``, masked).

  Args:
    fns, params: the model.
    state: the :class:`DecodeState` (its cache needs N free slots).
    rng: PRNG key.
    max_new_tokens: N > 0 (static).
    sampling, processors, processor_params, sampling_params, end_ids,
      pad_id: as in :func:`sample`.
    write: [R] bool, rows whose tokens are written into the cache
      (default all); the others sample too (fixed shapes) but leave their
      cache rows and positions unchanged.

  Returns:
    ``(state', DecodeOutput)``.
  """
  r = state.pos.shape[0]
  write = jnp.ones((r,), bool) if write is None else write.astype(bool)
  processors = tuple(processors)
  procs = processors + tuple(sampling.processors)
  pp = (tuple(p.init() for p in processors) if processor_params is None
        else tuple(processor_params))
  sp = (sampling.init() if sampling_params is None
        else tuple(sampling_params))
  params_all = pp + sp
  end = jnp.asarray(tuple(int(e) for e in end_ids) or (-1,), jnp.int32)
  rng_rows, rng_proc = jax.random.split(rng)
  row_keys = jax.random.split(rng_rows, r)

  def step(carry, j):
    ds, done = carry
    keys = jax.vmap(jax.random.fold_in, (0, None))(row_keys, j)
    tok, logp, ent, live, done = _emit(
        ds.logits, j, done, keys, None, procs=procs, proc_params=params_all,
        rng_proc=rng_proc, draw=sampling.draw, end=end, pad_id=pad_id)
    ds = feed_tokens(fns, params, ds, tok[:, None], (live & write)[:, None])
    return (ds, done), (tok, logp, ent, live)

  (state, _), (tok, logp, ent, live) = lax.scan(
      step, (state, jnp.zeros((r,), bool)),
      jnp.arange(int(max_new_tokens), dtype=jnp.int32))
  return state, DecodeOutput(tok.T, live.T, logp.T, ent.T)


def take_cache_rows(cache: Any, index: Array) -> Any:
  """The cache rows ``index`` [R'] (k/v row axis: fourth from the end).

  For :class:`~entropy_rl.models.KVCache`-like caches (``k``, ``v``,
  ``valid`` [R, T], a shared ``index``): copies whole rows, e.g. to branch
  a rollout from another row's prefix.
  """
  take = lambda x: jnp.take(x, index, axis=x.ndim - 4)
  cache = cache._replace(k=jax.tree.map(take, cache.k),
                         v=jax.tree.map(take, cache.v),
                         valid=jnp.take(cache.valid, index, axis=0))
  if getattr(cache, "lengths", None) is not None:
    cache = cache._replace(lengths=jnp.take(cache.lengths, index, axis=0))
  return cache


def make_sampler(fns, *, max_new_tokens: int,
                 sampling: SamplingMethod = proc_lib.SamplingMethod(),
                 end_ids: Sequence[int] = (), num_samples: int = 1,
                 processors: Sequence[LogitsProcessor] = (),
                 pad_id: int = 0, settings: DecodeSettings | None = None,
                 **deprecated: Any) -> Sampler:
  """A :class:`Sampler` whose ``generate`` is jitted with a donated cache.

  For training loops: ``cache = s.init_cache(B, P)`` once, then
  ``out, cache = s.generate(params, prompts, mask, rng, cache, ...)`` every
  step; the cache buffer is updated in place (donation) instead of being
  reallocated. Same arguments and outputs as :func:`sample` (``settings``
  and the deprecated keyword arguments included); shapes are checked on
  every call (host side, no device work), and ``generate`` exposes
  ``.lower(...)`` for ahead-of-time compilation.
  """
  settings = _decode_settings(settings, deprecated, "make_sampler")
  end_ids = tuple(int(e) for e in end_ids)
  processors = tuple(processors)
  proc_lib.check_method(sampling)
  max_len, cache_dtype = settings.max_len, settings.cache_dtype
  block_size = (_BLOCK_SIZE if settings.block_size is None
                else settings.block_size)
  static_settings = _resolve(fns, settings, num_samples, block_size)
  share = static_settings.share_prompt
  page = _page(fns, share)
  static = dict(fns=fns, max_new_tokens=max_new_tokens, sampling=sampling,
                processors=processors, end_ids=end_ids,
                num_samples=num_samples, pad_id=pad_id,
                settings=static_settings)
  jitted = jax.jit(functools.partial(_sample_impl, **static),
                   donate_argnames=("cache",))

  def cache_len(p):
    return max_len if max_len is not None else p + max_new_tokens - 1

  def init_cache(batch: int, prompt_len: int):
    cache = fns.init_cache(
        batch * num_samples,
        _decode_slots(prompt_len, cache_len(prompt_len), share, page),
        dtype=cache_dtype)
    if page > 1 and "lengths" in getattr(cache, "_fields", ()):
      # Declared as the program returns it: the donated round trip keeps
      # one structure (one compilation).
      cache = cache._replace(lengths=jnp.zeros((batch * num_samples,),
                                               jnp.int32))
    return cache

  def generate(params, prompt_tokens, prompt_mask, rng, cache,
               processor_params=None, sampling_params=None):
    b, p, _, ml = _validate(
        fns, params, prompt_tokens, prompt_mask,
        max_new_tokens=max_new_tokens, sampling=sampling, end_ids=end_ids,
        num_samples=num_samples, block_size=block_size,
        processors=processors, pad_id=pad_id, max_len=cache_len(
            prompt_tokens.shape[1]), vocab_size=None)
    want = (b * num_samples, _decode_slots(p, ml, share, page))
    if tuple(cache.valid.shape) != want:
      raise ValueError(f"cache has valid shape {tuple(cache.valid.shape)}, "
                       f"expected {want}: make it with init_cache({b}, {p})")
    return jitted(params, jnp.asarray(prompt_tokens),
                  jnp.asarray(prompt_mask), rng, cache,
                  _check_params_tuple("processor_params", processor_params,
                                      processors),
                  _check_params_tuple("sampling_params", sampling_params,
                                      sampling.processors))

  generate.lower = lambda *a, **k: jitted.lower(*a, **k)  # AOT compilation
  return Sampler(init_cache=init_cache, generate=generate)
