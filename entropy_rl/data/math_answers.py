"""Reading and checking free-form math answers (GSM8K / MATH style).

`extract_answer` finds the final answer in a model's response: the last
``\\boxed{...}`` (nested boxes unwrapped), else the text after the last
``####``, else (``mode="flexible"``) an "answer is ..." phrase or the last
number. `math_reward` compares it with the gold answer: exact numeric
equality first (integers, decimals, ``a/b``, ``\\frac{a}{b}``, thousands
separators; huge numbers compared as decimals, never converted to floats),
then ``math-verify`` where installed (symbolic equivalence). Both never
raise: unreadable output gets reward 0 and ``parse_failed=True``.

Answers that only a pathological expression would be (`too_complex`:
brackets nested deeper than 12, numeric power towers, exponents of 7 or
more digits, factorials of numbers of 5 or more digits) are not sent to the
symbolic checker: they score 0 in microseconds instead of costing sympy
seconds (towers of four powers too). Time bounds for the rest are
`entropy_rl.data.bounded`'s.
"""

from __future__ import annotations

import decimal
import fractions
import functools
import logging
import re
import threading
from typing import Any

from entropy_rl.data import types

_MAX_CHARS = 20_000       # Only the tail of longer responses is read.
_MAX_ANSWER_CHARS = 1_000  # Longer extracted answers are not math-verified.
_MAX_NUMBER_CHARS = 5_000  # Longer numbers are compared as strings.

_BOX_RE = re.compile(r"\\(?:boxed|fbox)")
_HASH_RE = re.compile(r"####")
_ANSWER_IS_RE = re.compile(
    r"(?:final answer|answer)\s*(?:is|:|=)\s*:?\s*([^\n]*)", re.IGNORECASE)
_NUMBER_RE = re.compile(r"-?[0-9][0-9,]*(?:\.[0-9]+)?(?:/[0-9]+)?")
_DEC_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_FRAC_RE = re.compile(r"([+-]?[0-9]+)/([0-9]+)")
_TEX_FRAC_RE = re.compile(r"(-?)\\[dt]?frac\{?([0-9]+)\}?\{?([0-9]+)\}?")


_BARE_RE = re.compile(r"[^\s$]+")

_MAX_DEPTH = 12  # Deeper nesting of ( [ { is not an answer.
# A number raised to a power that is itself a power: 9^{9^{9}}, 10^(10^10).
_TOWER_RE = re.compile(r"[0-9.]\s*[)}]*\s*(?:\^|\*\*)\s*[({]*\s*-?[0-9.]+"
                       r"\s*(?:\^|\*\*)")
_BIG_EXP_RE = re.compile(r"(?:\^|\*\*)\s*[({]*\s*[+-]?[0-9]{7}")
# The factorial of a 5+ digit number or of a power: 99999!, (10^{100})!.
_BIG_FACT_RE = re.compile(r"[0-9]{5}\s*[)}]*\s*!|(?:\^|\*\*)[0-9.{}()\s]*!")


def _brace_pairs(text: str) -> dict[int, int]:
  """Index of the matching ``}`` of every balanced ``{`` (one pass)."""
  pairs, stack = {}, []
  for i, ch in enumerate(text):
    if ch == "{":
      stack.append(i)
    elif ch == "}" and stack:
      pairs[stack.pop()] = i
  return pairs


def _boxed_content(text: str, start: int, pairs: dict[int, int]
                   ) -> tuple[str | None, int]:
  """Content of the box whose command starts at ``start``, and its end."""
  i = _BOX_RE.match(text, start).end()
  n = len(text)
  while i < n and text[i] == " ":
    i += 1
  if i >= n:
    return None, n
  if text[i] != "{":  # "\boxed 5": up to the next space or "$".
    m = _BARE_RE.match(text, i)
    return (m.group(0) if m else None), (m.end() if m else i)
  j = pairs.get(i)
  if j is None:
    return None, n  # Unbalanced.
  return text[i + 1:j], j + 1


def last_boxed(text: str) -> str | None:
  """Content of the last well-formed ``\\boxed{}``, nested boxes unwrapped."""
  starts = [m.start() for m in _BOX_RE.finditer(text)]
  pairs = _brace_pairs(text) if starts else {}
  # Take the last top-level box (boxes inside it start before its end),
  # then unwrap boxes that fill the whole content.
  best = None
  i = 0
  while i < len(starts):
    content, end = _boxed_content(text, starts[i], pairs)
    if content is not None:
      best = content
      while i < len(starts) and starts[i] < end:
        i += 1
      continue
    i += 1
  for _ in range(100):  # \boxed{\boxed{3}} -> 3.
    if best is None:
      break
    inner = best.strip()
    if not _BOX_RE.match(inner):
      break
    content, end = _boxed_content(inner, 0, _brace_pairs(inner))
    if content is None or inner[end:].strip():
      break
    best = content
  return None if best is None else best.strip()


def _clean(ans: str) -> str:
  ans = ans.strip()
  ans = re.sub(r"^\$+|\$+$", "", ans).strip()
  ans = re.sub(r"\\[!,;: ]", "", ans)
  ans = re.sub(r"\\text\{\s*([^{}]*)\}", r"\1", ans)
  ans = ans.rstrip(".").strip()
  return ans


_BARE_RE_ANSWER = re.compile(r"[\x21-\x7e]{1,100}")  # Printable ASCII.


def _looks_like_answer(s: str) -> bool:
  """One short printable word with a digit or letter and balanced braces."""
  if not _BARE_RE_ANSWER.fullmatch(s) or not re.search(r"[0-9A-Za-z]", s):
    return False
  depth = 0
  for ch in s:
    depth += (ch == "{") - (ch == "}")
    if depth < 0:
      return False
  return depth == 0


def extract_answer(text: Any, mode: str = "flexible") -> str | None:
  """The final answer in a response, or None if there is none.

  Order: the last top-level ``\\boxed{}`` (nested boxes unwrapped), the
  text after the last ``####``; then, in flexible mode, the last "answer
  is ..." / "answer: ..." phrase, the whole response if it is one short
  word (``"10^{400}"``), and the last number.

  Args:
    text: the response (anything; non-strings give None).
    mode: "strict" reads only ``\\boxed{}`` and ``#### ...``; "flexible"
      also "the answer is ..." and, last, the final number in the text.

  Returns:
    The answer string (stripped, ``$`` and trailing ``.`` removed), or None.
  """
  if mode not in ("strict", "flexible"):
    raise ValueError(f"mode must be 'strict' or 'flexible', got {mode!r}")
  if not isinstance(text, str) or not text.strip():
    return None
  text = text[-_MAX_CHARS:]
  boxed = last_boxed(text)
  if boxed is not None:
    boxed = _clean(boxed)
    return boxed or None
  hashes = [m.end() for m in _HASH_RE.finditer(text)]
  if hashes:
    rest = text[hashes[-1]:].lstrip("# ").split("\n", 1)[0]
    rest = _clean(rest)
    return rest or None
  if mode == "strict":
    return None
  found = _ANSWER_IS_RE.findall(text)
  if found:
    ans = _clean(found[-1])
    m = _NUMBER_RE.search(ans)
    if ans and m and len(m.group(0)) >= len(ans) - 2:
      return m.group(0)
    if ans:
      return ans
  bare = _clean(text)
  if _looks_like_answer(bare):
    return bare  # The whole response is the answer ("10^{400}", "x+1").
  numbers = _NUMBER_RE.findall(text)
  if numbers:
    return numbers[-1]
  return None


def extract_gold(answer_text: str) -> str:
  """The final answer of a gold solution (``#### N`` or ``\\boxed{}``)."""
  if not isinstance(answer_text, str):
    answer_text = str(answer_text)
  ans = extract_answer(answer_text, mode="strict")
  return ans if ans is not None else _clean(answer_text)


def parse_number(s: str) -> decimal.Decimal | fractions.Fraction | None:
  """An exact number from ``"1,234.5"``, ``"-3/4"``, ``"\\frac{3}{4}"``."""
  if not isinstance(s, str):
    return None
  s = s.strip().replace(",", "").replace("$", "").replace(" ", "")
  s = s.removesuffix("%").removesuffix(".")
  if not s or len(s) > _MAX_NUMBER_CHARS:
    return None
  if _DEC_RE.fullmatch(s):
    try:
      return decimal.Decimal(s)
    except decimal.InvalidOperation:
      return None
  m = _FRAC_RE.fullmatch(s) or _TEX_FRAC_RE.fullmatch(s)
  if m:
    groups = m.groups()
    if len(groups) == 3:
      num, den = int(groups[0] + groups[1]), int(groups[2])
    else:
      num, den = int(groups[0]), int(groups[1])
    if den == 0:
      return None
    return fractions.Fraction(num, den)
  return None


def numbers_equal(a: str, b: str) -> bool | None:
  """Exact numeric equality, or None if either side is not a number."""
  x, y = parse_number(a), parse_number(b)
  if x is None or y is None:
    return None
  if isinstance(x, decimal.Decimal) and isinstance(y, decimal.Decimal):
    return x == y
  # A fraction and a decimal: compare x * den == num exactly, staying in
  # Decimal arithmetic with enough precision for the operands.
  if isinstance(x, fractions.Fraction) and isinstance(y, fractions.Fraction):
    return x == y
  frac, dec = (x, y) if isinstance(x, fractions.Fraction) else (y, x)
  ctx = decimal.Context(prec=len(str(dec)) + len(str(frac.denominator)) + 10,
                        Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)
  return ctx.multiply(dec, decimal.Decimal(frac.denominator)) == (
      decimal.Decimal(frac.numerator))


@functools.lru_cache(maxsize=1)
def _math_verify():
  try:
    import math_verify  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return math_verify


def math_verify_available() -> bool:
  return _math_verify() is not None


def too_complex(answer: str) -> bool:
  """Whether an extracted answer is a pathological expression.

  True for brackets nested deeper than 12, a numeric power tower
  (``9^{9^{9}}``, ``10^{10^{10}}!``), any tower of four powers
  (``x^{x^{x^{x}}}``), an exponent of 7+ digits or the factorial of a
  5+ digit number or of a power: what no gold answer is, and what costs
  the symbolic checker seconds (the exact-number and string comparisons
  before it still apply).
  """
  depth = best = 0
  exponents = []  # Per open bracket: does it open an exponent?
  power_depth = 0  # Exponent groups we are in.
  after_caret = False
  for ch in answer:
    if ch in "([{":
      depth += 1
      best = max(best, depth)
      exponents.append(after_caret)
      power_depth += after_caret
    elif ch in ")]}":
      depth = max(0, depth - 1)
      if exponents:
        power_depth -= exponents.pop()
    elif ch == "^" and power_depth >= 2:
      return True  # A tower of 4 powers: x^{x^{x^{x}}}.
    after_caret = ch == "^" or (after_caret and ch == " ")
  if best > _MAX_DEPTH:
    return True
  return bool(_TOWER_RE.search(answer) or _BIG_EXP_RE.search(answer)
              or _BIG_FACT_RE.search(answer))


def _wrap(s: str) -> str:
  return s if "$" in s or "\\boxed" in s else f"${s}$"


@functools.lru_cache(maxsize=1024)
def _parse_gold(gold: str, main: bool) -> Any:
  """math-verify's parse of a gold answer (cached: a group's responses
  share it; the parsed expressions are not modified by ``verify``)."""
  kw = {} if main else dict(parsing_timeout=None)
  return _math_verify().parse(_wrap(gold), **kw)


def _verify(gold: str, pred: str) -> bool:
  mv = _math_verify()
  if mv is None or len(pred) > _MAX_ANSWER_CHARS or too_complex(pred):
    return False
  main = threading.current_thread() is threading.main_thread()
  kw = {} if main else dict(parsing_timeout=None)
  if not main:  # signal.alarm is main-thread only; silence the warning.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
  g = _parse_gold(gold, main)
  p = mv.parse(_wrap(pred), **kw)
  if not g or not p:
    return False
  vkw = {} if main else dict(timeout_seconds=None)
  return bool(mv.verify(g, p, **vkw))


def answers_match(pred: str, gold: str, *, use_math_verify: bool = True
                  ) -> bool:
  """Whether ``pred`` equals ``gold``: exact numbers, then math-verify."""
  try:
    same = numbers_equal(pred, gold)
    if same is not None:
      return same
    if _clean(pred) == _clean(gold):
      return True
    if use_math_verify:
      return _verify(gold, pred)
  except Exception:  # pylint: disable=broad-except
    return False
  return False


def math_reward(response_text: Any, gold: str, *, mode: str = "flexible",
                use_math_verify: bool = True) -> types.RewardResult:
  """1.0 iff the response's final answer equals ``gold``; never raises.

  Args:
    response_text: the model's response.
    gold: the gold final answer (e.g. ``"72"``, ``"\\frac{1}{2}"``).
    mode: extraction mode of `extract_answer`.
    use_math_verify: use ``math-verify`` (when installed) for answers that
      are not plain numbers; otherwise only exact numeric/string equality.

  Returns:
    `RewardResult`; ``parse_failed`` when no answer could be extracted.
  """
  try:
    pred = extract_answer(response_text, mode=mode)
  except Exception:  # pylint: disable=broad-except
    return types.FAILED
  if pred is None:
    return types.FAILED
  ok = answers_match(pred, str(gold), use_math_verify=use_math_verify)
  return types.RewardResult(float(ok), False, pred[:256])
