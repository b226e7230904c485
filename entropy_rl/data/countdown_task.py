"""Countdown: reach a target from given numbers with ``+ - * /``.

Prompt ``"3,5,7,9:24="`` (the numbers, then the target); a correct response
is an expression such as ``"3*5+9"`` that uses each given number at most
once (a number given twice may be used twice), only ``+ - * /``, parentheses
and spaces, and evaluates to the target. Every division must be exact (no
remainder, no division by zero) and every intermediate value must stay
within ``±(2**31 - 1)``. With ``use_all=True`` every number must be used
exactly once.

The Python checker (`reward`) evaluates innermost parentheses first and
then ``* /`` before ``+ -``, left to right; the on-device checker
(`countdown_jax_reward`) is a shunting-yard evaluator over token classes in
a `jax.lax.scan`. Tests hold them equal.
"""

from __future__ import annotations

import collections
import functools
import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from entropy_rl import tokenizers as tok_lib
from entropy_rl.data import char_classes as cc
from entropy_rl.data import types

_OPS = "+-*/"
_ALLOWED_RE = re.compile(r"[0-9+\-*/() ]*")
_TOKEN_RE = re.compile(r"[0-9]+|[-+*/()]")
_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}
_MAX_TRIES = 200
_MAX_CHARS = 10_000  # Longer responses are malformed (bounds the work).


class CountdownAnswer(NamedTuple):
  """What the checker needs: the target and the available numbers."""
  target: int
  numbers: tuple[int, ...]
  solution: str = ""  # One gold expression (for supervised warm-up).


class _Invalid(Exception):
  pass


# ---------------------------------------------------------------------------
# Generation.


def _fmt(node: Any) -> str:
  """Expression text with the fewest parentheses."""
  if isinstance(node, int):
    return str(node)
  op, left, right = node
  ls, rs = _fmt(left), _fmt(right)
  if _prec(left) < _PREC[op]:
    ls = f"({ls})"
  if _prec(right) < _PREC[op] or (_prec(right) == _PREC[op] and op in "-/"):
    rs = f"({rs})"
  return f"{ls}{op}{rs}"


def _prec(node: Any) -> int:
  return 3 if isinstance(node, int) else _PREC[node[0]]


def generate(rng: np.random.Generator, *, num_numbers: int = 4,
             min_number: int = 1, max_number: int = 20, ops: str = _OPS,
             min_target: int = 1, max_target: int = 999,
             use_all: bool = False, min_used: int = 2
             ) -> tuple[str, CountdownAnswer]:
  """One problem: ``("3,5,7,9:24=", CountdownAnswer(24, (3,5,7,9), ...))``.

  The target is the value of a random expression over a random subset of
  the numbers (all of them with ``use_all``), so every problem is solvable;
  that expression is the gold solution.
  """
  for _ in range(_MAX_TRIES):
    numbers = [int(x) for x in rng.integers(min_number, max_number + 1,
                                            num_numbers)]
    k = num_numbers if use_all else int(rng.integers(min_used,
                                                     num_numbers + 1))
    pool = [(numbers[i], numbers[i]) for i in rng.permutation(num_numbers)[:k]]
    ok = True
    while len(pool) > 1:
      i, j = (int(x) for x in rng.choice(len(pool), 2, replace=False))
      (a, na), (b, nb) = pool[i], pool[j]
      op = ops[int(rng.integers(0, len(ops)))]
      if op == "-" and a < b:
        (a, na), (b, nb) = (b, nb), (a, na)
      if op == "/":
        if b == 0 or a % b:
          (a, na), (b, nb) = (b, nb), (a, na)
        if b == 0 or a % b:
          ok = False
          break
      v = {"+": a + b, "-": a - b, "*": a * b,
           "/": a // b if b else 0}[op]
      if abs(v) > cc.INT_LIMIT:
        ok = False
        break
      pool = [p for t, p in enumerate(pool) if t not in (i, j)]
      pool.append((v, (op, na, nb)))
    target, tree = pool[0]
    if not ok or not min_target <= target <= max_target:
      continue
    if not use_all and target in numbers:
      continue  # Trivial: the answer is one of the numbers.
    prompt = ",".join(str(n) for n in numbers) + f":{target}="
    return prompt, CountdownAnswer(int(target), tuple(numbers), _fmt(tree))
  raise ValueError(
      f"countdown: no problem found with num_numbers={num_numbers}, "
      f"numbers in [{min_number}, {max_number}], ops={ops!r}, target in "
      f"[{min_target}, {max_target}]")


# ---------------------------------------------------------------------------
# Python checker.


def _apply(a: int, op: str, b: int) -> int:
  if op == "+":
    v = a + b
  elif op == "-":
    v = a - b
  elif op == "*":
    v = a * b
  else:
    if b == 0 or a % b:
      raise _Invalid("inexact division")
    v = a // b
  if abs(v) > cc.INT_LIMIT:
    raise _Invalid("overflow")
  return v


def _eval_flat(items: list[Any]) -> int:
  """``[v, op, v, op, v]`` without parentheses: ``* /`` first, then ``+ -``."""
  if len(items) % 2 == 0 or any(
      isinstance(x, str) for x in items[0::2]) or any(
          not isinstance(x, str) or x in "()" for x in items[1::2]):
    raise SyntaxError("malformed expression")
  vals, ops = [items[0]], []
  for op, x in zip(items[1::2], items[2::2]):
    if op in "*/":
      vals[-1] = _apply(vals[-1], op, x)
    else:
      ops.append(op)
      vals.append(x)
  total = vals[0]
  for op, x in zip(ops, vals[1:]):
    total = _apply(total, op, x)
  return total


def evaluate(text: str) -> tuple[int, list[int]]:
  """Value and number literals of an expression.

  Raises:
    SyntaxError: not an expression of the grammar (the response is
      malformed).
    _Invalid: an inexact division or an out-of-range value.
  """
  if len(text) > _MAX_CHARS:
    raise SyntaxError(f"longer than {_MAX_CHARS} characters")
  if not _ALLOWED_RE.fullmatch(text):
    raise SyntaxError("characters outside 0-9 + - * / ( ) space")
  # Spaces separate tokens: "1 2" is two numbers (a syntax error), not 12.
  raw = _TOKEN_RE.findall(text)
  if not raw:
    raise SyntaxError("empty")
  items: list[Any] = []
  literals = []
  for t in raw:
    if t[0].isdigit():
      digits = t.lstrip("0") or "0"
      if len(digits) > 10 or int(digits) > cc.INT_LIMIT:
        raise _Invalid("number out of range")
      items.append(int(digits))
      literals.append(int(digits))
    else:
      items.append(t)
  # Groups are evaluated innermost-first, left to right (the order of
  # their closing parentheses), in one pass: linear in the length.
  frames: list[list[Any]] = [[]]
  for t in items:
    if t == "(":
      frames.append([])
    elif t == ")":
      if len(frames) == 1:
        raise SyntaxError("unmatched ')'")
      inner = frames.pop()
      if not inner:
        raise SyntaxError("empty parentheses")
      frames[-1].append(_eval_flat(inner))
    else:
      frames[-1].append(t)
  if len(frames) > 1:
    raise SyntaxError("unclosed '('")
  items = frames[0]
  return _eval_flat(items), literals


def reward(response_text: str, answer: CountdownAnswer, *,
           use_all: bool = False) -> types.RewardResult:
  """Python checker: 1.0 iff the expression is valid and hits the target.

  Malformed text (empty, other characters, bad grammar) is a parse failure;
  a well-formed expression that uses unavailable numbers, divides inexactly
  or misses the target gets 0. Never raises.
  """
  if not isinstance(response_text, str):
    return types.FAILED
  try:
    value, literals = evaluate(response_text)
  except SyntaxError:
    return types.FAILED
  except _Invalid:
    return types.RewardResult(0.0, False, response_text[:256])
  except Exception:  # pylint: disable=broad-except
    return types.FAILED
  target, numbers = int(answer[0]), tuple(int(n) for n in answer[1])
  have, used = collections.Counter(numbers), collections.Counter(literals)
  fits = all(used[n] <= have[n] for n in used)
  if use_all:
    fits = fits and used == have
  return types.RewardResult(float(fits and value == target), False,
                            response_text[:256])


# ---------------------------------------------------------------------------
# On-device checker.

_LPAREN_OP = 5  # Operator codes on the stack: 1 + 2 - 3 * 4 / 5 (.
_NO_REDUCE = 99


def countdown_jax_reward(tokenizer: tok_lib.Tokenizer, *,
                         use_all: bool = False) -> types.JaxRewardFn:
  """The on-device twin of `reward` for a character-level ``tokenizer``.

  Returns:
    ``fn(prompt_tokens [B,P], response_tokens [B,T], response_mask [B,T],
    answer [B, 1+K] int32) -> [B] float32``, where ``answer[:, 0]`` is the
    target and ``answer[:, 1:]`` the numbers (``-1`` pads); jittable.
  """
  table = cc.char_class_table(tokenizer)

  def fn(prompt_tokens, response_tokens, response_mask, answer):
    del prompt_tokens
    cls = cc.token_classes(jnp.asarray(table), response_tokens)
    active = cc.active_positions(cls, response_mask)
    answer = jnp.asarray(answer, jnp.int32)
    ok = jax.vmap(lambda c, a, ans: _check_one(c, a, ans, use_all))(
        cls, active, answer)
    return ok.astype(jnp.float32)

  return fn


def _check_one(cls, active, answer, use_all):
  """Evaluates one row of token classes; True iff it reaches the target."""
  t = cls.shape[0]
  target, numbers = answer[0], answer[1:]
  prec_of = jnp.array([0, 1, 1, 2, 2, 0], jnp.int32)  # By op code.

  def apply_top(s):
    vals, vsp, ops, osp, bad = s["vals"], s["vsp"], s["ops"], s["osp"], s[
        "bad"]
    a, b = vals[jnp.maximum(vsp - 2, 0)], vals[jnp.maximum(vsp - 1, 0)]
    op = ops[jnp.maximum(osp - 1, 0)]
    r_add, ok_add = cc.checked_add(a, b)
    r_sub, ok_sub = cc.checked_add(a, -b)
    r_mul, ok_mul = cc.checked_mul(a, b)
    r_div, ok_div = cc.checked_div(a, b)
    idx = jnp.clip(op - 1, 0, 3)
    r = jnp.stack([r_add, r_sub, r_mul, r_div])[idx]
    ok = jnp.stack([ok_add, ok_sub, ok_mul, ok_div])[idx] & (vsp >= 2)
    vals = vals.at[jnp.maximum(vsp - 2, 0)].set(r)
    return dict(s, vals=vals, vsp=jnp.maximum(vsp - 1, 0), osp=osp - 1,
                bad=bad | ~ok)

  def reduce(s, stop_prec):
    def cond(s):
      top = s["ops"][jnp.maximum(s["osp"] - 1, 0)]
      return (s["osp"] > 0) & (top != _LPAREN_OP) & (prec_of[top] >= stop_prec)
    return jax.lax.while_loop(cond, apply_top, s)

  def finish_number(s, do):
    num = s["num"]
    free = (numbers == num) & ~s["used"]
    j = jnp.argmax(free)
    found = free[j]
    used = jnp.where(do & found, s["used"].at[j].set(True), s["used"])
    vals = jnp.where(do, s["vals"].at[s["vsp"]].set(num), s["vals"])
    return dict(s, used=used, vals=vals, vsp=s["vsp"] + do,
                in_num=s["in_num"] & ~do,
                expect=jnp.where(do, False, s["expect"]),
                bad=s["bad"] | (do & ~found))

  def step(s, x):
    c, on = x
    on = on & (c != cc.SKIP)
    is_digit = c < 10
    s = finish_number(s, on & s["in_num"] & ~is_digit)
    # Digits.
    d = jnp.where(is_digit, c, 0)
    cont = on & is_digit & s["in_num"]
    start = on & is_digit & ~s["in_num"]
    fits = s["num"] <= (cc.INT_LIMIT - d) // 10
    num = jnp.where(cont, s["num"] * 10 + d, jnp.where(start, d, s["num"]))
    bad = s["bad"] | (cont & ~fits) | (start & ~s["expect"])
    s = dict(s, num=num, in_num=s["in_num"] | start, bad=bad)
    # Operators and parentheses.
    is_op = on & (c >= cc.PLUS) & (c <= cc.DIV)
    is_l, is_r = on & (c == cc.LPAREN), on & (c == cc.RPAREN)
    op_code = jnp.where(is_op, c - cc.PLUS + 1, _LPAREN_OP)
    stop = jnp.where(is_op, prec_of[jnp.clip(op_code, 0, 5)],
                     jnp.where(is_r, 1, _NO_REDUCE))
    bad = s["bad"] | ((is_op | is_r) & s["expect"]) | (is_l & ~s["expect"])
    s = reduce(dict(s, bad=bad), stop)
    top = s["ops"][jnp.maximum(s["osp"] - 1, 0)]
    close_ok = (s["osp"] > 0) & (top == _LPAREN_OP)
    push = is_op | is_l
    ops = jnp.where(push, s["ops"].at[s["osp"]].set(op_code), s["ops"])
    osp = s["osp"] + push - (is_r & close_ok)
    expect = jnp.where(push, True, jnp.where(is_r, False, s["expect"]))
    other = on & ~is_digit & ~is_op & ~is_l & ~is_r & (c != cc.SPACE)
    bad = s["bad"] | (is_r & ~close_ok) | other
    return dict(s, ops=ops, osp=osp, expect=expect, bad=bad), None

  zero = jnp.int32(0)
  init = dict(vals=jnp.zeros((t + 1,), jnp.int32), vsp=zero,
              ops=jnp.zeros((t + 1,), jnp.int32), osp=zero, num=zero,
              in_num=jnp.bool_(False), expect=jnp.bool_(True),
              used=numbers < 0, bad=jnp.bool_(False))
  s, _ = jax.lax.scan(step, init, (cls, active))
  s = finish_number(s, s["in_num"])
  s = reduce(dict(s, bad=s["bad"] | s["expect"]), 1)
  bad = s["bad"] | (s["osp"] != 0) | (s["vsp"] != 1)
  ok = ~bad & (s["vals"][0] == target)
  if use_all:
    ok = ok & jnp.all(s["used"])
  return ok


# ---------------------------------------------------------------------------
# The task.


def countdown(num_numbers: int = 4, max_number: int = 20, *,
              min_number: int = 1, ops: str = _OPS, min_target: int = 1,
              max_target: int = 999, use_all: bool = False,
              min_used: int = 2,
              tokenizer: tok_lib.Tokenizer | None = None) -> types.Task:
  """Countdown with an exact checker (Python and JAX).

  Difficulty grows with ``num_numbers``, ``max_number`` and the target
  range. With the defaults prompts are at most 16 characters
  (``"12,5,17,3:235="``).

  Args:
    num_numbers: numbers given per problem (>= 2).
    max_number: numbers are drawn from ``[min_number, max_number]``.
    min_number: see ``max_number`` (>= 0).
    ops: operators the generator uses (the checker accepts all four).
    min_target: smallest target.
    max_target: largest target.
    use_all: every number must be used exactly once.
    min_used: fewest numbers the generator's solution uses.
    tokenizer: tokenizer of the on-device checker (default `CharTokenizer`);
      if it is not character-level, ``jax_reward_fn`` is None.

  Returns:
    A `Task` named "countdown"; answers are `CountdownAnswer`s, encoded as
    int32 ``[1 + num_numbers]`` (target, then the numbers).
  """
  if num_numbers < 2:
    raise ValueError(f"num_numbers must be >= 2, got {num_numbers}")
  if not 0 <= min_number <= max_number or max_number > 10**6:
    raise ValueError(f"need 0 <= min_number <= max_number <= 1e6, got "
                     f"{min_number}, {max_number}")
  if not ops or any(o not in _OPS for o in ops):
    raise ValueError(f"ops must be a non-empty subset of {_OPS!r}, "
                     f"got {ops!r}")
  if not 2 <= min_used <= num_numbers:
    raise ValueError(f"min_used must be in [2, num_numbers], got {min_used}")
  if min_target > max_target:
    raise ValueError(f"min_target {min_target} > max_target {max_target}")
  tokenizer = tokenizer if tokenizer is not None else tok_lib.CharTokenizer()
  try:
    jax_fn = countdown_jax_reward(tokenizer, use_all=use_all)
  except ValueError:  # Not character-level: the Python checker only.
    jax_fn = None
  kw = dict(num_numbers=num_numbers, min_number=min_number,
            max_number=max_number, ops=ops, min_target=min_target,
            max_target=max_target, use_all=use_all, min_used=min_used)

  def encode_answer(answer):
    nums = list(answer[1]) + [-1] * (num_numbers - len(answer[1]))
    return np.asarray([answer[0]] + nums, np.int32)

  return types.Task(
      name="countdown", sample=lambda rng: generate(rng, **kw),
      reward_fn=functools.partial(reward, use_all=use_all),
      solution_fn=lambda prompt, answer: answer.solution,
      encode_answer=encode_answer,
      jax_reward_fn=jax_fn,
      make_jax_reward_fn=lambda tok: countdown_jax_reward(tok,
                                                          use_all=use_all),
      tokenizer=tokenizer, config=kw, reward_in_process=True)
