"""reasoning-gym (Apache-2.0) procedural datasets as task sources.

``rg_task("chain_sum", size=10_000, seed=0)`` wraps
``reasoning_gym.create_dataset`` (imported lazily; ``pip install
reasoning-gym`` or the ``tasks`` extra). Items are scored with the
dataset's own ``score_answer`` on the answer read from the response:
``<answer>...</answer>``, else ``\\boxed{}``, else ``#### ...``, else an
"answer is ..." phrase, else the whole response. Useful generators:
``basic_arithmetic``, ``chain_sum``, ``countdown`` (slow: ~30 ms/item),
``gsm_symbolic`` (word problems with a chain of thought in metadata),
``decimal_arithmetic``, ``gcd``, ``lcm``, ``leg_counting``.

Some reasoning-gym scorers evaluate the answer text as code: ``eval``
(``spiral_matrix``, ``n_queens``, ...) or sympy's ``parse_expr`` (which
calls ``eval``: ``countdown``, ``puzzle24``, the integration tasks).
`safe_score_answer` gives such scorers only answers that cannot execute
anything (`answer_is_inert`): Python literals for ``eval``, arithmetic over
an allowlist of names for ``parse_expr``; other answers score 0 unread.
"""

from __future__ import annotations

import ast
import inspect
import re
from typing import Any

import numpy as np

from entropy_rl.data import math_answers
from entropy_rl.data import types

_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_ANSWER_IS_RE = re.compile(
    r"(?:final answer|answer)\s*(?:is|:)\s*:?\s*([^\n]*)", re.IGNORECASE)
_MAX_CHARS = 20_000


# Datasets whose scorer evaluates the answer: "literal" (``eval``) or
# "expr" (sympy ``parse_expr`` / ``sympify``). Others are found by reading
# the scorer's source (`evaluation_kind`).
EVALUATING_SCORERS = {
    "countdown": "expr", "puzzle24": "expr",
    "polynomial_multiplication": "expr", "simple_integration": "expr",
    "intermediate_integration": "expr", "string_insertion": "literal",
    "spiral_matrix": "literal", "binary_matrix": "literal",
    "n_queens": "literal", "number_sorting": "literal",
}
_EXPR_CHARS_RE = re.compile(r"[0-9A-Za-z_+\-*/^().,=\s]*")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
_EXPR_NAMES = frozenset((
    "sin", "cos", "tan", "cot", "sec", "csc", "asin", "acos", "atan", "sinh",
    "cosh", "tanh", "exp", "log", "ln", "sqrt", "pi", "oo", "Abs", "abs"))
_LITERAL_NODES = (ast.Expression, ast.Constant, ast.List, ast.Tuple, ast.Set,
                  ast.Dict, ast.UnaryOp, ast.USub, ast.UAdd, ast.Load)
_EVAL_SRC_RE = re.compile(r"(?<![\w.])(?:eval|exec)\(")
_EXPR_SRC_RE = re.compile(r"\b(?:parse_expr|sympify)\(")


def answer_is_inert(answer: str, kind: str | None) -> bool:
  """Whether ``answer`` is safe for a scorer that evaluates it.

  Args:
    answer: the extracted answer.
    kind: None (the scorer does not evaluate text: always True),
      "literal" (``eval``: only a Python literal of constants, lists,
      tuples, sets, dicts and signs; text that is not Python is inert too)
      or "expr" (sympy ``parse_expr``: digits, ``+ - * / ^ ( ) . , =``,
      spaces, one-letter names and common function names; no ``__``, no
      attribute access).
  """
  if kind is None:
    return True
  if "\x00" in answer:
    return False
  if kind == "literal":
    try:
      tree = ast.parse(answer.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
      return True  # eval raises the same SyntaxError: nothing runs.
    return all(isinstance(node, _LITERAL_NODES) for node in ast.walk(tree))
  if kind == "expr":
    if not _EXPR_CHARS_RE.fullmatch(answer) or "__" in answer:
      return False
    if re.search(r"\.\s*[A-Za-z_]", answer):  # Attribute access.
      return False
    return all(len(n) == 1 or n in _EXPR_NAMES
               for n in _NAME_RE.findall(answer))
  raise ValueError(f"kind must be None, 'literal' or 'expr', got {kind!r}")


def evaluation_kind(name: str, dataset: Any) -> str | None:
  """How ``dataset``'s scorer evaluates answers (see `answer_is_inert`)."""
  if name in EVALUATING_SCORERS:
    return EVALUATING_SCORERS[name]
  try:
    src = inspect.getsource(type(dataset).score_answer)
  except (OSError, TypeError, AttributeError):
    return None
  if _EXPR_SRC_RE.search(src):
    return "expr"
  if _EVAL_SRC_RE.search(src):
    return "literal"
  return None


def safe_score_answer(dataset: Any, answer: str, entry: Any,
                      kind: str | None) -> float | None:
  """``dataset.score_answer`` for an inert answer; None where the answer
  is not inert (see `answer_is_inert`) or the scorer raises."""
  if not answer_is_inert(answer, kind):
    return None
  try:
    value = float(dataset.score_answer(answer=answer, entry=entry))
  except Exception:  # pylint: disable=broad-except
    return None
  return 0.0 if value != value else value


def _import_rg():
  try:
    import reasoning_gym  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("reasoning-gym tasks need `pip install reasoning-gym` "
                      "(or entropy_rl[tasks])") from e
  return reasoning_gym


def extract_rg_answer(text: Any) -> str | None:
  """The answer part of a response for reasoning-gym's scorers."""
  if not isinstance(text, str) or not text.strip():
    return None
  text = text[-_MAX_CHARS:]
  tags = _TAG_RE.findall(text)
  if tags:
    return tags[-1].strip() or None
  boxed = math_answers.last_boxed(text)
  if boxed:
    return boxed
  if "####" in text:
    rest = text.rsplit("####", 1)[1].strip().split("\n", 1)[0].strip()
    return rest or None
  found = _ANSWER_IS_RE.findall(text)
  if found and found[-1].strip():
    return found[-1].strip().rstrip(".").strip() or None
  return text.strip()


_NUMBER_RE = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?")


def equation_result(pred: str) -> str | None:
  """The number after the last ``=`` of an unformatted answer, or None.

  Small instruct models answer "Calculate 12 + 7." with "12 + 7 = 19"
  (SmolLM2-135M-Instruct does, for most of reasoning-gym's
  ``basic_arithmetic``); the number right of the last ``=`` (a plain number,
  trailing period allowed) is a second candidate, which ``rg_task``'s reward
  scores beside the extracted text, keeping the better score — so an
  equation can only gain credit for a correct final number.
  """
  if "=" not in pred:
    return None
  rhs = pred.rsplit("=", 1)[1].strip().rstrip(".").strip()
  return rhs if _NUMBER_RE.fullmatch(rhs) else None


def rg_task(name: str, *, size: int = 10_000, seed: int = 0,
            solution: str = "answer", **config: Any) -> types.Task:
  """A reasoning-gym dataset as a `Task`.

  Args:
    name: reasoning-gym dataset name (``reasoning_gym.factory.DATASETS``).
    size: number of items (generated lazily, by index).
    seed: the dataset's seed.
    solution: gold response for warm-up: "answer" (the answer string) or
      "cot" (``metadata["answer_cot"]`` where the dataset has one).
    **config: the dataset's own options (e.g. ``min_terms=2``).

  Returns:
    A `Task` named ``"rg:<name>"`` with ``examples`` (``(question, item)``
    pairs); answers are reasoning-gym items (dicts).
  """
  rg = _import_rg()
  if name not in rg.factory.DATASETS:
    import difflib  # pylint: disable=g-import-not-at-top
    close = difflib.get_close_matches(name, list(rg.factory.DATASETS), 3)
    raise ValueError(f"name: unknown reasoning-gym dataset {name!r}"
                     + (f"; did you mean {close}?" if close else ""))
  if solution not in ("answer", "cot"):
    raise ValueError(f"solution must be 'answer' or 'cot', got {solution!r}")
  dataset = rg.create_dataset(name, size=size, seed=seed, **config)
  examples = types.sequence_examples(
      dataset, lambda item: (item["question"], item))

  def sample(rng: np.random.Generator):
    return examples[int(rng.integers(0, len(examples)))]

  def solution_fn(prompt: str, item: Any) -> str:
    del prompt
    if solution == "cot":
      cot = item.get("metadata", {}).get("answer_cot")
      if cot:
        return str(cot)
    return str(item["answer"])

  reward = RgReward(name, size=size, seed=seed, config=config,
                    dataset=dataset)
  return types.Task(
      name=f"rg:{name}", sample=sample, reward_fn=reward,
      solution_fn=solution_fn, examples=examples,
      config=dict(name=name, size=size, seed=seed, **config))


class RgReward:
  """The reward of an ``rg:`` task; picklable (a worker process rebuilds
  the dataset from its name, size, seed and options).

  The answer read by `extract_rg_answer` is scored with the dataset's
  ``score_answer`` (`safe_score_answer`); for an equation ``"12 + 7 = 19"``
  the number after the last ``=`` is scored too, and the better score kept.
  """

  preload = ("reasoning_gym",)  # Modules a worker process needs.

  def __init__(self, name: str, *, size: int, seed: int,
               config: dict[str, Any], dataset: Any = None):
    self.name, self.size, self.seed = name, int(size), int(seed)
    self.config = dict(config)
    self._ds = dataset
    self._kind: Any = ...

  def __getstate__(self) -> dict[str, Any]:
    return dict(name=self.name, size=self.size, seed=self.seed,
                config=self.config)

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__init__(state["name"], size=state["size"], seed=state["seed"],
                  config=state["config"])

  @property
  def dataset(self) -> Any:
    if self._ds is None:
      self._ds = _import_rg().create_dataset(
          self.name, size=self.size, seed=self.seed, **self.config)
    return self._ds

  @property
  def kind(self) -> str | None:
    if self._kind is ...:
      self._kind = evaluation_kind(self.name, self.dataset)
    return self._kind

  def _score(self, pred: str, item: Any) -> float | None:
    return safe_score_answer(self.dataset, pred, item, self.kind)

  def __call__(self, text: str, item: Any) -> types.RewardResult:
    pred = extract_rg_answer(text)
    if pred is None:
      return types.FAILED
    best, best_pred = self._score(pred, item), pred
    rhs = equation_result(pred)
    if rhs is not None:  # "12 + 7 = 19": also score "19", keep the better.
      alt = self._score(rhs, item)
      if alt is not None and (best is None or alt > best):
        best, best_pred = alt, rhs
    if best is None:
      return types.RewardResult(0.0, True, pred[:256])
    return types.RewardResult(best, False, best_pred[:256])
