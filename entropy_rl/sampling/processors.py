"""Sampling methods: composable logits processors and the draw.

A sampling method is a chain of :class:`~entropy_rl.core.types.LogitsProcessor`
s (each ``apply(z [R, V] f32, params, *, rng, pos) -> z'``) followed by a draw
(categorical or argmax) from the processed logits. Every processor's knobs
live in its ``params`` (a pytree of arrays made by ``init()``), so a
controller can change them per call, or per row ([R] arrays), without a
recompile: AEPO drives ``temperature``, HAPO drives the adaptive-temperature
statistics. Truncations set removed logits to −inf; the sampler then samples
from, and reports ``logp``/``entropy`` of, ``softmax(z')`` of the final
processed logits: the *truncated, renormalised* distribution at the sampling
temperature (the behaviour policy, spec A6 (b)).

Processors and methods are values: frozen dataclasses whose fields are their
static settings (``truncate_top_k(5) == TruncateTopK(k=5)``), with
``init``/``apply`` as methods. Equal settings are equal and hash equal, so
the sampler, which takes them as static ``jit`` arguments, compiles once
for them however often they are rebuilt.

Pieces (processors):

* :func:`scale_by_temperature` z / T.
* :func:`truncate_top_k`, :func:`truncate_top_p`, :func:`truncate_min_p`.
* :func:`truncate_top_h`: Top-H entropy-bounded truncation (Baghaei et al.
  2025, https://arxiv.org/abs/2509.02510).
* :func:`hapo_temperature`: HAPO's per-token entropy-adaptive temperature
  (https://arxiv.org/abs/2509.16591), with :func:`hapo_sampler_stats`.
* :func:`em_inf`, :func:`em_inf_temperature`: EM-INF's decode-time entropy
  minimisation (Agarwal et al. 2025, https://arxiv.org/abs/2505.15134).

Methods (:class:`SamplingMethod`): :func:`greedy`, :func:`temperature`,
:func:`top_k`, :func:`top_p`, :func:`min_p`, :func:`top_h`, and
:func:`compose` to chain any of them with extra processors.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from entropy_rl import parallel
from entropy_rl.core import types
from entropy_rl.regularizers._hapo import entropy_score_stats

Array = types.Array
LogitsProcessor = types.LogitsProcessor
Params = Any  # a processor's params: a dict of scalar or [R] arrays

NEG_INF = -jnp.inf
_DRAWS = ("cdf", "gumbel", "argmax")
_F32 = jnp.float32


# ----------------------------------------------------------------------------
# Helpers.


def _col(x: Array | float) -> Array:
  """A scalar or per-row [R] parameter, made to broadcast against [R, V]."""
  x = jnp.asarray(x)
  return x[:, None] if x.ndim == 1 else x


def _f32(x: Any) -> Array:
  return jnp.asarray(x, _F32)


def _check_positive(name: str, value: Any, strict: bool = True) -> None:
  if isinstance(value, (int, float)) and not (
      value > 0 if strict else value >= 0):
    raise ValueError(f"{name} must be {'>' if strict else '>='} 0, got {value}")


def _check_fraction(name: str, value: Any, low_open: bool = False) -> None:
  if isinstance(value, (int, float)) and not (
      (0 < value if low_open else 0 <= value) and value <= 1):
    raise ValueError(f"{name} must be in {'(' if low_open else '['}0, 1], "
                     f"got {value}")


def log_normalizer(z: Array) -> tuple[Array, Array]:
  """(m, lse) of rows z [R, V] (−inf entries allowed, ≥ 1 finite per row)."""
  m = jnp.max(z, -1)  # [R]
  s = jnp.sum(jnp.exp(z - m[:, None]), -1)
  return m, m + jnp.log(s)


def entropy_of_logits(z: Array) -> Array:
  """H(softmax z) per row [R] in nats; −inf logits contribute nothing."""
  m = jnp.max(z, -1, keepdims=True)
  d = z - m  # [R, V], ≤ 0 or −inf
  e = jnp.exp(d)
  s = jnp.sum(e, -1)
  u = jnp.sum(jnp.where(e > 0, e * d, 0.0), -1)
  return jnp.log(s) - u / s


def _keep_at_least(z: Array, threshold: Array) -> Array:
  """z where z ≥ threshold [R] (broadcast), else −inf."""
  return jnp.where(z >= threshold[:, None], z, NEG_INF)


def _keep_top_ranks(z: Array, idx: Array, count: Array) -> Array:
  """z on the first ``count`` [R] of the sorted indices idx [R, n], else −inf.

  Rank-based, so tied logits are split by sort order (as in transformers'
  top-p), not all kept as a value threshold would.
  """
  rank_kept = jnp.arange(idx.shape[-1])[None] < count[:, None]  # [R, n]
  rows = jnp.arange(z.shape[0])[:, None]
  keep = jnp.zeros(z.shape, bool).at[rows, idx].set(rank_kept)
  return jnp.where(keep, z, NEG_INF)


# ----------------------------------------------------------------------------
# Temperature and the classic truncations.


@dataclasses.dataclass(frozen=True)
class ScaleByTemperature(LogitsProcessor):
  """The processor of :func:`scale_by_temperature`."""

  temperature: float = 1.0

  def init(self) -> Params:
    return {"temperature": _f32(self.temperature)}

  def apply(self, z, params, *, rng=None, pos=None):
    del rng, pos
    return z / _col(params["temperature"])

  def apply_vocab_major(self, zt, params, *, rng=None, pos=None):
    del rng, pos
    return zt / jnp.asarray(params["temperature"])  # [V, R] / ([R] or [])


def scale_by_temperature(temperature: float = 1.0) -> ScaleByTemperature:
  """z / T. ``params = {"temperature": T}``, a scalar or per-row [R] array.

  T must be > 0 (use :func:`greedy` for T → 0); a traced T is not checked.
  """
  _check_positive("temperature", temperature)
  return ScaleByTemperature(temperature)


@dataclasses.dataclass(frozen=True)
class TruncateTopK(LogitsProcessor):
  """The processor of :func:`truncate_top_k`."""

  k: int

  def init(self) -> Params:
    return {"k": jnp.asarray(self.k, jnp.int32)}

  def apply(self, z, params, *, rng=None, pos=None):
    del rng, pos
    kk = min(self.k, z.shape[-1])
    vals = lax.top_k(z, kk)[0]  # [R, kk] descending
    idx = jnp.clip(jnp.broadcast_to(jnp.asarray(params["k"], jnp.int32),
                                    z.shape[:1]), 1, kk) - 1
    return _keep_at_least(z, jnp.take_along_axis(vals, idx[:, None], -1)[:, 0])


def truncate_top_k(k: int) -> TruncateTopK:
  """Keeps the k largest logits of each row (ties at the k-th are all kept,
  like transformers' ``TopKLogitsWarper``).

  ``k`` (a Python int) is also the static bound of the per-call parameter
  ``params = {"k": k'}``, 1 ≤ k' ≤ k (scalar or [R]), so a controller can
  lower k without a recompile. k ≥ V keeps everything.
  """
  if not isinstance(k, int) or k < 1:
    raise ValueError(f"k must be a positive int, got {k!r}")
  return TruncateTopK(k)


@dataclasses.dataclass(frozen=True)
class TruncateTopP(LogitsProcessor):
  """The processor of :func:`truncate_top_p`."""

  top_p: float
  max_candidates: int | None = None

  def init(self) -> Params:
    return {"top_p": _f32(self.top_p)}

  def apply(self, z, params, *, rng=None, pos=None):
    del rng, pos
    v = z.shape[-1]
    kk = v if self.max_candidates is None else min(self.max_candidates, v)
    vals, idx = lax.top_k(z, kk)  # [R, kk] descending
    _, lse = log_normalizer(z)
    probs = jnp.exp(vals - lse[:, None])
    before = jnp.cumsum(probs, -1) - probs  # mass strictly above (j)
    p = jnp.broadcast_to(_f32(params["top_p"]), z.shape[:1])
    count = jnp.maximum(jnp.sum(before < p[:, None], -1), 1)  # [R]
    return jnp.where((p >= 1.0)[:, None], z, _keep_top_ranks(z, idx, count))


def truncate_top_p(top_p: float, max_candidates: int | None = None
                   ) -> TruncateTopP:
  """Nucleus truncation: the smallest top set with probability ≥ top_p.

  With p = softmax(z) sorted descending, token (j) is kept iff
  Σ_{i<j} p_(i) < top_p (so at least one token, and top_p = 1 keeps all);
  ties at the boundary are split by rank, like transformers.
  ``params = {"top_p": p}`` (scalar or [R]).

  Args:
    top_p: default nucleus mass in (0, 1].
    max_candidates: if set, only the ``max_candidates`` largest logits are
      sorted (``lax.top_k``) instead of the whole row: exact whenever the
      nucleus has at most that many tokens, otherwise it is cut there. A
      full sort of a 150k vocabulary per step is slow on accelerators.
  """
  _check_fraction("top_p", top_p, low_open=True)
  if max_candidates is not None and max_candidates < 1:
    raise ValueError(f"max_candidates must be >= 1, got {max_candidates}")
  return TruncateTopP(top_p, max_candidates)


@dataclasses.dataclass(frozen=True)
class TruncateMinP(LogitsProcessor):
  """The processor of :func:`truncate_min_p`."""

  min_p: float

  def init(self) -> Params:
    return {"min_p": _f32(self.min_p)}

  def apply(self, z, params, *, rng=None, pos=None):
    del rng, pos
    m = jnp.max(z, -1)
    return _keep_at_least(z, m + jnp.log(jnp.broadcast_to(
        _f32(params["min_p"]), m.shape)))


def truncate_min_p(min_p: float) -> TruncateMinP:
  """Keeps tokens with p ≥ min_p · p_max, i.e. z ≥ max z + log(min_p).

  ``params = {"min_p": m}`` (scalar or [R]); 0 keeps everything.
  """
  _check_fraction("min_p", min_p)
  return TruncateMinP(min_p)


def top_h_keep_count(probs_sorted: Array, alpha: Array) -> Array:
  """Top-H kept-set size j* from the top-N probabilities (descending).

  S_j = −Σ_{i≤j} p_(i) log₂ p_(i) (over the top N, of the *full* softmax),
  τ = α·S_N and j* = min{j ≥ 1 : S_{j+1} > τ}, i.e. max(1, #{j : S_j ≤ τ})
  (= N when no S_{j+1} exceeds τ, e.g. α = 1; the reference code crashes
  there). Zero probabilities contribute 0 (no NaN) and are never kept, so a
  one-hot row keeps 1.

  Args:
    probs_sorted: [R, N] descending probabilities.
    alpha: scalar or [R].

  Returns:
    [R] int32 in [1, N].
  """
  p = probs_sorted
  terms = jnp.where(p > 0, -p * jnp.log2(jnp.where(p > 0, p, 1.0)), 0.0)
  s = jnp.cumsum(terms, -1)  # [R, N]
  tau = jnp.broadcast_to(_f32(alpha), p.shape[:1]) * s[:, -1]
  within = (s <= tau[:, None]) & (p > 0)
  return jnp.maximum(jnp.sum(within, -1), 1).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class TruncateTopH(LogitsProcessor):
  """The processor of :func:`truncate_top_h`."""

  alpha: float = 0.4
  top_n: int = 100

  def init(self) -> Params:
    return {"alpha": _f32(self.alpha)}

  def apply(self, z, params, *, rng=None, pos=None):
    del rng, pos
    n = min(self.top_n, z.shape[-1])
    vals, idx = lax.top_k(z, n)  # [R, n]
    _, lse = log_normalizer(z)
    count = top_h_keep_count(jnp.exp(vals - lse[:, None]), params["alpha"])
    return _keep_top_ranks(z, idx, count)


def truncate_top_h(alpha: float = 0.4, top_n: int = 100) -> TruncateTopH:
  """Top-H: entropy-bounded truncation (spec A6).

  With p = softmax(z) (z already temperature-scaled by an earlier
  processor), keep the j* most probable tokens of :func:`top_h_keep_count`
  (by rank) and set the rest to −inf. ``params = {"alpha": α}`` (scalar or
  [R]); ``top_n`` is static.

  Spec cases: p = (½, ¼, ⅛, ⅛), N = 4 keeps 1, 2, 3 tokens for α = 0.4,
  0.6, 0.8.
  """
  _check_fraction("alpha", alpha)
  if not isinstance(top_n, int) or top_n < 1:
    raise ValueError(f"top_n must be a positive int, got {top_n!r}")
  return TruncateTopH(alpha, top_n)


# ----------------------------------------------------------------------------
# HAPO: entropy-adaptive temperature.

_HAPO_SIGNS = ("intended", "released")


def hapo_sampler_stats(entropy: Array, mask: Array, pivot: float = 0.8
                       ) -> dict[str, Array]:
  """HAPO's sampler statistics (q, s, 1/P, 1/N) from old-policy entropies.

  ``compute_entropy_h`` over the valid tokens: e = log(max(H, 1e-8));
  q = e_sorted[round(π_q (n−1))] (round half to even); h = (e − q)/s with
  s = sqrt(max(mean (e − q)², 1e-8)); P = max(max_{h>0} h, 1e-8),
  N = min(min_{h<0} h, −1e-8). Spec §7 (c); test: H = (0.05, 0.2, 1, 2, 0.5)
  gives q = 0, s = 1.582758, P = 0.437936, N = −1.892730.

  Args:
    entropy: [B, T] (or any shape) full-vocabulary entropies H ≥ 0.
    mask: same shape, 1 = valid token.
    pivot: π_q in [0, 1].

  Returns:
    ``{"q", "s", "inv_p", "inv_n"}`` float32 scalars, the params of
    :func:`hapo_temperature` (merge them into its params dict).
  """
  _check_fraction("pivot", pivot)
  stats = entropy_score_stats(
      jnp.asarray(entropy, _F32).reshape(-1),
      jnp.asarray(mask).reshape(-1), pivot)
  return stats._asdict()


def hapo_score(raw_entropy: Array, params: dict[str, Array],
               sign_mode: str = "intended") -> Array:
  """ĥ ∈ [−1, 1] of decode-time raw entropies (HAPO's patched sampler).

  e = log(max(H_raw, 1e-6)), h = (e − q)/(s + 1e-6);
  ĥ = h/P for h > 0; for h ≤ 0, ``intended``: h/|N| (ĥ ≤ 0), ``released``:
  h·(1/N) (the released code's sign: ĥ ≥ 0). Clamped to [−1, 1].
  """
  e = jnp.log(jnp.maximum(raw_entropy, 1e-6))
  h = (e - params["q"]) / (params["s"] + 1e-6)
  inv_n = params["inv_n"]
  neg = h * (jnp.abs(inv_n) if sign_mode == "intended" else inv_n)
  return jnp.clip(jnp.where(h > 0, h * params["inv_p"], neg), -1.0, 1.0)


@dataclasses.dataclass(frozen=True)
class HapoTemperature(LogitsProcessor):
  """The processor of :func:`hapo_temperature`."""

  tau: float = 0.05
  t0: float = 1.0
  sign_mode: str = "intended"

  def init(self) -> Params:
    return {"q": _f32(0.0), "s": _f32(1.0), "inv_p": _f32(0.0),
            "inv_n": _f32(0.0), "t0": _f32(self.t0), "tau": _f32(self.tau)}

  def apply(self, z, params, *, rng=None, pos=None):
    del rng, pos
    hh = hapo_score(entropy_of_logits(z), params, self.sign_mode)  # [R]
    t = params["t0"] * (1.0 + params["tau"] * hh)
    return z / t[:, None]


def hapo_temperature(tau: float = 0.05, t0: float = 1.0,
                     sign_mode: str = "intended") -> HapoTemperature:
  """HAPO's per-token adaptive temperature T_t = T₀ (1 + τ ĥ_t) (spec §7).

  ĥ_t is :func:`hapo_score` of the entropy of the *raw* logits of this step
  (before any temperature), normalised by the previous training step's
  statistics. Returns z / T_t: put it first and do not add another
  temperature. ``params = {"q", "s", "inv_p", "inv_n", "t0", "tau"}``; the
  defaults (q = 0, s = 1, 1/P = 1/N = 0) give ĥ = 0, i.e. T = T₀ (HAPO's
  first step, before any statistics). Fill the statistics with
  :func:`hapo_sampler_stats` or from the HAPO transform's state:
  ``{**proc.init(), **state.sampler_stats._asdict()}`` (same numbers).

  Args:
    tau: τ (``temperature_tau``, 0.05).
    t0: base temperature T₀.
    sign_mode: ``"intended"`` (ĥ ≤ 0 for low-entropy tokens) or
      ``"released"`` (the released code's h·(1/N), see spec §7 (c) 6).
  """
  _check_positive("t0", t0)
  if sign_mode not in _HAPO_SIGNS:
    raise ValueError(f"sign_mode must be one of {_HAPO_SIGNS}, got "
                     f"{sign_mode!r}")
  return HapoTemperature(tau, t0, sign_mode)


# ----------------------------------------------------------------------------
# EM-INF: decode-time entropy minimisation.


@dataclasses.dataclass(frozen=True)
class EmInf(LogitsProcessor):
  """The processor of :func:`em_inf`."""

  threshold: float = 0.3
  kl_weight: float = 0.001
  learning_rate: float = 0.1
  n_steps: int = 5

  def init(self) -> Params:
    return {"threshold": _f32(self.threshold),
            "kl_weight": _f32(self.kl_weight),
            "learning_rate": _f32(self.learning_rate)}

  def apply(self, z, params, *, rng=None, pos=None):
    del rng, pos
    if self.n_steps == 0:
      return z
    b1, b2, eps = 0.9, 0.999, 1e-8
    p = jax.nn.softmax(z, -1)
    lam, lr = _col(params["kl_weight"]), _col(params["learning_rate"])
    thr = jnp.broadcast_to(_f32(params["threshold"]), z.shape[:1])

    def body(k, carry):
      x, mu, nu, active = carry
      logq = jax.nn.log_softmax(x, -1)
      q = jnp.exp(logq)
      h = -jnp.sum(jnp.where(q > 0, q * logq, 0.0), -1)  # [R]
      active = active & (h >= thr)
      g = -q * (logq + h[:, None]) + lam * (q - p)
      g = jnp.where(jnp.isfinite(g), g, 0.0)
      mu2 = b1 * mu + (1 - b1) * g
      nu2 = b2 * nu + (1 - b2) * g * g
      t = (k + 1).astype(_F32)
      step = lr * (mu2 / (1 - b1 ** t)) / (
          jnp.sqrt(nu2 / (1 - b2 ** t)) + eps)
      a = active[:, None]
      return (jnp.where(a, x - step, x), jnp.where(a, mu2, mu),
              jnp.where(a, nu2, nu), active)

    zeros = jnp.zeros_like(z)
    x, *_ = lax.fori_loop(0, self.n_steps, body,
                          (z, zeros, zeros, jnp.ones(z.shape[:1], bool)))
    return x


def em_inf(threshold: float = 0.3, kl_weight: float = 0.001,
           learning_rate: float = 0.1, n_steps: int = 5) -> EmInf:
  """EM-INF logit adjustment: Adam steps on the logits (spec §13b).

  Starting from z' = z, up to ``n_steps`` times: if H(softmax z') < θ the
  row stops; otherwise one Adam step (β = (0.9, 0.999), ε = 1e-8, torch's
  defaults) on L(z') = H(softmax z') + λ·KL(p ‖ softmax z') with p =
  softmax z fixed. The gradient is analytic: with q = softmax z',
  ∂H/∂z' = −q (log q + H) and ∂KL/∂z' = q − p. Rows are independent (the
  reference runs one sequence; with a batch its stop test and ``batchmean``
  couple rows). ``n_steps = 0`` or θ above H(p) leaves z unchanged.
  Returns the adjusted logits; put temperature / truncation after it.

  ``params = {"threshold": θ, "kl_weight": λ, "learning_rate": η}``; the
  defaults are the reference function's (θ 0.3, λ 0.001, η 0.1, 5 steps;
  the paper's scripts use λ 0.05, 3 steps and T = 0.1).
  """
  if not isinstance(n_steps, int) or n_steps < 0:
    raise ValueError(f"n_steps must be an int >= 0, got {n_steps!r}")
  _check_positive("learning_rate", learning_rate, strict=False)
  _check_positive("kl_weight", kl_weight, strict=False)
  return EmInf(threshold, kl_weight, learning_rate, n_steps)


@dataclasses.dataclass(frozen=True)
class EmInfTemperature(LogitsProcessor):
  """The processor of :func:`em_inf_temperature`."""

  target_ratio: float = 0.2
  t_min: float = 0.01
  t_max: float = 1.0
  tol: float = 0.1
  max_iter: int = 100
  target_threshold: float = 1e-6

  def init(self) -> Params:
    return {"target_ratio": _f32(self.target_ratio),
            "t_min": _f32(self.t_min), "t_max": _f32(self.t_max),
            "tol": _f32(self.tol)}

  def apply(self, z, params, *, rng=None, pos=None):
    del rng, pos
    r = z.shape[0]
    bc = lambda x: jnp.broadcast_to(_f32(x), (r,))  # noqa: E731
    h0 = entropy_of_logits(z)
    target = jnp.maximum(self.target_threshold,
                         bc(params["target_ratio"]) * h0)
    tol_ = bc(params["tol"])

    def cond(c):
      i, _, _, _, done = c
      return (i < self.max_iter) & ~jnp.all(done)

    def body(c):
      i, lo, hi, t, done = c
      mid = 0.5 * (lo + hi)
      h = entropy_of_logits(z / mid[:, None])
      ok = jnp.abs(h - target) < tol_
      upd = ~done
      t = jnp.where(upd, mid, t)
      lo = jnp.where(upd & ~ok & (h < target), mid, lo)
      hi = jnp.where(upd & ~ok & (h >= target), mid, hi)
      return i + 1, lo, hi, t, done | ok

    start = h0 <= self.target_threshold  # nothing to do: T = 1
    _, _, _, t, _ = lax.while_loop(
        cond, body, (jnp.asarray(0, jnp.int32), bc(params["t_min"]),
                     bc(params["t_max"]), jnp.ones((r,), _F32), start))
    return z / t[:, None]


def em_inf_temperature(target_ratio: float = 0.2, t_min: float = 0.01,
                       t_max: float = 1.0, tol: float = 0.1,
                       max_iter: int = 100, target_threshold: float = 1e-6
                       ) -> EmInfTemperature:
  """EM-INF's adaptive-temperature variant: z / T with T by bisection.

  Per row (spec §13b, ``AdaptiveTemperatureProcessor``): H₀ = H(softmax z),
  target = max(target_threshold, target_ratio·H₀). If H₀ > target_threshold,
  bisect T on [t_min, t_max]: T = (lo + hi)/2; stop if |H(z/T) − target| <
  tol; else lo = T if H(z/T) < target, else hi = T; after ``max_iter``
  iterations the last midpoint is used. Otherwise T = 1. (The reference uses
  log(p + 1e-9) in H; this uses the exact entropy.)

  ``params = {"target_ratio", "t_min", "t_max", "tol"}``; ``max_iter`` and
  ``target_threshold`` are static.
  """
  _check_fraction("target_ratio", target_ratio)
  if not 0 < t_min < t_max:
    raise ValueError(f"need 0 < t_min < t_max, got {t_min}, {t_max}")
  if not isinstance(max_iter, int) or max_iter < 1:
    raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
  return EmInfTemperature(target_ratio, t_min, t_max, tol, max_iter,
                          target_threshold)


# ----------------------------------------------------------------------------
# Sampling methods.


@dataclasses.dataclass(frozen=True)
class SamplingMethod:
  """Processors applied in order, then a draw from softmax(z').

  A value, as its processors are: ``top_k(5) == top_k(5)`` (equal hash),
  so the sampler, which takes the method as a static ``jit`` argument,
  compiles once for equal settings.

  Attributes:
    processors: tuple of :class:`LogitsProcessor` (a list is made a
      tuple).
    draw: ``"cdf"`` (exact categorical by a two-level inverse CDF: one
      uniform per row, no [R, V] random numbers), ``"gumbel"`` (argmax of
      z' + Gumbel noise, ``jax.random.categorical``) or ``"argmax"``
      (greedy).
  """

  processors: tuple[LogitsProcessor, ...] = ()
  draw: str = "cdf"

  def __post_init__(self):
    object.__setattr__(self, "processors", tuple(self.processors))

  def init(self) -> tuple[Any, ...]:
    """Default params, one entry per processor."""
    return tuple(p.init() for p in self.processors)

  @property
  def greedy(self) -> bool:
    return self.draw == "argmax"


def greedy() -> SamplingMethod:
  """argmax of the raw logits (logp/entropy reported at temperature 1)."""
  return SamplingMethod((), "argmax")


def temperature(t: float = 1.0, *, draw: str = "cdf") -> SamplingMethod:
  """Categorical sampling from softmax(z / t)."""
  return SamplingMethod((scale_by_temperature(t),), draw)


def top_k(k: int, temperature: float = 1.0, *, draw: str = "cdf"
          ) -> SamplingMethod:
  """Temperature, then the k most likely tokens."""
  return SamplingMethod((scale_by_temperature(temperature),
                         truncate_top_k(k)), draw)


def top_p(p: float, temperature: float = 1.0, *,
          max_candidates: int | None = None, draw: str = "cdf"
          ) -> SamplingMethod:
  """Temperature, then nucleus truncation at mass p."""
  return SamplingMethod((scale_by_temperature(temperature),
                         truncate_top_p(p, max_candidates)), draw)


def min_p(p: float, temperature: float = 1.0, *, draw: str = "cdf"
          ) -> SamplingMethod:
  """Temperature, then min-p truncation."""
  return SamplingMethod((scale_by_temperature(temperature),
                         truncate_min_p(p)), draw)


def top_h(alpha: float = 0.4, top_n: int = 100, temperature: float = 1.0,
          *, draw: str = "cdf") -> SamplingMethod:
  """Temperature, then Top-H truncation (spec A6 defaults α 0.4, N 100)."""
  return SamplingMethod((scale_by_temperature(temperature),
                         truncate_top_h(alpha, top_n)), draw)


def compose(*parts: SamplingMethod | LogitsProcessor,
            draw: str | None = None) -> SamplingMethod:
  """Chains methods and processors in order into one method.

  The draw is ``draw`` if given, else the last method's (``"cdf"`` if only
  processors are given). E.g. ``compose(em_inf(), top_p(0.9, 0.7))``.
  """
  procs, last = [], "cdf"
  for part in parts:
    if isinstance(part, SamplingMethod):
      procs.extend(part.processors)
      last = part.draw
    elif isinstance(part, LogitsProcessor):
      procs.append(part)
    else:
      raise ValueError(f"compose takes SamplingMethods and LogitsProcessors, "
                       f"got {type(part).__name__}")
  return SamplingMethod(tuple(procs), draw or last)


def check_method(method: SamplingMethod) -> None:
  """Raises ValueError on a malformed method."""
  if not isinstance(method, SamplingMethod):
    raise ValueError(f"sampling must be a SamplingMethod, got "
                     f"{type(method).__name__}")
  if method.draw not in _DRAWS:
    raise ValueError(f"draw must be one of {_DRAWS}, got {method.draw!r}")
  for p in method.processors:
    if not isinstance(p, LogitsProcessor):
      raise ValueError(f"processors must be LogitsProcessors, got "
                       f"{type(p).__name__}")


def apply_processors(z: Array, processors: Sequence[LogitsProcessor],
                     params: Sequence[Any], *, rng: Array, pos: Array
                     ) -> Array:
  """Applies ``processors`` in order with their params (one key each)."""
  for i, (proc, prm) in enumerate(zip(processors, params)):
    z = proc.apply(z, prm, rng=jax.random.fold_in(rng, i), pos=pos)
  return z


def supports_vocab_major(processors: Sequence[LogitsProcessor]) -> bool:
  """Whether every processor also runs on vocabulary-major logits [V, R]
  (see `apply_processors_vocab_major`): true for none and for temperature
  scaling, false for the truncations."""
  return all(p.apply_vocab_major is not None for p in processors)


def apply_processors_vocab_major(zt: Array,
                                 processors: Sequence[LogitsProcessor],
                                 params: Sequence[Any], *, rng: Array,
                                 pos: Array) -> Array:
  """`apply_processors` on vocabulary-major logits zt [V, R]: equals
  ``apply_processors(zt.T, ...).T`` element for element. Every processor
  must pass `supports_vocab_major`."""
  for i, (proc, prm) in enumerate(zip(processors, params)):
    zt = proc.apply_vocab_major(zt, prm, rng=jax.random.fold_in(rng, i),
                                pos=pos)
  return zt


# ----------------------------------------------------------------------------
# The draw and the statistics of the distribution sampled from.


_LANES = 128  # TPU vector lanes (and a GPU-friendly width)


def _vocab_chunks(v: int, lanes: int = 1) -> tuple[int, int]:
  """(C, S) with C·S ≥ V, C ≈ S ≈ √V.

  With ``lanes`` = 1 an exact divisor of V is preferred (no padding: the
  CPU layout). With ``lanes`` > 1 the chunk width S is a multiple of it,
  V padded up to C·S: on a TPU the minor dimension of the [R, C, S] view
  is then lane-aligned (V = 151,936 = 128 · 1,187 gave S = 1,187 and a
  relayout copy in every decode step).
  """
  if lanes > 1 and v > lanes:
    s = max(lanes, round(math.sqrt(v) / lanes) * lanes)
    return -(-v // s), s
  root = max(1, int(math.isqrt(v)))
  for c in range(root, max(1, root // 4) - 1, -1):
    if v % c == 0:
      return c, v // c
  s = -(-v // root)
  return root, s


def cdf_uniforms(keys: Array) -> Array:
  """The uniforms [..., R] the ``cdf`` draw uses for keys [..., R] (typed
  keys, or raw uint32 key data [..., R, 2])."""
  f = lambda k: jax.random.uniform(k, (), _F32)  # noqa: E731
  typed = jnp.issubdtype(keys.dtype, jax.dtypes.prng_key)
  for _ in range(keys.ndim if typed else keys.ndim - 1):
    f = jax.vmap(f)
  return f(keys)


def draw_and_stats(z: Array, keys: Array | None, draw: str,
                   uniforms: Array | None = None
                   ) -> tuple[Array, Array, Array]:
  """Draws one token per row of softmax(z) and returns its statistics.

  Fused: one max pass and one pass of per-chunk sums (Σ e, Σ e·(z − m)) over
  z [R, V]; ``cdf`` then picks a chunk by the cumulative chunk masses and a
  token inside it by the cumulative masses of that chunk (one uniform per
  row; exact up to float32 rounding), so no [R, V] random numbers are made.

  On a TPU target (`entropy_rl.parallel.target_platform`) with 8 | V the
  statistics and the draw run on the transposed logits through
  `draw_and_stats_vocab_major` (one transposition instead of a padded
  [R, C, S] relayout and three passes; the same distribution, the
  statistics equal up to float32 rounding). Elsewhere (the CPU's exact
  numbers) as described above.

  Args:
    z: [R, V] float32 processed logits (−inf = removed; ≥ 1 finite per row).
    keys: [R] PRNG keys (ignored for ``argmax``, and for ``cdf`` when
      ``uniforms`` are given).
    draw: ``"cdf"``, ``"gumbel"`` or ``"argmax"``.
    uniforms: optional [R] float32 in [0, 1) for ``cdf``, precomputed as
      :func:`cdf_uniforms` (``keys``), e.g. for a block of steps at once.

  Returns:
    (tokens [R] int32, logp [R], entropy [R]) of softmax(z), in nats.
  """
  r, v = z.shape
  platform = parallel.target_platform()
  if platform == "tpu" and vocab_major_chunk(v) is not None:
    return draw_and_stats_vocab_major(z.T, keys, draw, uniforms)
  c, s = _vocab_chunks(v, 1 if platform == "cpu" else _LANES)
  return _draw_rows(z, keys, draw, uniforms, c, s)


def _draw_rows(z: Array, keys: Array | None, draw: str,
               uniforms: Array | None, c: int, s: int
               ) -> tuple[Array, Array, Array]:
  """:func:`draw_and_stats` over the [R, C, S] view of z [R, V] (padded
  with −inf up to C·S ≥ V)."""
  r, v = z.shape
  m = jnp.max(z, -1)  # [R]
  d = z - m[:, None]  # ≤ 0 or −inf
  if c * s != v:
    d = jnp.pad(d, ((0, 0), (0, c * s - v)), constant_values=NEG_INF)
  dc = d.reshape(r, c, s)
  e = jnp.exp(dc)
  sc = jnp.sum(e, -1)  # [R, C]
  uc = jnp.sum(jnp.where(e > 0, e * dc, 0.0), -1)  # [R, C]
  cs = jnp.cumsum(sc, -1)
  total = cs[:, -1]
  log_total = jnp.log(total)
  entropy = log_total - jnp.sum(uc, -1) / total

  if draw == "argmax":
    tok = jnp.argmax(z, -1).astype(jnp.int32)
  elif draw == "gumbel":
    tok = jax.vmap(lambda k, x: jax.random.categorical(k, x))(keys, z)
    tok = tok.astype(jnp.int32)
  elif draw == "cdf":
    u = cdf_uniforms(keys) if uniforms is None else uniforms  # [R]
    target = u * total
    ci = jnp.minimum(jnp.sum(cs <= target[:, None], -1), c - 1)  # [R]
    prev = jnp.where(ci > 0, jnp.take_along_axis(
        cs, jnp.maximum(ci - 1, 0)[:, None], -1)[:, 0], 0.0)
    mass = jnp.take_along_axis(sc, ci[:, None], -1)[:, 0]
    frac = jnp.clip((target - prev) / mass, 0.0, 1.0 - 2.0 ** -24)
    row = jnp.take_along_axis(dc, ci[:, None, None], 1)[:, 0]  # [R, S]
    ce = jnp.cumsum(jnp.exp(row), -1)  # recomputed: e [R, V] is not kept
    j = jnp.sum(ce <= (frac * ce[:, -1])[:, None], -1)
    tok = (ci * s + jnp.minimum(j, s - 1)).astype(jnp.int32)
  else:
    raise ValueError(f"draw must be one of {_DRAWS}, got {draw!r}")

  zt = jnp.take_along_axis(d.reshape(r, c * s), tok[:, None], -1)[:, 0]
  return tok, zt - log_total, entropy


def vocab_major_chunk(v: int) -> int | None:
  """S of the vocabulary-major draw's [C, S, R] view of logits [V, R].

  128 when it divides V, else the largest multiple of 8 below it that
  does; None when 8 does not divide V. On a TPU the (8, 128) tiles of a
  float32 [V, R] array are then also the tiles of [C, S, R] (S a multiple
  of the 8 sublanes): the view is free, no relayout. V = 151,936 = 128 ·
  1,187 gives (C, S) = (1187, 128).
  """
  for s in range(_LANES, 7, -8):
    if v % s == 0:
      return s
  return None


def _add_pairs(a, b):
  return a[0] + b[0], a[1] + b[1]


def draw_and_stats_vocab_major(zt: Array, keys: Array | None, draw: str,
                               uniforms: Array | None = None
                               ) -> tuple[Array, Array, Array]:
  """:func:`draw_and_stats` on vocabulary-major logits zt [V, R].

  Column r holds row r's logits, the layout in which a TPU computes
  ``E h`` for a tied embedding E [V, D] without a relayout, and in which
  the per-chunk statistics need none either: with chunks of S =
  `vocab_major_chunk` (V) consecutive tokens, C = V / S,

    m = max_v z_v,  d_v = z_v − m,
    s_c = Σ_{v ∈ c} e^{d_v},  u_c = Σ_{v ∈ c} e^{d_v} d_v   ([C, R]: one
      pass over zt, both sums in one variadic reduction),
    H = log Σ_c s_c − Σ_c u_c / Σ_c s_c,   log p(t) = d_t − log Σ_c s_c.

  ``cdf``: with u ~ U[0, 1) and the chunk masses' running sums S_c, chunk
  c* = #{c : S_c ≤ u · S_C}; then, with f = (u·S_C − S_{c*−1}) / s_{c*}, the
  token is the first one of chunk c* whose running in-chunk mass exceeds
  f times the chunk's (its S logits gathered, recomputed e^{d}). Exact
  categorical sampling up to float32 rounding, one uniform per row: the
  same inverse-CDF rule as :func:`draw_and_stats`, whose chunking differs
  (so the two agree on the token except where u·S_C falls within rounding
  of a boundary). ``argmax``: the first maximal token. ``gumbel``:
  ``jax.random.categorical`` of each row (as :func:`draw_and_stats`).

  Args:
    zt: [V, R] float32 processed logits, transposed (−inf = removed; ≥ 1
      finite per column). V must be a multiple of 8, else the rows go
      through :func:`draw_and_stats`' padded layout.
    keys, draw, uniforms: as in :func:`draw_and_stats`.

  Returns:
    (tokens [R] int32, logp [R], entropy [R]) of softmax(zt[:, r]).
  """
  v, r = zt.shape
  s = vocab_major_chunk(v)
  if draw not in _DRAWS:
    raise ValueError(f"draw must be one of {_DRAWS}, got {draw!r}")
  if s is None:
    c, s = _vocab_chunks(v, _LANES)
    return _draw_rows(zt.T, keys, draw, uniforms, c, s)
  c = v // s
  m = jnp.max(zt, 0)  # [R]
  d = zt.reshape(c, s, r) - m  # [C, S, R], ≤ 0 or −inf
  e = jnp.exp(d)
  sc, uc = lax.reduce((e, jnp.where(e > 0, e * d, 0.0)),
                      (_f32(0.0), _f32(0.0)), _add_pairs, (1,))  # [C, R]
  cs = jnp.cumsum(sc, 0)
  total = cs[-1]
  log_total = jnp.log(total)
  entropy = log_total - jnp.sum(uc, 0) / total

  if draw == "argmax":
    tok = jnp.argmax(zt, 0).astype(jnp.int32)
  elif draw == "gumbel":
    tok = jax.vmap(lambda k, x: jax.random.categorical(k, x))(keys, zt.T)
    tok = tok.astype(jnp.int32)
  else:
    u = cdf_uniforms(keys) if uniforms is None else uniforms  # [R]
    target = u * total
    ci = jnp.minimum(jnp.sum(cs <= target[None], 0), c - 1)  # [R]
    prev = jnp.where(ci > 0, jnp.take_along_axis(
        cs, jnp.maximum(ci - 1, 0)[None], 0)[0], 0.0)
    mass = jnp.take_along_axis(sc, ci[None], 0)[0]
    frac = jnp.clip((target - prev) / mass, 0.0, 1.0 - 2.0 ** -24)
    rows = ci[None] * s + jnp.arange(s, dtype=jnp.int32)[:, None]  # [S, R]
    chunk = jnp.take_along_axis(zt, rows, 0) - m  # [S, R]
    ce = jnp.cumsum(jnp.exp(chunk), 0)
    j = jnp.sum(ce <= (frac * ce[-1])[None], 0)
    tok = (ci * s + jnp.minimum(j, s - 1)).astype(jnp.int32)

  zt_tok = jnp.take_along_axis(zt, tok[None], 0)[0] - m
  return tok, zt_tok - log_total, entropy
