"""Multi-digit arithmetic: ``"12+7*3="`` -> ``"33"``, checked exactly.

The prompt is an integer expression followed by ``=``; the response must be
the integer value and nothing else (spaces around it are allowed), then the
end token. Operators follow the usual precedence; a division always divides
exactly (the generator picks a divisor of the running product). Answers and
all intermediate values stay within int32, so the on-device checker
`arithmetic_jax_reward` can parse the response tokens inside jit.
"""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from entropy_rl import tokenizers as tok_lib
from entropy_rl.data import char_classes as cc
from entropy_rl.data import types

_OPS = "+-*/"
_INT_RE = re.compile(r" *(-?)([0-9]+) *")
_MAX_TRIES = 1000


def _digits_range(num_digits: int | Sequence[int]) -> tuple[int, int]:
  if isinstance(num_digits, int):
    lo, hi = 1, num_digits
  else:
    lo, hi = (int(x) for x in num_digits)
  if not 1 <= lo <= hi <= 9:
    raise ValueError("num_digits must be an int or (min, max) within "
                     f"1..9, got {num_digits!r}")
  return lo, hi


def _operand(rng: np.random.Generator, lo: int, hi: int) -> int:
  d = int(rng.integers(lo, hi + 1))
  low = 0 if d == 1 else 10**(d - 1)
  return int(rng.integers(low, 10**d))


def evaluate(tokens: Sequence[Any]) -> int:
  """Value of ``[a, op, b, op, c, ...]`` with ``* /`` before ``+ -``."""
  terms, signs = [], ["+"]
  cur = tokens[0]
  for op, x in zip(tokens[1::2], tokens[2::2]):
    if op == "*":
      cur = cur * x
    elif op == "/":
      if x == 0 or cur % x:
        raise ValueError("inexact division")
      cur = cur // x
    else:
      terms.append(cur)
      signs.append(op)
      cur = x
  terms.append(cur)
  return sum(t if s == "+" else -t for s, t in zip(signs, terms))


def generate(rng: np.random.Generator, *, num_digits: int | Sequence[int] = 2,
             num_operands: int = 2, ops: str = "+-",
             allow_negative: bool = True) -> tuple[str, int]:
  """One problem: ``(prompt_text, answer)``, e.g. ``("12+7=", 19)``."""
  lo, hi = _digits_range(num_digits)
  for _ in range(_MAX_TRIES):
    op_seq = [ops[int(i)] for i in rng.integers(0, len(ops),
                                                num_operands - 1)]
    toks: list[Any] = [_operand(rng, lo, hi)]
    term = toks[0]
    ok = True
    for op in op_seq:
      if op == "/":
        x = _divisor(rng, term, lo, hi)
        if x is None:
          ok = False
          break
        term //= x
      else:
        x = _operand(rng, lo, hi)
        term = term * x if op == "*" else x
      toks += [op, x]
    if not ok:
      continue
    value = evaluate(toks)
    if abs(value) > cc.INT_LIMIT or (value < 0 and not allow_negative):
      continue
    return "".join(str(t) for t in toks) + "=", int(value)
  raise ValueError(
      f"arithmetic: could not generate a problem with num_digits="
      f"{num_digits}, num_operands={num_operands}, ops={ops!r}, "
      f"allow_negative={allow_negative}")


def _divisor(rng: np.random.Generator, value: int, lo: int, hi: int
             ) -> int | None:
  """A random divisor of ``value`` with ``lo..hi`` digits (any if 0)."""
  low, high = (0 if lo == 1 else 10**(lo - 1)), 10**hi - 1
  if value == 0:
    x = 0
    while x == 0:
      x = _operand(rng, lo, hi)
    return x
  v = abs(value)
  if v > cc.INT_LIMIT:
    return None
  r = np.arange(1, math.isqrt(v) + 1, dtype=np.int64)
  small = r[v % r == 0]
  divs = np.unique(np.concatenate([small, v // small]))
  divs = divs[(divs >= max(low, 1)) & (divs <= high)]
  if divs.size == 0:
    return None
  return int(divs[int(rng.integers(0, divs.size))])


def reward(response_text: str, answer: int) -> types.RewardResult:
  """Python checker: the response is exactly the integer ``answer``.

  ``" *-?[0-9]+ *"`` must match the whole text (ASCII digits and spaces
  only); anything else is a parse failure. Never raises, whatever the text
  (huge numbers are compared by their digits, not converted).
  """
  if not isinstance(response_text, str):
    return types.FAILED
  m = _INT_RE.fullmatch(response_text)
  if m is None:
    return types.FAILED
  sign, digits = m.group(1), m.group(2).lstrip("0") or "0"
  shown = (sign + digits) if len(digits) <= 64 else sign + digits[:64] + "..."
  if len(digits) > 12:  # Far outside int32: cannot equal the answer.
    return types.RewardResult(0.0, False, shown)
  value = -int(digits) if sign else int(digits)
  return types.RewardResult(float(value == int(answer)), False, shown)


def arithmetic_jax_reward(tokenizer: tok_lib.Tokenizer) -> types.JaxRewardFn:
  """The on-device twin of `reward` for a character-level ``tokenizer``.

  Returns:
    ``fn(prompt_tokens [B,P], response_tokens [B,T] int, response_mask
    [B,T], answer [B] int32) -> [B] float32``, jittable and equal to
    ``reward(decode(trim_at_end(tokens, end_ids, mask)), answer).reward``.
  """
  table = cc.char_class_table(tokenizer)

  def fn(prompt_tokens, response_tokens, response_mask, answer):
    del prompt_tokens
    cls = cc.token_classes(jnp.asarray(table), response_tokens)
    active = cc.active_positions(cls, response_mask)
    ok, value = jax.vmap(_parse_int)(cls, active)
    answer = jnp.asarray(answer).reshape(value.shape).astype(jnp.int32)
    return (ok & (value == answer)).astype(jnp.float32)

  return fn


def _parse_int(cls: jax.Array, active: jax.Array
               ) -> tuple[jax.Array, jax.Array]:
  """Reads ``" *-?[0-9]+ *"`` from one row of classes: ``(ok, value)``."""
  # phase: 0 leading spaces, 1 after '-', 2 in digits, 3 trailing spaces.
  def step(carry, x):
    phase, neg, val, bad = carry
    c, on = x
    on = on & (c != cc.SKIP)
    is_digit = c < 10
    d = jnp.where(is_digit, c, 0)
    fits = val <= (cc.INT_LIMIT - d) // 10
    new_val = jnp.where(is_digit & (phase <= 2), val * 10 + d, val)
    new_phase = jnp.select(
        [is_digit, c == cc.MINUS, c == cc.SPACE],
        [jnp.int32(2), jnp.int32(1),
         jnp.where(phase >= 2, 3, phase)], phase)
    err = jnp.select(
        [is_digit, c == cc.MINUS, c == cc.SPACE],
        [(phase == 3) | ~fits, phase != 0, phase == 1], True)
    neg = jnp.where(on & (c == cc.MINUS), True, neg)
    return (jnp.where(on, new_phase, phase), neg,
            jnp.where(on & ~err, new_val, val), bad | (on & err)), None

  init = (jnp.int32(0), jnp.bool_(False), jnp.int32(0), jnp.bool_(False))
  (phase, neg, val, bad), _ = jax.lax.scan(step, init, (cls, active))
  ok = ~bad & (phase >= 2)
  return ok, jnp.where(neg, -val, val)


def arithmetic(num_digits: int | Sequence[int] = 2, num_operands: int = 2,
               ops: str = "+-", *, allow_negative: bool = True,
               tokenizer: tok_lib.Tokenizer | None = None) -> types.Task:
  """Multi-digit arithmetic with an exact checker (Python and JAX).

  Difficulty grows with ``num_digits`` (digits per operand, an int or a
  ``(min, max)`` range), ``num_operands`` and ``ops`` (a subset of
  ``"+-*/"``). With the defaults prompts look like ``"47+8="`` (at most 6
  characters) and answers like ``"55"``.

  Args:
    num_digits: digits per operand, ``d`` or ``(d_min, d_max)``, 1..9.
    num_operands: operands per expression (>= 2).
    ops: allowed operators.
    allow_negative: allow negative answers (``"3-7="`` -> ``"-4"``).
    tokenizer: tokenizer of the on-device checker (default `CharTokenizer`);
      if it is not character-level, ``jax_reward_fn`` is None.

  Returns:
    A `Task` named "arithmetic" with ``jax_reward_fn`` and ``encode_answer``
    (an int32 scalar).
  """
  _digits_range(num_digits)
  if num_operands < 2:
    raise ValueError(f"num_operands must be >= 2, got {num_operands}")
  if not ops or any(o not in _OPS for o in ops):
    raise ValueError(f"ops must be a non-empty subset of {_OPS!r}, "
                     f"got {ops!r}")
  tokenizer = tokenizer if tokenizer is not None else tok_lib.CharTokenizer()
  try:
    jax_fn = arithmetic_jax_reward(tokenizer)
  except ValueError:  # Not character-level: the Python checker only.
    jax_fn = None

  def sample(rng):
    return generate(rng, num_digits=num_digits, num_operands=num_operands,
                    ops=ops, allow_negative=allow_negative)

  return types.Task(
      name="arithmetic", sample=sample, reward_fn=reward,
      solution_fn=lambda prompt, answer: str(int(answer)),
      encode_answer=lambda answer: np.asarray(answer, np.int32),
      jax_reward_fn=jax_fn,
      make_jax_reward_fn=arithmetic_jax_reward, tokenizer=tokenizer,
      config=dict(num_digits=num_digits, num_operands=num_operands, ops=ops,
                  allow_negative=allow_negative),
      reward_in_process=True)
