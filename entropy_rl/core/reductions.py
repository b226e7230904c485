"""Vocabulary reductions: the statistics methods read beyond logp and entropy.

:func:`entropy_rl.core.token_stats.token_stats` computes, per token n with
logits z = h·W / τ, the log-partition, log-prob, entropy and max logit by an
online softmax (:data:`CORE`, the :class:`OnlineSoftmax` monoid below). A
method that reads more declares *vocabulary reductions* in its
:class:`~entropy_rl.core.types.Needs`; the statistics pass runs them next
to the core, so no [N, V] array is made:

* a :class:`~entropy_rl.core.types.MonoidReduction` is associative and runs
  chunk by chunk over the vocabulary (``init``/``chunk``/``combine``/
  ``finalize``);
* a :class:`~entropy_rl.core.types.RowReduction` (an order statistic) sees
  the full rows [tc, V] of one token chunk.

The reductions of the method catalogue:

* :func:`scaled_logp`: log-softmax(κ·z)[y] (ERA).
* :func:`topk_logits`, :func:`topk_logp`: streaming top-k, and ERA's
  top-k-renormalised log-prob.
* :func:`nucleus_entropy` (exact, bisection) and :func:`nucleus_entropy_topk`
  (associative approximation with an exactness flag): SIREN's top-p entropy.
* :func:`minp_logp`: Lp-Reg's min-p proxy log-prob of the target.

Each is a frozen dataclass whose fields are its settings (``ScaledLogp(
kappa=2.0)``): equal settings compare and hash equal, so two transforms that
declare the same reduction under one name merge (`entropy_rl.chain`) and a
step built from equal needs compiles once. No constructor cache is needed.

References:
  Online softmax: Milakov & Gimelshein 2018, https://arxiv.org/abs/1805.02867.
  SIREN: "Rethinking Entropy Regularization in Large Reasoning Models" (2025),
    https://arxiv.org/abs/2509.25133.
  Lp-Reg: Huang et al. 2025, https://arxiv.org/abs/2510.03222.
  ERA: "Entropy Regularizing Activation" (2025),
    https://arxiv.org/abs/2510.08549.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax.numpy as jnp
from jax import lax
from jax import ad_checkpoint

from entropy_rl.core import types

Array = types.Array
MonoidReduction = types.MonoidReduction
RowReduction = types.RowReduction
sg = lax.stop_gradient

NEG = -1e30  # finite identity of max / masked logit: exp(NEG − m) = 0, no NaN
RESIDUAL_NAME = "token_stats_residual"


# ----------------------------------------------------------------------------
# The core monoid: online softmax with entropy.


class SoftmaxCarry(NamedTuple):
  """Online-softmax state of one token chunk; every field is [n] float32.

  With a running maximum m (a constant shift, under stop-gradient)::

      s = Σ_v exp(z_v − m),   u = Σ_v exp(z_v − m)·(z_v − m),   zy = z_y

  so that lse = m + log s and H = log s − u / s. Keeping u relative to m
  avoids the cancellation of lse − E[z] when logits are large.
  """

  m: Array  # [n] running max (stop-gradient)
  s: Array  # [n] Σ exp(z − m)
  u: Array  # [n] Σ exp(z − m)·(z − m)
  zy: Array  # [n] target logit (0 until the chunk that holds it)


def _softmax_init(n: int) -> SoftmaxCarry:
  zero = jnp.zeros((n,), jnp.float32)
  return SoftmaxCarry(jnp.full((n,), NEG, jnp.float32), zero, zero, zero)


def _gather_target(z: Array, offset: Array | int, targets: Array) -> Array:
  """z[n, y_n − offset] where the target falls in this chunk, else 0."""
  local = targets - offset  # [n]
  width = z.shape[-1]
  inside = (local >= 0) & (local < width)
  zy = jnp.take_along_axis(z, jnp.clip(local, 0, width - 1)[:, None], -1)
  return jnp.where(inside, zy[:, 0], 0.0)


def _softmax_chunk(z: Array, offset: Array | int, targets: Array,
                   with_entropy: bool = True) -> SoftmaxCarry:
  m = sg(jnp.max(z, -1))  # [n]
  d = z - m[:, None]  # [n, c]
  e = jnp.exp(d)  # [n, c]
  u = jnp.sum(e * d, -1) if with_entropy else jnp.zeros_like(m)
  return SoftmaxCarry(m, jnp.sum(e, -1), u, _gather_target(z, offset, targets))


def _softmax_combine(a: SoftmaxCarry, b: SoftmaxCarry) -> SoftmaxCarry:
  m = jnp.maximum(a.m, b.m)  # both already stop-gradient
  fa, fb = jnp.exp(a.m - m), jnp.exp(b.m - m)
  # Re-reference u to the new max: Σ e^{z−m}(z−m) = f·(u + (m_old − m)·s).
  u = fa * (a.u + (a.m - m) * a.s) + fb * (b.u + (b.m - m) * b.s)
  return SoftmaxCarry(m, fa * a.s + fb * b.s, u, a.zy + b.zy)


def _softmax_finalize(c: SoftmaxCarry, core: Any = None) -> dict[str, Array]:
  del core
  log_s = jnp.log(c.s)
  lse = c.m + log_s
  return dict(logp=c.zy - lse, entropy=log_s - c.u / c.s, lse=lse,
              max_logit=c.m)


@dataclasses.dataclass(frozen=True)
class OnlineSoftmax(MonoidReduction):
  """The core monoid: logp, entropy, lse and max_logit of every token."""

  def init(self, n: int) -> SoftmaxCarry:
    return _softmax_init(n)

  def chunk(self, z: Array, offset: Array | int, targets: Array
            ) -> SoftmaxCarry:
    return _softmax_chunk(z, offset, targets)

  def combine(self, a: SoftmaxCarry, b: SoftmaxCarry) -> SoftmaxCarry:
    return _softmax_combine(a, b)

  def finalize(self, carry: SoftmaxCarry, core: Any = None
               ) -> dict[str, Array]:
    return _softmax_finalize(carry, core)


CORE = OnlineSoftmax()


# ----------------------------------------------------------------------------
# Helpers shared by reductions.


def saved_residual(x: Array) -> Array:
  """Marks a cheap per-token value to be saved for the backward pass.

  In row mode each token chunk runs under ``jax.checkpoint`` with a policy
  that saves only values named :data:`RESIDUAL_NAME`; a :class:`RowReduction`
  wraps an expensive, gradient-free intermediate (a threshold found by
  bisection, say) in this function so the backward pass reuses it instead of
  recomputing it.
  """
  return ad_checkpoint.checkpoint_name(x, RESIDUAL_NAME)


def masked_entropy(z: Array, kept: Array) -> Array:
  """Entropy of softmax(z) restricted to ``kept``; 0 where nothing is kept.

  With q_v = exp z_v / Σ_{u∈K} exp z_u on the kept set K::

      H_K = −Σ_{v∈K} q_v log q_v
          = log Σ_K e^{z−m} − Σ_K e^{z−m}(z−m) / Σ_K e^{z−m}

  The mask is a constant; the gradient flows through z on the kept entries.

  Args:
    z: [n, c] float32 logits.
    kept: [n, c] bool.

  Returns:
    [n] float32.
  """
  m = sg(jnp.max(jnp.where(kept, z, NEG), -1, keepdims=True))  # [n, 1]
  d = jnp.where(kept, z - m, 0.0)  # [n, c]
  e = jnp.where(kept, jnp.exp(d), 0.0)  # [n, c]
  s = jnp.sum(e, -1)  # [n]
  s_safe = jnp.where(s > 0, s, 1.0)  # empty set: H = log 1 − 0 = 0
  return jnp.log(s_safe) - jnp.sum(e * d, -1) / s_safe


def nucleus_threshold(z: Array, p_top: float, iters: int = 40) -> Array:
  """Logit threshold θ whose set {z > θ} is SIREN's top-p kept set.

  SIREN sorts p in descending order, takes the inclusive cumulative sum C and
  keeps the ranks j with C_j < p_top, so the token whose cumulative mass
  crosses p_top is *excluded*. That set is the largest upper set {z > θ} with
  mass(θ) = Σ_{z_v > θ} p_v < p_top. Bisection keeps the invariant
  mass(hi) < p_top ≤ mass(lo), starting from hi = max z and
  lo = max z − (log(V / (1 − p_top)) + 1), below which the total mass is at
  most (1 − p_top)/e. 40 halvings of that ≈ 15-nat bracket pass float32
  resolution, so the set equals the sort-based one except on exact ties.
  No sort and no gradient (the threshold is a constant).

  Args:
    z: [n, V] float32 logits.
    p_top: nucleus mass in (0, 1].
    iters: bisection steps.

  Returns:
    [n, 1] float32 threshold θ (``max z`` when p_max ≥ p_top: empty set).
  """
  z = sg(z)
  v = z.shape[-1]
  m = jnp.max(z, -1, keepdims=True)  # [n, 1]
  e = jnp.exp(z - m)  # [n, V]
  need = p_top * jnp.sum(e, -1, keepdims=True)  # [n, 1]
  width = math.log(v / max(1.0 - p_top, 1e-30)) + 1.0
  lo = jnp.maximum(m - width, jnp.min(z, -1, keepdims=True) - 1.0)
  hi = m

  def body(_, bracket):
    lo, hi = bracket
    mid = 0.5 * (lo + hi)
    mass = jnp.sum(jnp.where(z > mid, e, 0.0), -1, keepdims=True)
    ok = mass < need  # mid may become the new hi
    return jnp.where(ok, lo, mid), jnp.where(ok, mid, hi)

  _, hi = lax.fori_loop(0, iters, body, (lo, hi))
  return hi


def _pad_columns(z: Array, width: int, fill: float) -> Array:
  if z.shape[-1] >= width:
    return z
  return jnp.pad(z, ((0, 0), (0, width - z.shape[-1])), constant_values=fill)


def _topk_chunk(z: Array, offset: Array | int, k: int) -> tuple[Array, Array]:
  """Top-k values [n, k] and global indices of one chunk (NEG / −1 padded)."""
  vals, idx = lax.top_k(_pad_columns(z, k, NEG), k)
  idx = jnp.where(idx < z.shape[-1], idx + offset, -1)
  return vals, idx.astype(jnp.int32)


def _topk_combine(a: tuple[Array, Array], b: tuple[Array, Array]
                  ) -> tuple[Array, Array]:
  """Merges two top-k lists; ties keep ``a`` (lower vocabulary ids) first."""
  vals = jnp.concatenate([a[0], b[0]], -1)  # [n, 2k]
  idx = jnp.concatenate([a[1], b[1]], -1)
  top, pos = lax.top_k(vals, a[0].shape[-1])
  return top, jnp.take_along_axis(idx, pos, -1)


def _topk_init(n: int, k: int) -> tuple[Array, Array]:
  return (jnp.full((n, k), NEG, jnp.float32), jnp.full((n, k), -1, jnp.int32))


def _logsumexp(z: Array) -> Array:
  m = sg(jnp.max(z, -1, keepdims=True))
  return jnp.log(jnp.sum(jnp.exp(z - m), -1)) + m[:, 0]

# ----------------------------------------------------------------------------
# The catalogue's reductions: frozen dataclasses (fields = settings) and
# their validating constructors.


@dataclasses.dataclass(frozen=True)
class ScaledLogp(MonoidReduction):
  """The reduction of :func:`scaled_logp`: log softmax(κ·z)[y]."""

  kappa: float

  def init(self, n: int) -> SoftmaxCarry:
    return _softmax_init(n)

  def chunk(self, z: Array, offset: Array | int, targets: Array
            ) -> SoftmaxCarry:
    return _softmax_chunk(self.kappa * z, offset, targets,
                          with_entropy=False)

  def combine(self, a: SoftmaxCarry, b: SoftmaxCarry) -> SoftmaxCarry:
    return _softmax_combine(a, b)

  def finalize(self, carry: SoftmaxCarry, core: Any) -> Array:
    del core
    return _softmax_finalize(carry)["logp"]


def scaled_logp(kappa: float) -> ScaledLogp:
  """ERA's rescaled log-prob of the target, log softmax(κ·z)[y].

  ERA trains log π'(y) = log_softmax(z')[y] with z' = κ·z (κ > 1 sharpens,
  applied to low-entropy rows) or z' = z/κ (flattens, high-entropy rows), so
  an ERA transform declares ``scaled_logp(κ)`` and ``scaled_logp(1/κ)``.
  Associative: an online log-sum-exp of κ·z plus the gathered target logit.

  Args:
    kappa: the logit scale κ > 0 (applied after the temperature).

  Returns:
    A :class:`MonoidReduction` finalising to [n] float32.
  """
  if not kappa > 0:
    raise ValueError(f"scaled_logp: kappa must be > 0, got {kappa}")
  return ScaledLogp(kappa)


@dataclasses.dataclass(frozen=True)
class TopkLogits(MonoidReduction):
  """The reduction of :func:`topk_logits`: the k largest logits."""

  k: int
  with_indices: bool = False

  def init(self, n: int) -> tuple[Array, Array]:
    return _topk_init(n, self.k)

  def chunk(self, z: Array, offset: Array | int, targets: Array
            ) -> tuple[Array, Array]:
    del targets
    return _topk_chunk(z, offset, self.k)

  def combine(self, a: tuple[Array, Array], b: tuple[Array, Array]
              ) -> tuple[Array, Array]:
    return _topk_combine(a, b)

  def finalize(self, carry: tuple[Array, Array], core: Any) -> Any:
    del core
    if self.with_indices:
      return {"": carry[0], "indices": carry[1]}
    return carry[0]


def topk_logits(k: int, *, with_indices: bool = False) -> TopkLogits:
  """Streaming top-k logits of z, in descending order.

  Each vocabulary chunk contributes its own top-k; two lists merge by a top-k
  of their concatenation (associative). Values carry gradient. Where V < k
  the list is padded with NEG (index −1).

  Args:
    k: number of logits kept.
    with_indices: also return the vocabulary ids (key ``"<name>/indices"``).

  Returns:
    A :class:`MonoidReduction` finalising to [n, k] float32 values, or to
    ``{"": values, "indices": [n, k] int32}``.
  """
  if k < 1:
    raise ValueError(f"topk_logits: k must be >= 1, got {k}")
  return TopkLogits(k, with_indices)


@dataclasses.dataclass(frozen=True)
class TopkLogp(MonoidReduction):
  """The reduction of :func:`topk_logp`: ERA's top-k log-prob."""

  k: int
  kappa: float = 1.0
  fill: float = -1e4

  def init(self, n: int) -> tuple[Array, Array]:
    return _topk_init(n, self.k)[0], jnp.zeros((n,), jnp.float32)

  def chunk(self, z: Array, offset: Array | int, targets: Array
            ) -> tuple[Array, Array]:
    zz = self.kappa * z
    return (_topk_chunk(zz, offset, self.k)[0],
            _gather_target(zz, offset, targets))

  def combine(self, a: tuple[Array, Array], b: tuple[Array, Array]
              ) -> tuple[Array, Array]:
    vals = lax.top_k(jnp.concatenate([a[0], b[0]], -1), self.k)[0]
    return vals, a[1] + b[1]

  def finalize(self, carry: tuple[Array, Array], core: Any) -> Array:
    del core
    vals, zy = carry
    inside = zy >= vals[:, -1]
    return jnp.where(inside, zy, self.fill) - _logsumexp(vals)


def topk_logp(k: int, kappa: float = 1.0, fill: float = -1e4) -> TopkLogp:
  """ERA's top-k-renormalised log-prob of the target (``topk=True``).

  With z' = κ·z and K the k largest entries of z'::

      ℓ_K(y) = z'_y − log Σ_{v∈K} exp z'_v        if y ∈ K
      ℓ_K(y) = fill − log Σ_{v∈K} exp z'_v        otherwise

  i.e. the log-softmax of z' with the logits outside K set to ``fill``. With
  k ≥ V it is the full log-softmax. Associative (streaming top-k plus the
  gathered target logit); membership is ``z'_y ≥`` the k-th value.

  Args:
    k: size of the renormalisation set (ERA: 20).
    kappa: logit scale κ > 0.
    fill: logit given to tokens outside the top k.

  Returns:
    A :class:`MonoidReduction` finalising to [n] float32.
  """
  if k < 1 or not kappa > 0:
    raise ValueError(f"topk_logp: need k >= 1 and kappa > 0, got k={k}, "
                     f"kappa={kappa}")
  return TopkLogp(k, kappa, fill)


def _check_p_top(name: str, p_top: float) -> None:
  if not 0.0 < p_top <= 1.0:
    raise ValueError(f"{name}: p_top must be in (0, 1], got {p_top}")


@dataclasses.dataclass(frozen=True)
class NucleusEntropy(RowReduction):
  """The reduction of :func:`nucleus_entropy`: SIREN's top-p entropy."""

  p_top: float
  iters: int = 40

  def fn(self, z: Array, targets: Array, core: Any) -> Array:
    del targets, core
    theta = saved_residual(
        nucleus_threshold(z, self.p_top, self.iters))  # [n, 1]
    return masked_entropy(z, z > theta)


def nucleus_entropy(p_top: float, iters: int = 40) -> NucleusEntropy:
  """SIREN's top-p (nucleus) entropy, exact up to ties, without sorting.

  With p = softmax(z) sorted in descending order and C its inclusive
  cumulative sum, the kept set is K = {ranks j : C_j < p_top} (the token that
  crosses p_top is excluded; K = ∅ and Hᵖ = 0 when p_max ≥ p_top) and::

      Hᵖ = −Σ_{v∈K} q_v log q_v,   q = p·1[K] / Σ_K p

  K is found as {z > θ} by :func:`nucleus_threshold` (bisection, no
  gradient; θ is saved for the backward pass), and the gradient flows
  through the masked-softmax entropy. A row reduction: the pass gives each
  token chunk full rows [tc, V].

  Args:
    p_top: nucleus mass (SIREN: 0.8).
    iters: bisection steps.

  Returns:
    A :class:`RowReduction` giving [n] float32.
  """
  _check_p_top("nucleus_entropy", p_top)
  return NucleusEntropy(p_top, iters)


@dataclasses.dataclass(frozen=True)
class NucleusEntropyTopk(MonoidReduction):
  """The reduction of :func:`nucleus_entropy_topk`."""

  p_top: float
  k: int

  def init(self, n: int) -> tuple[Array, Array]:
    return _topk_init(n, self.k)

  def chunk(self, z: Array, offset: Array | int, targets: Array
            ) -> tuple[Array, Array]:
    del targets
    return _topk_chunk(z, offset, self.k)

  def combine(self, a: tuple[Array, Array], b: tuple[Array, Array]
              ) -> tuple[Array, Array]:
    return _topk_combine(a, b)

  def finalize(self, carry: tuple[Array, Array], core: Any
               ) -> dict[str, Array]:
    vals = carry[0]  # [n, k] descending
    p = jnp.exp(sg(vals - core["lse"][:, None]))  # [n, k]
    cum = jnp.cumsum(p, -1)
    kept = cum < self.p_top
    exact = (cum[:, -1] >= self.p_top) | (vals[:, -1] <= 0.5 * NEG)
    return {"": masked_entropy(vals, kept), "exact": exact}


def nucleus_entropy_topk(p_top: float, k: int) -> NucleusEntropyTopk:
  """Associative approximation of :func:`nucleus_entropy` from the top k.

  Streams the k largest logits, then applies SIREN's rule to them with the
  full-vocabulary lse (from the core statistics). The result is exact
  (up to ties) iff the top-k mass reaches p_top, or k ≥ V; otherwise the
  kept set is truncated to the top k, which is what SIREN's own code does
  with k = 10,000. Report the inexact fraction as a metric.

  Args:
    p_top: nucleus mass in (0, 1].
    k: number of logits streamed.

  Returns:
    A :class:`MonoidReduction` finalising to ``{"": Hᵖ [n] float32,
    "exact": [n] bool}``: keys ``"<name>"`` and ``"<name>/exact"``.
  """
  _check_p_top("nucleus_entropy_topk", p_top)
  if k < 1:
    raise ValueError(f"topk_logits: k must be >= 1, got {k}")
  return NucleusEntropyTopk(p_top, k)


@dataclasses.dataclass(frozen=True)
class MinpLogp(RowReduction):
  """The reduction of :func:`minp_logp`: Lp-Reg's min-p proxy log-prob."""

  kappa: float
  fill: float = -1e4
  relative: bool = True

  def fn(self, z: Array, targets: Array, core: Any) -> Array:
    ref = core["max_logit"] if self.relative else core["lse"]
    thr = sg(ref)[:, None] + math.log(self.kappa)  # [n, 1]
    zz = jnp.where(z >= thr, z, self.fill)  # [n, V]
    return _gather_target(zz, 0, targets) - _logsumexp(zz)


def minp_logp(kappa: float, fill: float = -1e4, relative: bool = True
              ) -> MinpLogp:
  """Lp-Reg's min-p proxy log-prob of the target.

  The proxy keeps v iff p_v ≥ κ·max_u p_u (``relative``; z_v ≥ max z + log κ)
  or p_v ≥ κ (absolute, Lp-Reg's ``regular_type="fixed"``;
  z_v ≥ lse + log κ), sets the other logits to ``fill`` and renormalises::

      ℓᵖ(y) = log_softmax(z̃)[y],   z̃_v = z_v if kept else fill

  The threshold is relative to the final max (or lse), so this is a row
  reduction. The mask is a constant; the value carries gradient through z
  (Lp-Reg itself uses it without gradient, from the old-policy pass).

  Args:
    kappa: min-p threshold κ in (0, 1] (Lp-Reg: 0.02).
    fill: logit given to filtered tokens.
    relative: threshold relative to p_max (default) or absolute.

  Returns:
    A :class:`RowReduction` giving [n] float32.
  """
  if not 0.0 < kappa <= 1.0:
    raise ValueError(f"minp_logp: kappa must be in (0, 1], got {kappa}")
  return MinpLogp(kappa, fill, relative)
