r"""Per-run metrics of a study and their mean ± 95% interval over seeds.

``experiments.study`` reads each (method, seed) run's ``metrics.jsonl``
(phases ``"rl"`` and ``"eval"``; a seed-vmapped run's ``key@seed<i>``
columns are split into one run per seed) and reduces it to scalars:

* ``entropy/final``: mean token entropy of the last ``final_window`` logged
  RL steps; ``entropy/auc``: trapezoid area under the entropy curve over
  the logged steps, divided by their span (a step-average);
  ``entropy/initial``: the first logged step's entropy;
  ``entropy/max_rel_dev``: ``max_t |H_t − H_0| / H_0``.
* ``steps_to_collapse``: the first step whose entropy is below
  ``collapse_fraction`` × the initial entropy (None: never).
* ``eval/accuracy`` (held-out, greedy), ``eval/pass@k``,
  ``eval/response_length``: the last eval; ``eval/accuracy/initial``: the
  first eval (step 0, before any RL update).
* ``response_length``, ``reward``, ``accuracy``, ``abs_entropy_change``
  (mean |realised ΔH| per step): means of the last ``final_window`` steps
  (``abs_entropy_change``: of all steps).

:func:`mean_ci` gives mean ± half-width of the two-sided 95% Student-t
interval (n = 1: no interval); :func:`t_quantile_975` needs no scipy.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import numpy as np

# t_{0.975, df} for df = 1..30 (two-sided 95%).
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060,
         2.2622, 2.2281, 2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199,
         2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639,
         2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)
_Z975 = 1.959964


def t_quantile_975(df: float) -> float:
  """The 0.975 quantile of Student's t with ``df`` degrees of freedom.

  Exact (4 decimals) for integer df ≤ 30; linear in 1/df between table
  entries; a Cornish-Fisher expansion beyond 30 (error < 1e-4).
  """
  if not df >= 1:
    raise ValueError(f"t quantile needs df >= 1, got {df}")
  if df <= 30:
    lo = int(math.floor(df))
    if lo == df or lo == 30:
      return _T975[lo - 1]
    w = (1 / lo - 1 / df) / (1 / lo - 1 / (lo + 1))
    return (1 - w) * _T975[lo - 1] + w * _T975[lo]
  z = _Z975
  return (z + (z ** 3 + z) / (4 * df) +
          (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2) +
          (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * df ** 3))


class Interval(NamedTuple):
  """A mean over seeds and the half-width of its 95% interval."""
  mean: float
  half: float | None  # None: n < 2
  n: int

  @property
  def lo(self) -> float:
    return self.mean - (self.half or 0.0)

  @property
  def hi(self) -> float:
    return self.mean + (self.half or 0.0)

  def format(self, digits: int = 3) -> str:
    if self.n == 0:
      return "—"
    half = "n/a" if self.half is None else f"{self.half:.{digits}f}"
    return f"{self.mean:.{digits}f} ± {half} (n={self.n})"


def mean_ci(values: Iterable[float | None]) -> Interval:
  """Mean ± 95% t half-width of the finite values (None / NaN dropped)."""
  v = np.asarray([x for x in values if x is not None and math.isfinite(x)],
                 np.float64)
  if v.size == 0:
    return Interval(float("nan"), None, 0)
  if v.size == 1:
    return Interval(float(v[0]), None, 1)
  half = t_quantile_975(v.size - 1) * float(v.std(ddof=1)) / math.sqrt(
      v.size)
  return Interval(float(v.mean()), half, int(v.size))


def diff_ci(a: Sequence[float], b: Sequence[float]) -> Interval:
  """Mean(a) − mean(b) ± the 95% Welch half-width (None if a side has < 2
  values)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  d = float(a.mean() - b.mean()) if a.size and b.size else float("nan")
  if a.size < 2 or b.size < 2:
    return Interval(d, None, int(min(a.size, b.size)))
  va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
  se = math.sqrt(va + vb)
  if se == 0:
    return Interval(d, 0.0, int(min(a.size, b.size)))
  df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
  return Interval(d, t_quantile_975(max(df, 1.0)) * se,
                  int(min(a.size, b.size)))


# ----------------------------------------------------------- per-run curves

_SEED_KEY = re.compile(r"^(.*)@seed(\d+)$")


def split_seeds(records: Sequence[Mapping[str, Any]]
                ) -> dict[int | None, list[dict[str, Any]]]:
  """Records of a seed-vmapped run, one list per seed index (``k@seed<i>``
  renamed ``k``); a run without such keys gives ``{None: records}``."""
  idx = sorted({int(m.group(2)) for r in records for k in r
                for m in [_SEED_KEY.match(k)] if m})
  if not idx:
    return {None: [dict(r) for r in records]}
  out = {}
  for i in idx:
    rows = []
    for r in records:
      row = {k: v for k, v in r.items() if not _SEED_KEY.match(k)}
      for k, v in r.items():
        m = _SEED_KEY.match(k)
        if m and int(m.group(2)) == i:
          row[m.group(1)] = v
      rows.append(row)
    out[i] = rows
  return out


def series(records: Sequence[Mapping[str, Any]], key: str,
           phase: str | None = "rl") -> tuple[np.ndarray, np.ndarray]:
  """Steps and finite values of ``key`` in ``phase`` (None: records
  without a phase, e.g. agent / classic runs); the last record of a step
  wins."""
  pts = {}
  for r in records:
    if r.get("phase") != phase:
      continue
    v = r.get(key)
    if isinstance(v, (int, float)) and math.isfinite(v):
      pts[int(r["step"])] = float(v)
  s = np.asarray(sorted(pts), np.float64)
  return s, np.asarray([pts[int(x)] for x in s], np.float64)


def auc(steps: np.ndarray, values: np.ndarray) -> float | None:
  """Trapezoid area under the curve divided by the step span (one point:
  its value; none: None)."""
  if len(steps) == 0:
    return None
  if len(steps) == 1 or steps[-1] == steps[0]:
    return float(values[0])
  area = float(np.sum((values[1:] + values[:-1]) * np.diff(steps)) / 2)
  return area / float(steps[-1] - steps[0])


def steps_to_collapse(steps: np.ndarray, entropy: np.ndarray,
                      fraction: float) -> float | None:
  """The first step with entropy < ``fraction`` × the first value (None:
  never, or no data)."""
  if len(steps) == 0:
    return None
  below = np.nonzero(entropy < fraction * entropy[0])[0]
  return float(steps[below[0]]) if below.size else None


def _tail_mean(values: np.ndarray, window: int) -> float | None:
  return float(np.mean(values[-max(window, 1):])) if len(values) else None


def _last(records, key: str, phase: str) -> float | None:
  _, y = series(records, key, phase)
  return float(y[-1]) if len(y) else None


def run_metrics(records: Sequence[Mapping[str, Any]], *,
                collapse_fraction: float = 0.1,
                final_window: int = 5) -> dict[str, float | None]:
  """The scalars of one seed's records (see the module docstring)."""
  out: dict[str, float | None] = {}
  s, h = series(records, "entropy")
  out["entropy/final"] = _tail_mean(h, final_window)
  out["entropy/auc"] = auc(s, h)
  out["entropy/initial"] = float(h[0]) if len(h) else None
  out["entropy/max_rel_dev"] = (
      float(np.max(np.abs(h - h[0])) / h[0]) if len(h) and h[0] > 0
      else None)
  out["steps_to_collapse"] = steps_to_collapse(s, h, collapse_fraction)
  out["steps"] = float(s[-1]) if len(s) else None
  for key in ("response_length", "reward", "accuracy"):
    out[key] = _tail_mean(series(records, key)[1], final_window)
  dh = series(records, "entropy_change")[1]
  out["abs_entropy_change"] = float(np.mean(np.abs(dh))) if len(dh) else None
  proxy = [k for r in records for k in r if k.endswith("entropy_proxy")]
  if proxy:
    y = series(records, proxy[0])[1]
    out["entropy_proxy/final_half"] = (
        float(np.mean(y[len(y) // 2:])) if len(y) else None)
  evals = sorted({k for r in records if r.get("phase") == "eval"
                  for k in r if k.startswith("eval/")})
  for k in evals:
    out[k] = _last(records, k, "eval")
  _, acc = series(records, "eval/accuracy", "eval")
  out["eval/accuracy/initial"] = float(acc[0]) if len(acc) else None
  return out


def pass_keys(metrics: Iterable[str]) -> list[str]:
  """``eval/pass@k`` keys sorted by k."""
  ks = [k for k in metrics if re.fullmatch(r"eval/pass@\d+", k)]
  return sorted(ks, key=lambda k: int(k.split("@")[1]))


def aggregate(per_seed: Mapping[int, Mapping[str, float | None]]
              ) -> dict[str, Interval]:
  """``{metric: Interval}`` over the seeds of one method
  (``steps_to_collapse`` over the seeds that collapsed; see
  :func:`never_count`)."""
  keys = []
  for m in per_seed.values():
    keys += [k for k in m if k not in keys]
  return {k: mean_ci([m.get(k) for m in per_seed.values()]) for k in keys}


def never_count(per_seed: Mapping[int, Mapping[str, float | None]]) -> int:
  """Seeds whose entropy never collapsed."""
  return sum(1 for m in per_seed.values()
             if m.get("steps_to_collapse") is None and
             m.get("entropy/initial") is not None)
