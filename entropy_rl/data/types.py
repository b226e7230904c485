"""The task description shared by every task source, and reward results."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np


class RewardResult(NamedTuple):
  """The outcome of checking one response.

  Attributes:
    reward: the scalar reward (1.0 for a correct answer, 0.0 otherwise, or a
      partial score where the task defines one).
    parse_failed: True when no answer could be read from the response
      (empty, garbage, wrong format); the reward is then 0 and the trainer
      counts the failure.
    extracted: the answer string read from the response, if any.
  """
  reward: float
  parse_failed: bool = False
  extracted: str | None = None


FAILED = RewardResult(0.0, True, None)

# reward_fn(response_text, answer) -> RewardResult. Never raises.
RewardFn = Callable[[str, Any], RewardResult]
# jax_reward_fn(prompt_tokens [B,P], response_tokens [B,T],
#               response_mask [B,T], answer [B,...]) -> [B] float32.
JaxRewardFn = Callable[..., Any]


@dataclasses.dataclass(frozen=True, eq=False)
class Task:
  """A verifiable task: a prompt generator and its answer checker.

  Attributes:
    name: registry name, e.g. "arithmetic", "rg:chain_sum".
    sample: ``sample(rng: np.random.Generator) -> (prompt_text, answer)``.
    reward_fn: ``reward_fn(response_text, answer) -> RewardResult``; must
      never raise (malformed output gets reward 0 and ``parse_failed``).
    solution_fn: ``solution_fn(prompt_text, answer) -> str``, the gold
      response text (without the end token) for supervised warm-up; None if
      the task has none.
    examples: a finite random-access sequence of ``(prompt_text, answer)``
      (a file, a reasoning-gym dataset); None for generated tasks, whose
      pipelines call ``sample`` with a per-index generator instead.
    encode_answer: ``encode_answer(answer) -> np.ndarray`` (int32, fixed
      shape): the answer as an array for the on-device checker; None when
      the task has no JAX checker.
    jax_reward_fn: ``jax_reward_fn(prompt_tokens, response_tokens,
      response_mask, answer) -> [B] float32`` for ``tokenizer``; jittable.
    make_jax_reward_fn: ``make_jax_reward_fn(tokenizer) -> jax_reward_fn``
      for another (character-level) tokenizer.
    tokenizer: the tokenizer the task was designed for (the built-in tasks
      use a `CharTokenizer`); None = bring your own.
    config: the generator's settings (for logs).
    reward_time_budget: CPU seconds one response's ``reward_fn`` may take
      when a batch is scored (`entropy_rl.data.score_responses`): with a
      budget the batch runs in `entropy_rl.data.bounded`'s worker
      processes, and a response over budget scores 0 and counts as a
      timeout. None (or 0): scored in-process, unbounded. Builders set it
      from ``config.task.reward_time_budget``.
    reward_in_process: the checker's cost is bounded by construction
      (linear in a capped response length, no symbolic maths, no
      evaluation of the text): it is always scored in-process, fast.
  """
  name: str
  sample: Callable[[np.random.Generator], tuple[str, Any]]
  reward_fn: RewardFn
  solution_fn: Callable[[str, Any], str] | None = None
  examples: Sequence[tuple[str, Any]] | None = None
  encode_answer: Callable[[Any], np.ndarray] | None = None
  jax_reward_fn: JaxRewardFn | None = None
  make_jax_reward_fn: Callable[[Any], JaxRewardFn] | None = None
  tokenizer: Any = None
  config: dict[str, Any] = dataclasses.field(default_factory=dict)
  reward_time_budget: float | None = None
  reward_in_process: bool = False

  def __post_init__(self):
    if not callable(self.sample) or not callable(self.reward_fn):
      raise ValueError(f"Task {self.name!r}: sample and reward_fn must be "
                       "callable")
    b = self.reward_time_budget
    if b is not None and not (isinstance(b, (int, float)) and 0 <= b < 1e6):
      raise ValueError(f"Task {self.name!r}: reward_time_budget must be a "
                       f"number of seconds >= 0 or None, got {b!r}")

  def score(self, response_text: str, answer: Any) -> RewardResult:
    """``reward_fn`` with a last-resort guard: it never raises."""
    return safe_reward(self.reward_fn, response_text, answer)


def safe_reward(fn: RewardFn, response_text: Any, answer: Any
                ) -> RewardResult:
  """Calls ``fn``; any exception or bad return becomes a parse failure."""
  try:
    if not isinstance(response_text, str):
      response_text = "" if response_text is None else str(response_text)
    out = fn(response_text, answer)
    if isinstance(out, RewardResult):
      r = float(out.reward)
      if r != r:  # NaN
        return FAILED
      return out._replace(reward=r)
    r = float(out)
    return RewardResult(r if r == r else 0.0, r != r)
  except Exception:  # pylint: disable=broad-except
    return FAILED


def sequence_examples(items: Sequence[Any], fn: Callable[[Any], tuple[str, Any]]
                      ) -> "_MappedSequence":
  """A lazy random-access view ``i -> fn(items[i])``."""
  return _MappedSequence(items, fn)


class _MappedSequence(Sequence):
  """``items`` seen through ``fn`` (lazy, random access)."""

  def __init__(self, items: Sequence[Any], fn: Callable[[Any], Any]):
    self._items, self._fn = items, fn

  def __len__(self) -> int:
    return len(self._items)

  def __getitem__(self, i):  # pytype: disable=signature-mismatch
    if isinstance(i, slice):
      return [self[j] for j in range(*i.indices(len(self)))]
    n = len(self._items)
    i = int(i)
    if not -n <= i < n:  # Procedural datasets would generate past the end.
      raise IndexError(f"index {i} out of range for {n} examples")
    return self._fn(self._items[i % n])
