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
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from entropy_rl.data import math_answers
from entropy_rl.data import types

_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_ANSWER_IS_RE = re.compile(
    r"(?:final answer|answer)\s*(?:is|:)\s*:?\s*([^\n]*)", re.IGNORECASE)
_MAX_CHARS = 20_000


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

  def score(pred: str, item: Any) -> float | None:
    """reasoning-gym's score of ``pred``; None where the scorer raises."""
    try:
      value = float(dataset.score_answer(answer=pred, entry=item))
    except Exception:  # pylint: disable=broad-except
      return None
    return 0.0 if value != value else value

  def reward(text: str, item: Any) -> types.RewardResult:
    pred = extract_rg_answer(text)
    if pred is None:
      return types.FAILED
    best, best_pred = score(pred, item), pred
    rhs = equation_result(pred)
    if rhs is not None:  # "12 + 7 = 19": also score "19", keep the better.
      alt = score(rhs, item)
      if alt is not None and (best is None or alt > best):
        best, best_pred = alt, rhs
    if best is None:
      return types.RewardResult(0.0, True, pred[:256])
    return types.RewardResult(best, False, best_pred[:256])

  def solution_fn(prompt: str, item: Any) -> str:
    del prompt
    if solution == "cot":
      cot = item.get("metadata", {}).get("answer_cot")
      if cot:
        return str(cot)
    return str(item["answer"])

  return types.Task(
      name=f"rg:{name}", sample=sample, reward_fn=reward,
      solution_fn=solution_fn, examples=examples,
      config=dict(name=name, size=size, seed=seed, **config))
