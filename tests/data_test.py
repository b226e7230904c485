"""Data: grain pipelines (exact resume, sharding, groups), warm-up batches,
JSONL files, reasoning-gym tasks, the registry."""

import json
import os
import tempfile

from absl.testing import absltest
import numpy as np

from entropy_rl import data
from entropy_rl import tokenizers

TOK = tokenizers.CharTokenizer()


def _equal_batches(a, b):
  if isinstance(a, tuple) and not isinstance(a, data.PromptBatch):
    return all(np.array_equal(x, y) for x, y in zip(a, b))
  return (np.array_equal(a.tokens, b.tokens) and np.array_equal(a.mask, b.mask)
          and np.array_equal(a.index, b.index)
          and np.array_equal(a.answer, b.answer) and a.answers == b.answers
          and a.prompts == b.prompts)


class PromptDatasetTest(absltest.TestCase):

  def _ds(self, task=None, **kw):
    args = dict(seed=3, batch_size=4, tokenizer=TOK, max_prompt_len=16,
                num_samples_per_prompt=2, shard_index=0, shard_count=1)
    args.update(kw)
    return data.prompt_dataset(task or data.arithmetic(), **args)

  def test_batch_layout(self):
    b = next(iter(self._ds()))
    self.assertEqual(b.tokens.shape, (8, 16))
    self.assertEqual(b.tokens.dtype, np.int32)
    np.testing.assert_array_equal(b.group_ids, [0, 0, 1, 1, 2, 2, 3, 3])
    # Rows of a group are identical; prompts are left-padded and decode back.
    np.testing.assert_array_equal(b.tokens[0::2], b.tokens[1::2])
    for row, m, prompt, ans, enc in zip(b.tokens, b.mask, b.prompts,
                                        b.answers, b.answer):
      self.assertTrue(m[-1])
      self.assertFalse(np.any(m[:-1] & ~m[1:]))  # Left padding.
      self.assertTrue(np.all(row[~m] == TOK.pad_id))
      self.assertEqual(TOK.decode(row[m]), prompt)
      self.assertEqual(int(enc), ans)
    # The examples are those of the source at the reported indices.
    src = data.TaskSource(data.arithmetic(), seed=3)
    self.assertEqual(src[int(b.index[0])], (b.prompts[0], b.answers[0]))

  def test_resume_is_exact(self):
    # Few examples, so that the resumed stretch crosses epoch boundaries
    # (each epoch is reshuffled).
    ds = self._ds(num_examples=10)
    it = iter(ds)
    for _ in range(3):
      next(it)
    state = it.get_state()
    json.dumps(state)  # Serialisable alongside a checkpoint.
    want = [next(it) for _ in range(6)]
    it2 = iter(self._ds(num_examples=10))
    it2.set_state(state)
    got = [next(it2) for _ in range(6)]
    self.assertTrue(all(_equal_batches(a, b) for a, b in zip(want, got)))
    # And a fresh pipeline starts from the same first batch.
    self.assertTrue(_equal_batches(next(iter(ds)), next(iter(self._ds(
        num_examples=10)))))
    # 36 prompts were read from a pool of 10: several epochs were crossed.
    self.assertTrue(all(0 <= int(i) < 10 for b in want for i in b.index))

  def test_epochs_are_reshuffled(self):
    it = iter(self._ds(num_examples=8, num_samples_per_prompt=1,
                       batch_size=8))
    e1, e2 = next(it).index, next(it).index
    self.assertEqual(sorted(e1), list(range(8)))
    self.assertEqual(sorted(e2), list(range(8)))
    self.assertFalse(np.array_equal(e1, e2))

  def test_seed_changes_order(self):
    a = next(iter(self._ds(seed=1))).prompts
    b = next(iter(self._ds(seed=2))).prompts
    self.assertNotEqual(a, b)

  def test_sharding_is_disjoint(self):
    # Two processes of a global batch of 4: 2 prompts each, disjoint
    # example indices, together covering the pool in an epoch.
    shards = [self._ds(num_examples=12, batch_size=4, shard_index=i,
                       shard_count=2, num_samples_per_prompt=1)
              for i in range(2)]
    seen = []
    for ds in shards:
      it = iter(ds)
      idx = np.concatenate([next(it).index for _ in range(3)])
      self.assertLen(idx, 6)
      seen.append(set(idx.tolist()))
    self.assertEqual(seen[0] & seen[1], set())
    self.assertEqual(seen[0] | seen[1], set(range(12)))
    with self.assertRaisesRegex(ValueError, "multiple"):
      self._ds(batch_size=3, shard_index=0, shard_count=2)

  def test_countdown_answers_encoded(self):
    b = next(iter(self._ds(data.countdown())))
    self.assertEqual(b.answer.shape, (8, 5))
    for enc, ans in zip(b.answer, b.answers):
      self.assertEqual(enc[0], ans.target)
      self.assertEqual(tuple(enc[1:1 + len(ans.numbers)]), ans.numbers)

  def test_chat_template_and_bos(self):
    # CharTokenizer's template is the bare content (its alphabet is tiny).
    b = next(iter(self._ds(add_bos=True, use_chat_template=True)))
    row = b.tokens[0][b.mask[0]]
    self.assertEqual(row[0], TOK.bos_id)
    self.assertEqual(TOK.decode(row[1:]), b.prompts[0])

  def test_overlong_prompt(self):
    it = iter(self._ds(max_prompt_len=3))
    with self.assertRaisesRegex(ValueError, "max_prompt_len=3"):
      next(it)
    b = next(iter(self._ds(max_prompt_len=3, truncate="left")))
    self.assertTrue(b.mask.all())
    self.assertEqual(TOK.decode(b.tokens[0]), b.prompts[0][-3:])

  def test_score_responses_python_path(self):
    b = next(iter(self._ds()))
    responses = [str(a) if i % 2 == 0 else "nope" for i, a in
                 enumerate(b.answers)]
    ids, mask = tokenizers.batch_encode(TOK, responses, 8, pad="right",
                                        add_eos=True)
    rewards, failed = data.score_responses(data.arithmetic(), TOK, ids, mask,
                                           b.answers)
    np.testing.assert_array_equal(rewards, [1, 0] * 4)
    np.testing.assert_array_equal(failed, [False, True] * 4)


class SftBatchesTest(absltest.TestCase):

  def test_tokens_and_loss_mask(self):
    task = data.countdown()
    ds = data.sft_batches(task, TOK, 4, 28, seed=0, shard_index=0,
                          shard_count=1)
    tokens, loss_mask = next(iter(ds))
    self.assertEqual(tokens.shape, (4, 28))
    self.assertEqual(loss_mask.dtype, np.bool_)
    for row, lm in zip(tokens, loss_mask):
      text = TOK.decode(row[row != TOK.pad_id])
      prompt, rest = text.split("=", 1)
      solution = rest.removesuffix("<eos>")
      self.assertTrue(rest.endswith("<eos>"))
      # The loss covers exactly the solution and the end token.
      self.assertEqual(TOK.decode(row[lm]), rest)
      numbers, target = prompt.split(":")
      ans = data.CountdownAnswer(int(target),
                                 tuple(int(n) for n in numbers.split(",")))
      self.assertEqual(task.score(solution, ans).reward, 1.0)

  def test_resume_and_truncation(self):
    mk = lambda: data.sft_batches(data.arithmetic(), TOK, 2, 6, seed=5,
                                  shard_index=0, shard_count=1)
    it = iter(mk())
    next(it)
    st = it.get_state()
    want = [next(it) for _ in range(3)]
    it2 = iter(mk())
    it2.set_state(st)
    self.assertTrue(all(_equal_batches(a, b) for a, b in
                        zip(want, [next(it2) for _ in range(3)])))
    with self.assertRaisesRegex(ValueError, "seq_len=6"):
      next(iter(data.sft_batches(data.arithmetic(num_digits=3), TOK, 2, 6,
                                 seed=0, truncate=None, shard_index=0,
                                 shard_count=1)))


class JsonlTest(absltest.TestCase):

  def _write(self, lines):
    d = tempfile.mkdtemp()
    path = os.path.join(d, "train.jsonl")
    with open(path, "w", encoding="utf-8") as f:
      f.write("\n".join(lines) + "\n")
    return path

  def test_gsm8k_and_math_styles(self):
    path = self._write([
        json.dumps({"question": "Natalia sold 48 clips and half as many "
                                "more. How many?",
                    "answer": "48/2 = 24\n48+24 = 72\n#### 72"}),
        "",
        json.dumps({"problem": "What is 1/2 + 1/4?",
                    "solution": "It is $\\boxed{\\frac{3}{4}}$."}),
    ])
    ex = data.load_jsonl(path)
    self.assertLen(ex, 2)
    self.assertEqual(ex[0][1].final, "72")
    self.assertEqual(ex[1][1].final, "\\frac{3}{4}")
    task = data.get_task("jsonl:" + path)
    self.assertEqual(task.examples[0][0], ex[0][0])
    q, gold = task.examples[0]
    self.assertEqual(task.score("... so #### 72", gold).reward, 1.0)
    self.assertEqual(task.score(task.solution_fn(q, gold), gold).reward, 1.0)
    self.assertEqual(task.score("\\boxed{0.75}", task.examples[1][1]).reward,
                     1.0)
    bad = task.score("", gold)
    self.assertEqual((bad.reward, bad.parse_failed), (0.0, True))
    b = next(iter(data.prompt_dataset(
        task, seed=0, batch_size=2, tokenizer=tokenizers.CharTokenizer(
            "".join(sorted(set("".join(q for q, _ in ex))))),
        max_prompt_len=64, shard_index=0, shard_count=1)))
    self.assertIsNone(b.answer)
    self.assertEqual(sorted(b.index.tolist()), [0, 1])

  def test_prompt_template_and_keys(self):
    path = self._write([json.dumps({"q": "2+2?", "a": "4"})])
    task = data.jsonl_task(path, question_key="q", answer_key="a",
                           prompt_template="Q: {question}\nA:")
    self.assertEqual(task.examples[0][0], "Q: 2+2?\nA:")
    self.assertEqual(task.examples[0][1].final, "4")

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, "no such file"):
      data.load_jsonl("/nonexistent.jsonl")
    with self.assertRaisesRegex(ValueError, ":2: invalid JSON"):
      data.load_jsonl(self._write(['{"question": "a", "answer": "1"}',
                                   '{"question": ']))
    with self.assertRaisesRegex(ValueError, "none of the keys"):
      data.load_jsonl(self._write(['{"text": "a"}']))
    with self.assertRaisesRegex(ValueError, "no records"):
      data.load_jsonl(self._write([""]))
    with self.assertRaisesRegex(ValueError, "question"):
      data.jsonl_task(self._write(['{"question": "a", "answer": "1"}']),
                      prompt_template="no placeholder")


class ReasoningGymTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    try:
      import reasoning_gym  # pylint: disable=g-import-not-at-top,unused-import
    except ImportError:
      self.skipTest("reasoning-gym not installed")

  def test_gold_answers_score_one(self):
    for name, n in (("basic_arithmetic", 20), ("chain_sum", 20),
                    ("gsm_symbolic", 5), ("countdown", 3)):
      task = data.get_task("rg:" + name, size=n, seed=1)
      self.assertEqual(task.name, "rg:" + name)
      for prompt, item in task.examples:
        self.assertEqual(prompt, item["question"])
        gold = task.solution_fn(prompt, item)
        self.assertEqual(task.score(gold, item).reward, 1.0, msg=(name, gold))
        # Wrapped in the usual answer formats too.
        self.assertEqual(task.score(f"<answer>{gold}</answer>", item).reward,
                         1.0)
        self.assertEqual(task.score(f"blah\n\\boxed{{{gold}}}", item).reward,
                         1.0)
      bad = task.score("", task.examples[0][1])
      self.assertEqual((bad.reward, bad.parse_failed), (0.0, True))
      self.assertLess(task.score("zzz", task.examples[0][1]).reward, 0.5)

  def test_equation_answers_are_scored_by_their_result(self):
    task = data.get_task("rg:basic_arithmetic", size=30, seed=0,
                         min_terms=2, max_terms=2, min_digits=1,
                         max_digits=2, operators=("+", "-"))
    for prompt, item in task.examples:
      expr = prompt.split("Calculate ", 1)[-1].split(".", 1)[0].strip()
      gold = task.solution_fn(prompt, item)
      wrong = str(int(gold) + 1)
      right = task.score(f"{expr} = {gold}", item)
      self.assertEqual((right.reward, right.extracted), (1.0, gold))
      self.assertEqual(task.score(f"{expr} = {gold}.", item).reward, 1.0)
      self.assertLess(task.score(f"{expr} = {wrong}", item).reward, 0.5)
      # No "=", or a non-number after it: only the text itself is scored.
      self.assertLess(task.score(f"the sum of {expr} is", item).reward, 0.5)
      self.assertLess(task.score(f"{expr} = x", item).reward, 0.5)
    self.assertEqual(data.equation_result("13 - 16 = -3."), "-3")
    self.assertEqual(data.equation_result("a = b = 1,000"), "1,000")
    self.assertIsNone(data.equation_result("12 + 7"))
    self.assertIsNone(data.equation_result("x = 19 apples"))

  def test_cot_solution_and_pipeline(self):
    task = data.rg_task("gsm_symbolic", size=4, seed=0, solution="cot")
    prompt, item = task.examples[0]
    cot = task.solution_fn(prompt, item)
    self.assertIn("####", cot)
    self.assertEqual(task.score(cot, item).reward, 1.0)
    sp = tokenizers.train_sentencepiece(data.task_corpus(task, 4), 200)
    b = next(iter(data.prompt_dataset(task, seed=0, batch_size=2,
                                      tokenizer=sp, max_prompt_len=512,
                                      shard_index=0, shard_count=1)))
    self.assertIsNone(b.answer)
    self.assertEqual(b.answers[0]["question"], b.prompts[0])

  def test_unknown_name(self):
    with self.assertRaisesRegex(ValueError, "did you mean"):
      data.get_task("rg:chain_summ")


class RegistryTest(absltest.TestCase):

  def test_builtin_and_kwargs(self):
    task = data.get_task("arithmetic", num_digits=3, ops="*")
    self.assertEqual(task.config["ops"], "*")
    prompt, _ = task.sample(np.random.default_rng(0))
    self.assertIn("*", prompt)
    self.assertEqual(data.get_task("countdown", num_numbers=3).config[
        "num_numbers"], 3)

  def test_unknown_and_register(self):
    with self.assertRaisesRegex(ValueError, "did you mean"):
      data.get_task("arithmetik")
    with self.assertRaisesRegex(ValueError, "already registered"):
      data.register_task("arithmetic", data.arithmetic)
    data.register_task("tiny_sum", lambda: data.arithmetic(num_digits=1),
                       overwrite=True)
    self.assertIn("tiny_sum", data.list_tasks())
    self.assertEqual(data.get_task("tiny_sum").name, "arithmetic")

  def test_bad_task_options(self):
    with self.assertRaisesRegex(ValueError, "ops"):
      data.arithmetic(ops="^")
    with self.assertRaisesRegex(ValueError, "num_digits"):
      data.arithmetic(num_digits=0)
    with self.assertRaisesRegex(ValueError, "num_numbers"):
      data.countdown(num_numbers=1)

  def test_safe_reward(self):
    def boom(text, answer):
      raise RuntimeError("checker bug")
    task = data.Task("x", sample=lambda rng: ("", 0), reward_fn=boom)
    self.assertEqual(task.score("1", 1), data.FAILED)

  def test_corpus_trains_a_tokenizer(self):
    lines = data.task_corpus(data.countdown(), 200)
    self.assertLen(lines, 200)
    sp = tokenizers.train_sentencepiece(lines, 64, model_type="char")
    for line in lines[:20]:
      self.assertEqual(sp.decode(sp.encode(line)), line)


if __name__ == "__main__":
  absltest.main()
