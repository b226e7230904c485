"""A reasoning-gym multi-step arithmetic task with a calculator tool.

A Python environment for :func:`entropy_rl.agents.python_rollout`. The
first observation is a reasoning-gym question (its ``metadata["expression"]``
when it has one, e.g. ``chain_sum``'s ``"15 - 43 - 75"``, as ``"<expr>=?"``).
Each turn the agent writes at most L characters ending with ``<eos>``:

* ``calc:<expr>`` calls the calculator: the observation is ``=<value>``
  (a safe evaluator: numbers, + − × ÷, parentheses, unary signs; exact
  rationals), or ``=?`` if the expression is invalid; reward 0;
* ``answer:<x>`` ends the episode with reward ``score_answer(x)``, the
  dataset's own exact scorer (1.0 for the right number; an answer that a
  scorer would evaluate as code scores 0 unread, see
  :func:`entropy_rl.data.rg_tasks.safe_score_answer`);
* anything else is malformed: observation ``?``, reward 0. Nothing raises.

The character alphabet is :data:`ALPHABET` (digits, operators and the
letters of ``calc`` and ``answer``); :func:`calculator_tokenizer` builds the
:class:`~entropy_rl.tokenizers.CharTokenizer`.
"""

from __future__ import annotations

import ast
import fractions
from typing import Any, Sequence

import numpy as np

from entropy_rl import tokenizers as tok_lib
from entropy_rl.agents import _envs as envs_lib
from entropy_rl.data import rg_tasks

ALPHABET = tok_lib.DEFAULT_CHARS + "acelnrsw"
CALL, ANSWER = "calc:", "answer:"
MAX_EXPR_CHARS = 64
MAX_ABS = 10 ** 12

_BINOPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
           ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b}


def calculator_tokenizer() -> tok_lib.CharTokenizer:
  """The character tokenizer of the task (``<pad>`` 0, ``<eos>`` 3)."""
  return tok_lib.CharTokenizer(ALPHABET)


def _value(node: ast.AST) -> fractions.Fraction:
  if isinstance(node, ast.Expression):
    return _value(node.body)
  if isinstance(node, ast.Constant) and type(node.value) in (int, float):
    v = fractions.Fraction(str(node.value))
    if abs(v) > MAX_ABS:
      raise ValueError("value too large")
    return v
  if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub,
                                                           ast.UAdd)):
    v = _value(node.operand)
    return -v if isinstance(node.op, ast.USub) else v
  if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
    v = _BINOPS[type(node.op)](_value(node.left), _value(node.right))
    if abs(v) > MAX_ABS:
      raise ValueError("value too large")
    return v
  raise ValueError(f"unsupported expression node {type(node).__name__}")


def safe_eval(expr: str) -> str | None:
  """The value of an arithmetic expression as text, or None if invalid.

  Only numbers, ``+ - * /``, unary signs and parentheses are accepted
  (parsed with :mod:`ast`, never ``eval``); values are exact rationals,
  bounded by :data:`MAX_ABS`. Integers print as ``-103``, other values as a
  decimal with at most 6 places.
  """
  if not isinstance(expr, str) or not expr.strip() or (
      len(expr) > MAX_EXPR_CHARS):
    return None
  try:
    v = _value(ast.parse(expr.strip(), mode="eval"))
  except (SyntaxError, ValueError, ZeroDivisionError, TypeError,
          RecursionError, MemoryError, OverflowError):
    return None
  if v.denominator == 1:
    return str(v.numerator)
  return f"{float(v):.6f}".rstrip("0").rstrip(".")


class CalculatorEnv:
  """One episode of the calculator task (a :class:`PythonEnv`).

  Args:
    dataset: a reasoning-gym dataset (``reasoning_gym.create_dataset``).
    tokenizer: the task's tokenizer (:func:`calculator_tokenizer`).
    spec: the :class:`~entropy_rl.agents.EnvSpec` (O0 and O cut the
      observations; T cuts the episode).
  """

  def __init__(self, dataset: Any, tokenizer: tok_lib.CharTokenizer,
               spec: envs_lib.EnvSpec):
    self.dataset = dataset
    # Whether the dataset's scorer evaluates answers (then only inert ones
    # reach it).
    self._kind = rg_tasks.evaluation_kind("", dataset)
    self.tok = tokenizer
    self.spec = spec
    self.item = None
    self.turn = 0
    self.n_tool_calls = 0
    self.score = 0.0
    self.answered = False
    self.malformed = 0

  def question(self) -> str:
    expr = (self.item.get("metadata") or {}).get("expression")
    return f"{expr}=?" if expr else str(self.item["question"])

  def reset(self, key) -> list[int]:
    seed = np.asarray(key).astype(np.uint32).ravel()
    idx = int(np.random.default_rng(seed).integers(0, len(self.dataset)))
    self.item = self.dataset[idx]
    self.turn, self.n_tool_calls, self.score = 0, 0, 0.0
    self.answered, self.malformed = False, 0
    ids = [self.tok.bos_id] + self.tok.encode(self.question())
    return ids[-self.spec.init_obs_len:]

  def _text(self, action: Sequence[int]) -> str:
    ids = tok_lib.trim_at_end(action, self.tok.end_ids)
    ids = [i for i in ids if i >= len(tok_lib.CHAR_SPECIALS)]
    return self.tok.decode(ids).strip()

  def step(self, action: Sequence[int], key=None):
    del key
    self.turn += 1
    text = self._text(action)
    obs, reward, done = "?", 0.0, False
    if text.startswith(CALL):
      self.n_tool_calls += 1
      value = safe_eval(text[len(CALL):])
      obs = "=?" if value is None else "=" + value
    elif text.startswith(ANSWER):
      done, self.answered = True, True
      reward = rg_tasks.safe_score_answer(
          self.dataset, text[len(ANSWER):].strip(), self.item,
          self._kind) or 0.0
      self.score = reward
      obs = "."
    else:
      self.malformed += 1
    done = done or self.turn >= self.spec.max_turns
    return self.tok.encode(obs)[:self.spec.obs_len], reward, done

  def metrics(self) -> dict[str, float]:
    return {"success": float(self.score >= 1.0),
            "n_tool_calls": float(self.n_tool_calls),
            "answered": float(self.answered),
            "malformed": float(self.malformed)}


def calculator_task(name: str = "chain_sum", *, num_envs: int,
                    max_turns: int = 4, action_len: int = 16,
                    obs_len: int = 12, init_obs_len: int = 24,
                    size: int = 1000, seed: int = 0, **config: Any
                    ) -> tuple[list[CalculatorEnv], envs_lib.EnvSpec,
                               tok_lib.CharTokenizer]:
  """``num_envs`` calculator environments over one reasoning-gym dataset.

  Args:
    name: the reasoning-gym dataset (``chain_sum``, ``basic_arithmetic``...).
    num_envs: R (one environment per rollout row).
    max_turns, action_len, obs_len, init_obs_len: the :class:`EnvSpec`.
    size, seed: the dataset's.
    **config: the dataset's options (default for ``chain_sum``: 2-3 terms of
      1-2 digits).

  Returns:
    ``(envs, spec, tokenizer)``.
  """
  try:
    import reasoning_gym as rg  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("the calculator task needs `pip install "
                      "reasoning-gym`") from e
  if name == "chain_sum" and not config:
    config = dict(min_terms=2, max_terms=3, min_digits=1, max_digits=2)
  dataset = rg.create_dataset(name, size=size, seed=seed, **config)
  tok = calculator_tokenizer()
  spec = envs_lib.EnvSpec(action_len=action_len, obs_len=obs_len,
                          init_obs_len=init_obs_len, max_turns=max_turns,
                          vocab_size=tok.vocab_size, pad_id=tok.pad_id,
                          end_ids=tuple(tok.end_ids))
  return [CalculatorEnv(dataset, tok, spec) for _ in range(num_envs)], spec, (
      tok)
