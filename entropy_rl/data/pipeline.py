"""grain pipelines: prompt batches for RL and (prompt, solution) for warm-up.

Both pipelines are ``grain.MapDataset.source(TaskSource).seed().shuffle()
.map(encode).repeat().batch()`` turned into an ``IterDataset``. Their
iterators save and restore their position exactly (``it.get_state()`` /
``it.set_state(state)``, or orbax via ``grain.checkpoint``). Generated tasks
draw example ``i`` from ``np.random.default_rng([seed, i])``, so the data
are a pure function of ``(seed, i)``; finite tasks (files, reasoning-gym)
index their ``examples``. On several hosts each process reads the slice
``source[process_index::process_count]`` of the examples and builds
``batch_size / process_count`` prompts per step.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import grain
import jax
import numpy as np

from entropy_rl import tokenizers as tok_lib
from entropy_rl.data import bounded
from entropy_rl.data import types

DEFAULT_NUM_EXAMPLES = 1 << 20  # Size of a generated task's index space.


class TaskSource(Sequence):
  """Random access to a task's examples: ``source[i] -> (prompt, answer)``.

  Args:
    task: a `Task`.
    seed: seeds example generation of generated tasks (>= 0).
    num_examples: size of the index space; default ``len(task.examples)``
      for finite tasks, ``DEFAULT_NUM_EXAMPLES`` for generated ones.
  """

  def __init__(self, task: types.Task, *, seed: int = 0,
               num_examples: int | None = None):
    if seed < 0:
      raise ValueError(f"seed must be >= 0, got {seed}")
    self.task, self.seed = task, int(seed)
    if task.examples is not None:
      n = len(task.examples)
      self._len = n if num_examples is None else min(n, int(num_examples))
    else:
      self._len = int(num_examples or DEFAULT_NUM_EXAMPLES)
    if self._len <= 0:
      raise ValueError(f"task {task.name!r} has no examples "
                       f"(num_examples={num_examples})")

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, index):  # pytype: disable=signature-mismatch
    if isinstance(index, slice):
      return [self[i] for i in range(*index.indices(len(self)))]
    i = int(index)
    if not -self._len <= i < self._len:
      raise IndexError(f"index {i} out of range for {self._len} examples")
    i %= self._len
    if self.task.examples is not None:
      prompt, answer = self.task.examples[i]
    else:
      prompt, answer = self.task.sample(np.random.default_rng([self.seed, i]))
    return prompt, answer

  def __repr__(self) -> str:
    return (f"TaskSource({self.task.name!r}, seed={self.seed}, "
            f"len={self._len})")


class PromptBatch(NamedTuple):
  """One batch of prompts, each repeated ``num_samples_per_prompt`` times.

  Rows of one prompt are adjacent (``group_ids = [0,0,..,1,1,..]``).
  ``R = prompts_per_process * num_samples_per_prompt``.
  """
  tokens: np.ndarray             # [R, L] int32, left-padded prompt ids
  mask: np.ndarray               # [R, L] bool, True on prompt tokens
  group_ids: np.ndarray          # [R] int32, prompt index within the batch
  index: np.ndarray              # [R] int64, example index in the source
  answer: np.ndarray | None      # [R, ...] int32 task.encode_answer, or None
  prompts: tuple[str, ...]       # [R] prompt texts
  answers: tuple[Any, ...]       # [R] answers for task.reward_fn


def _shard(shard_index: int | None, shard_count: int | None
           ) -> tuple[int, int]:
  if shard_count is None:
    shard_count = jax.process_count()
  if shard_index is None:
    shard_index = jax.process_index()
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index {shard_index} not in [0, {shard_count})")
  return int(shard_index), int(shard_count)


def _local_batch(batch_size: int, shard_count: int) -> int:
  if batch_size <= 0 or batch_size % shard_count:
    raise ValueError(f"batch_size {batch_size} must be a positive multiple "
                     f"of the process count {shard_count}")
  return batch_size // shard_count


def _prompt_text(tokenizer: tok_lib.Tokenizer, prompt: str,
                 use_chat_template: bool) -> str:
  if use_chat_template:
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True)
  return prompt


def _source(task, seed, num_examples, shard_index, shard_count
            ) -> grain.MapDataset:
  ds = grain.MapDataset.source(TaskSource(task, seed=seed,
                                          num_examples=num_examples))
  n = len(ds)  # grain passes indices of later epochs unwrapped.
  ds = ds.map_with_index(lambda i, example: (i % n, example))
  if shard_count > 1:
    ds = ds[shard_index::shard_count]
  return ds.seed(seed).shuffle()


def prompt_map_dataset(
    task: types.Task, *, seed: int, batch_size: int,
    tokenizer: tok_lib.Tokenizer, max_prompt_len: int,
    num_samples_per_prompt: int = 1, use_chat_template: bool = False,
    add_bos: bool = False, truncate: str | None = None,
    num_examples: int | None = None, num_epochs: int | None = None,
    shard_index: int | None = None, shard_count: int | None = None
) -> grain.MapDataset:
  """The random-access form of `prompt_dataset` (same arguments)."""
  if max_prompt_len <= 0:
    raise ValueError(f"max_prompt_len must be positive, got {max_prompt_len}")
  if num_samples_per_prompt <= 0:
    raise ValueError("num_samples_per_prompt must be positive, got "
                     f"{num_samples_per_prompt}")
  if truncate not in (None, "left"):
    raise ValueError(f"truncate must be None or 'left', got {truncate!r}")
  shard_index, shard_count = _shard(shard_index, shard_count)
  local = _local_batch(batch_size, shard_count)
  n = num_samples_per_prompt

  def encode(indexed):
    index, (prompt, answer) = indexed
    ids = tok_lib.encode_row(
        tokenizer, _prompt_text(tokenizer, prompt, use_chat_template),
        add_bos=add_bos)
    if len(ids) > max_prompt_len:
      if truncate is None:
        raise ValueError(
            f"prompt of {len(ids)} tokens > max_prompt_len={max_prompt_len} "
            f"({prompt[:80]!r}); raise max_prompt_len or pass "
            "truncate='left'")
      ids = ids[-max_prompt_len:]
    row = np.full((max_prompt_len,), tokenizer.pad_id, np.int32)
    row[max_prompt_len - len(ids):] = ids
    mask = np.zeros((max_prompt_len,), bool)
    mask[max_prompt_len - len(ids):] = True
    enc = (None if task.encode_answer is None
           else np.asarray(task.encode_answer(answer), np.int32))
    return row, mask, enc, index, prompt, answer

  def batch_fn(items):
    rep = lambda x: np.repeat(np.stack(x), n, axis=0)
    rows, masks, encs, index, prompts, answers = zip(*items)
    return PromptBatch(
        tokens=rep(rows), mask=rep(masks),
        group_ids=np.repeat(np.arange(len(items), dtype=np.int32), n),
        index=np.repeat(np.asarray(index, np.int64), n),
        answer=None if encs[0] is None else rep(encs),
        prompts=tuple(p for p in prompts for _ in range(n)),
        answers=tuple(a for a in answers for _ in range(n)))

  ds = _source(task, seed, num_examples, shard_index, shard_count)
  ds = ds.map(encode).repeat(num_epochs)
  return ds.batch(local, drop_remainder=True, batch_fn=batch_fn)


def prompt_dataset(
    task: types.Task, *, seed: int, batch_size: int,
    tokenizer: tok_lib.Tokenizer, max_prompt_len: int,
    num_samples_per_prompt: int = 1, use_chat_template: bool = False,
    add_bos: bool = False, truncate: str | None = None,
    num_examples: int | None = None, num_epochs: int | None = None,
    shard_index: int | None = None, shard_count: int | None = None,
    read_options: grain.ReadOptions | None = None) -> grain.IterDataset:
  """Batches of left-padded prompts for RL, resumable.

  ``source(task).seed(seed).shuffle().map(encode).repeat().batch()``; each
  epoch is reshuffled. Iterate with ``it = iter(ds)``; ``it.get_state()`` /
  ``it.set_state(s)`` resume exactly.

  Args:
    task: a `Task`.
    seed: shuffling and generation seed.
    batch_size: prompts per step over all processes (a multiple of the
      process count).
    tokenizer: encodes the prompts.
    max_prompt_len: ``L``; prompts are left-padded to it.
    num_samples_per_prompt: rows per prompt (the GRPO group size ``G``).
    use_chat_template: wrap each prompt as one user message with the
      tokenizer's chat template (for instruction-tuned models).
    add_bos: prepend the tokenizer's bos id.
    truncate: None (a longer prompt raises ValueError) or "left" (keep the
      last ``L`` tokens).
    num_examples: size of the example pool (see `TaskSource`).
    num_epochs: None repeats forever.
    shard_index: this process's shard (default ``jax.process_index()``).
    shard_count: number of shards (default ``jax.process_count()``).
    read_options: grain read options (default: 2 threads, small buffer).

  Returns:
    A ``grain.IterDataset`` of `PromptBatch`es with ``R = batch_size /
    shard_count * num_samples_per_prompt`` rows.
  """
  ds = prompt_map_dataset(
      task, seed=seed, batch_size=batch_size, tokenizer=tokenizer,
      max_prompt_len=max_prompt_len,
      num_samples_per_prompt=num_samples_per_prompt,
      use_chat_template=use_chat_template, add_bos=add_bos,
      truncate=truncate, num_examples=num_examples, num_epochs=num_epochs,
      shard_index=shard_index, shard_count=shard_count)
  return ds.to_iter_dataset(read_options or _default_read_options())


def _default_read_options() -> grain.ReadOptions:
  return grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)


def sft_batches(
    task: types.Task, tokenizer: tok_lib.Tokenizer, batch_size: int,
    seq_len: int, seed: int, *, use_chat_template: bool = False,
    add_bos: bool = False, truncate: str | None = "right",
    num_examples: int | None = None, num_epochs: int | None = None,
    shard_index: int | None = None, shard_count: int | None = None,
    read_options: grain.ReadOptions | None = None) -> grain.IterDataset:
  """Supervised warm-up data: prompt + gold solution + end token.

  Each row is ``[bos] prompt solution end pad...`` (right-padded with
  ``pad_id``). ``loss_mask`` is True on the solution tokens and the end
  token: a next-token loss uses ``logits[:, :-1]`` against ``tokens[:, 1:]``
  weighted by ``loss_mask[:, 1:]``.

  Args:
    task: a `Task` with a ``solution_fn``.
    tokenizer: encodes prompts and solutions.
    batch_size: rows per step over all processes.
    seq_len: ``L``.
    seed: shuffling and generation seed.
    use_chat_template: format the prompt with the chat template.
    add_bos: prepend the bos id.
    truncate: "right" (cut rows longer than ``L`` at the end) or None
      (raise ValueError).
    num_examples: size of the example pool (see `TaskSource`).
    num_epochs: None repeats forever.
    shard_index: this process's shard (default ``jax.process_index()``).
    shard_count: number of shards (default ``jax.process_count()``).
    read_options: grain read options.

  Returns:
    A ``grain.IterDataset`` of ``(tokens int32 [B, L], loss_mask bool
    [B, L])`` with ``B = batch_size / shard_count``.
  """
  if task.solution_fn is None:
    raise ValueError(f"task {task.name!r} has no solution_fn for warm-up")
  if seq_len <= 1:
    raise ValueError(f"seq_len must be > 1, got {seq_len}")
  if truncate not in (None, "right"):
    raise ValueError(f"truncate must be None or 'right', got {truncate!r}")
  if not tokenizer.end_ids:
    raise ValueError("tokenizer has no end_ids to end the solution with")
  shard_index, shard_count = _shard(shard_index, shard_count)
  local = _local_batch(batch_size, shard_count)
  end = int(tokenizer.end_ids[0])

  def encode(indexed):
    _, (prompt, answer) = indexed
    p = tok_lib.encode_row(
        tokenizer, _prompt_text(tokenizer, prompt, use_chat_template),
        add_bos=add_bos)
    s = list(tokenizer.encode(task.solution_fn(prompt, answer))) + [end]
    ids, lm = p + s, [False] * len(p) + [True] * len(s)
    if len(ids) > seq_len:
      if truncate is None:
        raise ValueError(f"example of {len(ids)} tokens > seq_len={seq_len}"
                         f" ({prompt[:80]!r}); raise seq_len or pass "
                         "truncate='right'")
      ids, lm = ids[:seq_len], lm[:seq_len]
    tokens = np.full((seq_len,), tokenizer.pad_id, np.int32)
    loss_mask = np.zeros((seq_len,), bool)
    tokens[:len(ids)] = ids
    loss_mask[:len(lm)] = lm
    return tokens, loss_mask

  ds = _source(task, seed, num_examples, shard_index, shard_count)
  ds = ds.map(encode).repeat(num_epochs)
  ds = ds.batch(local, drop_remainder=True,
                batch_fn=lambda xs: tuple(np.stack(x) for x in zip(*xs)))
  return ds.to_iter_dataset(read_options or _default_read_options())


# ---------------------------------------------------------------------------
# Host-side helpers.


def score_responses(task: types.Task, tokenizer: tok_lib.Tokenizer,
                    response_tokens: Any, response_mask: Any,
                    answers: Sequence[Any]
                    ) -> tuple[np.ndarray, np.ndarray]:
  """Python rewards of sampled responses (for tasks without a JAX checker).

  Each row is cut at its first end token (among masked positions), decoded
  and passed to ``task.reward_fn``; a checker that raises counts as a parse
  failure with reward 0. With a ``task.reward_time_budget`` the rows are
  scored in parallel worker processes, each within its budget (see
  `score_responses_bounded`, which also returns the timeouts).

  Args:
    task: the `Task`.
    tokenizer: decodes the responses.
    response_tokens: ``[B, T]`` ids.
    response_mask: ``[B, T]`` (the sampler's mask, end token included).
    answers: ``B`` answers (``PromptBatch.answers``).

  Returns:
    ``rewards`` float32 ``[B]`` and ``parse_failed`` bool ``[B]``.
  """
  out = score_responses_bounded(task, tokenizer, response_tokens,
                                response_mask, answers)
  return out.rewards, out.parse_failed


def score_responses_bounded(task: types.Task, tokenizer: tok_lib.Tokenizer,
                            response_tokens: Any, response_mask: Any,
                            answers: Sequence[Any]) -> bounded.BatchScores:
  """`score_responses` with the timeouts: a `bounded.BatchScores`."""
  toks = np.asarray(response_tokens)
  mask = np.asarray(response_mask)
  if toks.ndim != 2 or mask.shape != toks.shape:
    raise ValueError(f"response_tokens {toks.shape} and response_mask "
                     f"{mask.shape} must both be [B, T]")
  if len(answers) != toks.shape[0]:
    raise ValueError(f"{len(answers)} answers for {toks.shape[0]} rows")
  texts = tok_lib.decode_batch(tokenizer, toks, mask)
  return score_texts(task, texts, answers)


def score_texts(task: types.Task, texts: Sequence[str],
                answers: Sequence[Any]) -> bounded.BatchScores:
  """``task``'s scores of response texts, under its time budget (if any)."""
  budget = None if task.reward_in_process else task.reward_time_budget
  return bounded.score_batch(task.reward_fn, list(texts), list(answers),
                             budget=budget, name=task.name)


def task_examples(task: types.Task, n: int, seed: int = 0
                  ) -> list[tuple[str, Any]]:
  """The first ``n`` examples of a task (e.g. a held-out set: other seed)."""
  src = TaskSource(task, seed=seed)
  return [src[i] for i in range(min(n, len(src)))]


def task_corpus(task: types.Task, n: int = 2000, seed: int = 0, *,
                include_solution: bool = True) -> list[str]:
  """Text lines for `train_sentencepiece`: prompts (+ gold solutions)."""
  lines = []
  for prompt, answer in task_examples(task, n, seed):
    line = prompt
    if include_solution and task.solution_fn is not None:
      line += task.solution_fn(prompt, answer)
    lines.append(line)
  return lines
