r"""Papers' headline claims as checks over a study's per-seed metrics.

Each :class:`Claim` names the methods it needs, the paper's own words (a
short quote from its abstract), the paper's number where the abstract gives
one, the citation, and a predicate over :class:`StudyData` returning a
:class:`Result`: ``REPRODUCED``, ``NOT_REPRODUCED`` or ``INCONCLUSIVE``
(the relevant 95% intervals overlap, a seed count is 1, or a needed method
or metric is missing from the study -- the evidence says which), with the
numbers it used. ``experiments.study`` prints every verdict; the last two
are never hidden.

Comparisons ("A higher than B") follow one rule, :func:`compare`: the two
methods' 95% intervals over seeds must not overlap. Equivalence claims
("matches") use the 95% Welch interval of the difference against a margin
(non-inferiority). Thresholds live in ``settings`` (the study config's
``claims`` section), so a study states them.

To add a claim (e.g. an agent or classic method whose runs log other
metrics): write ``check(data, settings) -> Result`` using
:func:`compare` / :func:`missing`, and append a ``Claim`` to ``CLAIMS``.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np

from experiments import aggregate as agg


class Verdict(enum.Enum):
  REPRODUCED = "reproduced"
  NOT_REPRODUCED = "not reproduced"
  INCONCLUSIVE = "inconclusive"


class Result(NamedTuple):
  verdict: Verdict
  evidence: str
  # Why INCONCLUSIVE: "missing" (method / metric), "n=1" or "overlap".
  reason: str = ""


class StudyData(NamedTuple):
  """What a claim may read.

  Attributes:
    per_seed: ``{method: {seed: {metric: value}}}``
      (:func:`experiments.aggregate.run_metrics`).
    records: ``{method: {seed: metrics.jsonl records}}`` (curves).
    configs: ``{method: the run's config.json as a dict}``.
  """
  per_seed: Mapping[str, Mapping[int, Mapping[str, float | None]]]
  records: Mapping[str, Mapping[int, Sequence[Mapping[str, Any]]]] = {}
  configs: Mapping[str, Mapping[str, Any]] = {}


@dataclasses.dataclass(frozen=True)
class Claim:
  """One paper's qualitative headline claim and its check."""
  name: str
  methods: tuple[str, ...]
  statement: str  # what is checked, in our words
  quote: str  # the paper's words
  number: str  # the paper's number ("" when the abstract gives none)
  citation: str
  check: Callable[[StudyData, Mapping[str, Any]], Result]


# ------------------------------------------------------------------ helpers


def missing(data: StudyData, methods: Sequence[str],
            metric: str | None = None) -> Result | None:
  """INCONCLUSIVE naming what the study lacks, or None."""
  absent = [m for m in methods if not data.per_seed.get(m)]
  if absent:
    return Result(Verdict.INCONCLUSIVE,
                  f"method(s) {', '.join(absent)} not in the study",
                  "missing")
  if metric is not None:
    lacking = [m for m in methods
               if agg.mean_ci(v.get(metric) for v in
                              data.per_seed[m].values()).n == 0]
    if lacking:
      return Result(Verdict.INCONCLUSIVE,
                    f"metric {metric!r} missing for {', '.join(lacking)}",
                    "missing")
  return None


def interval(data: StudyData, method: str, metric: str) -> agg.Interval:
  return agg.mean_ci(v.get(metric) for v in data.per_seed[method].values())


def compare(data: StudyData, a: str, b: str, metric: str,
            higher: bool = True) -> Result:
  """``a``'s ``metric`` higher (``higher=False``: lower) than ``b``'s:
  REPRODUCED when the 95% intervals over seeds do not overlap and the order
  is as claimed, NOT_REPRODUCED when they do not overlap the other way,
  INCONCLUSIVE when they overlap or a side has one seed."""
  gone = missing(data, (a, b), metric)
  if gone:
    return gone
  ia, ib = interval(data, a, metric), interval(data, b, metric)
  ev = f"{metric}: {a} {ia.format()} vs {b} {ib.format()}"
  if ia.half is None or ib.half is None:
    return Result(Verdict.INCONCLUSIVE, ev + "; n=1: no interval", "n=1")
  if ia.lo > ib.hi or ia.hi < ib.lo:
    ok = (ia.mean > ib.mean) == higher
    return Result(Verdict.REPRODUCED if ok else Verdict.NOT_REPRODUCED, ev)
  return Result(Verdict.INCONCLUSIVE, ev + "; intervals overlap",
                "overlap")


def sign_of(iv: agg.Interval, ev: str, positive: bool = True) -> Result:
  """REPRODUCED if the interval lies above 0 (``positive=False``: below),
  NOT_REPRODUCED if it lies on the other side, else INCONCLUSIVE."""
  if iv.n == 0:
    return Result(Verdict.INCONCLUSIVE, ev + "; no data")
  if iv.half is None:
    return Result(Verdict.INCONCLUSIVE, ev + "; n=1: no interval")
  if iv.lo > 0 or iv.hi < 0:
    ok = (iv.lo > 0) == positive
    return Result(Verdict.REPRODUCED if ok else Verdict.NOT_REPRODUCED, ev)
  return Result(Verdict.INCONCLUSIVE, ev + "; interval contains 0")


def combine(parts: Sequence[Result]) -> Result:
  """All parts reproduced -> REPRODUCED; any not reproduced ->
  NOT_REPRODUCED; else INCONCLUSIVE."""
  ev = "; ".join(f"[{p.verdict.value}] {p.evidence}" for p in parts)
  vs = [p.verdict for p in parts]
  if Verdict.NOT_REPRODUCED in vs:
    return Result(Verdict.NOT_REPRODUCED, ev)
  if all(v is Verdict.REPRODUCED for v in vs):
    return Result(Verdict.REPRODUCED, ev)
  return Result(Verdict.INCONCLUSIVE, ev)


def _config_value(cfg: Mapping[str, Any], path: str) -> Any:
  for p in path.split("."):
    if not isinstance(cfg, Mapping) or p not in cfg:
      return None
    cfg = cfg[p]
  return cfg


def _max_pass_key(data: StudyData, methods: Sequence[str]) -> str | None:
  keys = [set(agg.pass_keys(k for v in data.per_seed.get(m, {}).values()
                            for k in v)) for m in methods]
  common = agg.pass_keys(set.intersection(*keys)) if keys else []
  return common[-1] if common else None


# ------------------------------------------------------------------- checks


def _cov_check(method: str):
  def check(data: StudyData, settings: Mapping[str, Any]) -> Result:
    del settings
    gone = missing(data, (method, "grpo"))
    if gone:
      return gone
    k = _max_pass_key(data, (method, "grpo"))
    parts = [compare(data, method, "grpo", "entropy/auc")]
    parts.append(compare(data, method, "grpo", k) if k else Result(
        Verdict.INCONCLUSIVE, "no eval/pass@k in both runs"))
    return combine(parts)
  return check


def _entropy_law(data: StudyData, settings: Mapping[str, Any]) -> Result:
  """Least squares of y = b − a·exp(H) over GRPO's steps (all seeds)."""
  y_key = settings.get("law_y", "reward")
  thr = float(settings.get("law_r2", 0.5))
  gone = missing(data, ("grpo",))
  if gone:
    return gone
  xs, ys, per_seed_a = [], [], []
  for recs in data.records.get("grpo", {}).values():
    h = dict(zip(*agg.series(recs, "entropy")))
    phase = "eval" if y_key.startswith("eval/") else "rl"
    s, y = agg.series(recs, y_key, phase)
    pts = [(math.exp(h[t]), v) for t, v in zip(s, y) if t in h]
    if len(pts) >= 3:
      x1, y1 = np.asarray(pts).T
      if np.ptp(x1) > 0:
        per_seed_a.append(-np.polyfit(x1, y1, 1)[0])
    xs += [p[0] for p in pts]
    ys += [p[1] for p in pts]
  if len(xs) < 3 or np.ptp(xs) == 0:
    return Result(Verdict.INCONCLUSIVE,
                  f"grpo: {len(xs)} (entropy, {y_key}) points, too few or "
                  "no entropy range to fit")
  x, y = np.asarray(xs), np.asarray(ys)
  slope, b = np.polyfit(x, y, 1)
  a = -slope
  res = y - (b - a * x)
  ss = float(np.sum((y - y.mean()) ** 2))
  r2 = 1.0 - float(np.sum(res ** 2)) / ss if ss > 0 else 0.0
  ia = agg.mean_ci(per_seed_a)
  ev = (f"grpo {y_key} = −a·e^H + b over {len(x)} steps: a={a:.4g}, "
        f"b={b:.4g}, R²={r2:.3f} (threshold {thr}); per-seed a "
        f"{ia.format(4)}")
  if ia.half is not None and ia.lo <= 0 <= ia.hi:
    return Result(Verdict.INCONCLUSIVE, ev + "; per-seed a interval "
                  "contains 0")
  if r2 >= thr and a > 0:
    return Result(Verdict.REPRODUCED, ev)
  return Result(Verdict.NOT_REPRODUCED, ev)


def _aepo_target(data: StudyData, settings: Mapping[str, Any]) -> Result:
  """Every ``aepo*`` method's entropy proxy (mean NLL of the samples, what
  the controller tracks), averaged over the second half of training, is
  within ±tolerance of its own target H*."""
  tol = float(settings.get("aepo_tolerance", 0.1))
  methods = [m for m in data.per_seed if m == "aepo" or
             m.startswith("aepo_")]
  if not methods:
    return Result(Verdict.INCONCLUSIVE, "no aepo method in the study")
  parts = []
  for m in methods:
    target = _config_value(data.configs.get(m, {}),
                           "regularizers.aepo.target_entropy")
    if target is None:
      parts.append(Result(Verdict.INCONCLUSIVE, f"{m}: no target_entropy "
                          "in its config.json"))
      continue
    key = "entropy_proxy/final_half"
    if interval(data, m, key).n == 0:
      parts.append(Result(Verdict.INCONCLUSIVE,
                          f"{m}: metric {key!r} (the logged entropy proxy) "
                          "missing"))
      continue
    dev = agg.mean_ci(abs(v[key] - target) for v in
                      data.per_seed[m].values() if v.get(key) is not None)
    iv = agg.Interval(tol - dev.mean, dev.half, dev.n)  # > 0: inside band
    parts.append(sign_of(iv, f"{m}: |proxy − H*={target}| "
                         f"{dev.format()} vs tolerance {tol}"))
  return combine(parts)


def _steer_band(data: StudyData, settings: Mapping[str, Any]) -> Result:
  band = float(settings.get("steer_band", 0.5))
  gone = missing(data, ("steer",), "entropy/max_rel_dev")
  if gone:
    return gone
  iv = interval(data, "steer", "entropy/max_rel_dev")
  return sign_of(agg.Interval(band - iv.mean, iv.half, iv.n),
                 f"steer: max_t |H_t − H_0|/H_0 {iv.format()} vs band "
                 f"{band}")


def _grpo_lambda(data: StudyData, settings: Mapping[str, Any]) -> Result:
  gone = missing(data, ("grpo_lambda", "grpo"))
  if gone:
    return gone
  length = settings.get("length_key", "eval/response_length")
  shorter = compare(data, "grpo_lambda", "grpo", length, higher=False)
  lower = compare(data, "grpo_lambda", "grpo", "eval/accuracy",
                  higher=False)
  # "At equal accuracy": clearly lower accuracy refutes it; overlapping
  # intervals (or clearly higher accuracy) satisfy it.
  if lower.verdict is Verdict.REPRODUCED:
    acc = Result(Verdict.NOT_REPRODUCED, lower.evidence + " (lower)")
  elif lower.verdict is Verdict.NOT_REPRODUCED or lower.reason == "overlap":
    acc = Result(Verdict.REPRODUCED, lower.evidence + " (not lower)")
  else:
    acc = lower
  return combine([shorter, acc])


def _improves_without_reward(method: str):
  def check(data: StudyData, settings: Mapping[str, Any]) -> Result:
    del settings
    gone = missing(data, (method,), "eval/accuracy")
    if gone:
      return gone
    d = [v["eval/accuracy"] - v["eval/accuracy/initial"]
         for v in data.per_seed[method].values()
         if v.get("eval/accuracy") is not None and
         v.get("eval/accuracy/initial") is not None]
    iv = agg.mean_ci(d)
    return sign_of(iv, f"{method}: final − initial held-out accuracy "
                   f"{iv.format()}")
  return check


def _forking(data: StudyData, settings: Mapping[str, Any]) -> Result:
  margin = float(settings.get("match_margin", 0.05))
  base = "dapo" if data.per_seed.get("dapo") else "grpo"
  gone = missing(data, ("forking", base), "eval/accuracy")
  if gone:
    return gone
  a = [v["eval/accuracy"] for v in data.per_seed["forking"].values()
       if v.get("eval/accuracy") is not None]
  b = [v["eval/accuracy"] for v in data.per_seed[base].values()
       if v.get("eval/accuracy") is not None]
  d = agg.diff_ci(a, b)
  ev = (f"eval/accuracy forking − {base} (full gradient) {d.format()} "
        f"(Welch 95%), non-inferiority margin {margin}")
  if d.half is None:
    return Result(Verdict.INCONCLUSIVE, ev + "; n=1: no interval")
  if d.lo >= -margin:
    return Result(Verdict.REPRODUCED, ev)
  if d.hi < -margin:
    return Result(Verdict.NOT_REPRODUCED, ev)
  return Result(Verdict.INCONCLUSIVE, ev + "; interval crosses −margin")


_CUI = ("Cui et al. 2025, The Entropy Mechanism of Reinforcement Learning "
        "for Reasoning Language Models, https://arxiv.org/abs/2505.22617")

CLAIMS: tuple[Claim, ...] = (
    Claim("clip_cov", ("clip_cov", "grpo"),
          "Clip-Cov keeps entropy higher than GRPO (area under the entropy "
          "curve) and reaches a higher pass@k at the largest k",
          "these methods encourage exploration, thus helping policy escape "
          "entropy collapse and achieve better downstream performance",
          "", _CUI, _cov_check("clip_cov")),
    Claim("kl_cov", ("kl_cov", "grpo"),
          "KL-Cov keeps entropy higher than GRPO (area under the entropy "
          "curve) and reaches a higher pass@k at the largest k",
          "these methods encourage exploration, thus helping policy escape "
          "entropy collapse and achieve better downstream performance",
          "", _CUI, _cov_check("kl_cov")),
    Claim("entropy_law", ("grpo",),
          "GRPO's reward vs entropy over training fits R = −a·e^H + b with "
          "a > 0 (R² ≥ claims.law_r2)",
          "we establish a transformation equation R=-a*e^H+b between "
          "entropy H and downstream performance R",
          "R = −a·e^H + b; ceiling at H = 0: R = −a + b", _CUI,
          _entropy_law),
    Claim("aepo", ("aepo",),
          "AEPO's entropy proxy settles within ±claims.aepo_tolerance of "
          "its target H* (each aepo* method, its own H*)",
          "stabilizes entropy at arbitrary target levels, effectively "
          "removing collapse in GRPO",
          "H* = 0.5 (script) / 0.75 (README)",
          "Wang et al. 2025, Arbitrary Entropy Policy Optimization, "
          "https://arxiv.org/abs/2510.08141", _aepo_target),
    Claim("steer", ("steer",),
          "STEER's entropy stays in a band: max relative deviation from "
          "its initial value below claims.steer_band",
          "STEER significantly mitigates entropy collapse, stabilizes "
          "entropy dynamics", "w ∈ [0.8, 1.2] (reference linear run)",
          "Hao et al. 2025, Rethinking Entropy Interventions in RLVR: An "
          "Entropy Change Perspective, https://arxiv.org/abs/2510.10150",
          _steer_band),
    Claim("grpo_lambda", ("grpo_lambda", "grpo"),
          "GRPO-λ gives shorter responses than GRPO without lower held-out "
          "accuracy",
          "improves average accuracy by 1.48% while reducing CoT sequence "
          "length by 47.3%", "+1.48% accuracy, −47.3% length",
          "Dai et al. 2025, Stable Reinforcement Learning for Efficient "
          "Reasoning, https://arxiv.org/abs/2505.18086", _grpo_lambda),
    Claim("rent", ("rent",),
          "RENT (negative entropy as the only reward) raises held-out "
          "accuracy above its starting point",
          "a fully unsupervised RL method that requires no external reward "
          "or ground-truth answers", "",
          "Prabhudesai et al. 2025, Maximizing Confidence Alone Improves "
          "Reasoning, https://arxiv.org/abs/2505.22660",
          _improves_without_reward("rent")),
    Claim("em_rl", ("em_rl",),
          "EM-RL (negative entropy as the only reward) raises held-out "
          "accuracy above its starting point",
          "this simple objective alone, without any labeled data, can "
          "substantially improve large language models' performance",
          "comparable or better than GRPO/RLOO trained on 60K labeled "
          "examples (Qwen-7B)",
          "Agarwal et al. 2025, The Unreasonable Effectiveness of Entropy "
          "Minimization in LLM Reasoning, https://arxiv.org/abs/2505.15134",
          _improves_without_reward("em_rl")),
    Claim("forking", ("forking", "grpo"),
          "80/20: gradients on the top-20% entropy tokens are not worse "
          "than full training (held-out accuracy; DAPO baseline when the "
          "study has one, else GRPO) by more than claims.match_margin",
          "utilizing only 20% of the tokens while maintaining performance "
          "comparable to full-gradient updates",
          "comparable on Qwen3-8B; +11.04 AIME'25 on Qwen3-32B",
          "Wang et al. 2025, Beyond the 80/20 Rule, "
          "https://arxiv.org/abs/2506.01939", _forking),
)


def check_all(data: StudyData, settings: Mapping[str, Any] | None = None,
              claims: Sequence[Claim] = CLAIMS
              ) -> list[tuple[Claim, Result]]:
  """Every claim with at least one of its methods in the study."""
  settings = settings or {}
  out = []
  for c in claims:
    if any(data.per_seed.get(m) for m in c.methods) or (
        c.name == "aepo" and any(m.startswith("aepo") for m in
                                 data.per_seed)):
      out.append((c, c.check(data, settings)))
  return out


def report(results: Sequence[tuple[Claim, Result]]) -> str:
  """Markdown: one block per claim, verdict first."""
  if not results:
    return "(no claim applies to the methods of this study)\n"
  lines = []
  for c, r in results:
    lines.append(f"- **{c.name}: {r.verdict.value.upper()}** — "
                 f"{c.statement}.")
    num = f" Paper's number: {c.number}." if c.number else ""
    lines.append(f"  Paper: “{c.quote}” ({c.citation}).{num}")
    lines.append(f"  Evidence: {r.evidence}")
  return "\n".join(lines) + "\n"
