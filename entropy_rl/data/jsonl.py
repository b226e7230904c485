"""User files in the GSM8K / MATH style: JSONL of questions and answers.

Each line is a JSON object with a question (key ``question``, ``problem``,
``prompt``, ``query`` or ``input``) and an answer (``answer``,
``final_answer``, ``target``, ``output`` or ``solution``). The gold final
answer is read from the answer text: ``#### 72`` (GSM8K) or ``\\boxed{72}``
(MATH), else the whole text. The full answer text (``solution`` where
present) is the gold response for supervised warm-up.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, NamedTuple, Sequence

import numpy as np

from entropy_rl.data import math_answers
from entropy_rl.data import types

QUESTION_KEYS = ("question", "problem", "prompt", "query", "input")
ANSWER_KEYS = ("answer", "final_answer", "target", "output", "solution")


class GoldAnswer(NamedTuple):
  """A file's answer: the final answer and the full solution text."""
  final: str
  solution: str


def load_jsonl(path: str | os.PathLike[str], *,
               question_key: str | None = None,
               answer_key: str | None = None,
               max_examples: int | None = None
               ) -> list[tuple[str, GoldAnswer]]:
  """Reads ``(question, GoldAnswer)`` pairs from a JSONL file.

  Args:
    path: the file (blank lines are skipped).
    question_key: key of the question; default: the first of
      ``QUESTION_KEYS`` present in the first record.
    answer_key: key of the answer; default: the first of ``ANSWER_KEYS``.
    max_examples: read at most this many records.

  Returns:
    The examples, in file order.

  Raises:
    ValueError: missing file, invalid JSON (with the line number), a record
      without the keys, or no records.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ValueError(f"path: no such file {path!r}")
  out = []
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        rec = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{lineno}: invalid JSON ({e})") from e
      if not isinstance(rec, dict):
        raise ValueError(f"{path}:{lineno}: expected a JSON object, got "
                         f"{type(rec).__name__}")
      qk = question_key or _first_key(rec, QUESTION_KEYS, path, lineno)
      ak = answer_key or _first_key(rec, ANSWER_KEYS, path, lineno)
      if qk not in rec or ak not in rec:
        raise ValueError(f"{path}:{lineno}: missing key {qk!r} or {ak!r}; "
                         f"record has {sorted(rec)}")
      answer_text = str(rec[ak])
      solution = str(rec.get("solution", answer_text))
      out.append((str(rec[qk]), GoldAnswer(
          math_answers.extract_gold(answer_text), solution)))
      if max_examples is not None and len(out) >= max_examples:
        break
  if not out:
    raise ValueError(f"path: {path!r} holds no records")
  return out


def _first_key(rec: dict[str, Any], keys: Sequence[str], path: str,
               lineno: int) -> str:
  for k in keys:
    if k in rec:
      return k
  raise ValueError(f"{path}:{lineno}: none of the keys {list(keys)} in "
                   f"record with keys {sorted(rec)}")


def _reward(text: str, answer: GoldAnswer, *, mode: str,
            use_math_verify: bool) -> types.RewardResult:
  """A JSONL task's reward (module level: picklable for worker processes)."""
  return math_answers.math_reward(text, answer.final, mode=mode,
                                  use_math_verify=use_math_verify)


_reward.preload = ("math_verify", "sympy")  # What a worker process needs.


def jsonl_task(path: str | os.PathLike[str], *,
               question_key: str | None = None,
               answer_key: str | None = None,
               prompt_template: str = "{question}", mode: str = "flexible",
               use_math_verify: bool = True,
               max_examples: int | None = None) -> types.Task:
  """A task over a user's JSONL file, checked with `math_reward`.

  Args:
    path: the JSONL file.
    question_key: see `load_jsonl`.
    answer_key: see `load_jsonl`.
    prompt_template: ``str.format`` template with ``{question}``.
    mode: answer extraction mode ("flexible" or "strict").
    use_math_verify: symbolic comparison with math-verify where installed.
    max_examples: read at most this many records.

  Returns:
    A `Task` named ``"jsonl:<path>"`` with ``examples``; answers are
    `GoldAnswer`s.
  """
  if "{question}" not in prompt_template:
    raise ValueError("prompt_template must contain '{question}', got "
                     f"{prompt_template!r}")
  math_answers.extract_answer("", mode)  # Validates mode.
  examples = [(prompt_template.format(question=q), a)
              for q, a in load_jsonl(path, question_key=question_key,
                                     answer_key=answer_key,
                                     max_examples=max_examples)]

  def sample(rng: np.random.Generator):
    return examples[int(rng.integers(0, len(examples)))]

  reward = functools.partial(_reward, mode=mode,
                             use_math_verify=use_math_verify)
  return types.Task(
      name=f"jsonl:{os.fspath(path)}", sample=sample, reward_fn=reward,
      solution_fn=lambda prompt, answer: answer.solution,
      examples=examples,
      config=dict(path=os.fspath(path), mode=mode, size=len(examples)))
