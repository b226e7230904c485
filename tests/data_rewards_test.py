"""Reward checkers: tables of correct / wrong / malformed outputs, and the
on-device (JAX) checkers equal to the Python ones on many random cases."""

from absl.testing import absltest
from absl.testing import parameterized
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import jax
import numpy as np

from entropy_rl import data
from entropy_rl import tokenizers
from entropy_rl.data import arithmetic_task
from entropy_rl.data import char_classes
from entropy_rl.data import countdown_task

TOK = tokenizers.CharTokenizer()
T = 16          # Response length of every on-device check (one compile).
B = 48          # Rows per hypothesis example.
ARITH = data.arithmetic()
CD = data.countdown()
CD_ALL = data.countdown(use_all=True)
_JIT = {}


def _jit(fn):
  if id(fn) not in _JIT:
    _JIT[id(fn)] = jax.jit(fn)
  return _JIT[id(fn)]


def _rows(texts, *, end=True, extra=()):
  """Token rows [B, T]: text, then eos (optional), then ``extra`` garbage."""
  ids = np.full((len(texts), T), TOK.pad_id, np.int32)
  mask = np.zeros((len(texts), T), bool)
  for b, t in enumerate(texts):
    r = (TOK.encode(t) + ([TOK.eos_id] if end else []) + list(extra))[:T]
    ids[b, :len(r)] = r
    mask[b, :len(r)] = True
  return ids, mask


def _jax_scores(task, texts, answers):
  """On-device rewards, padded to B rows so that every call shares a compile."""
  n = len(texts)
  pad = B - n
  ids, mask = _rows(list(texts) + [""] * pad)
  enc = np.stack([task.encode_answer(a) for a in answers]
                 + [task.encode_answer(answers[0])] * pad)
  return np.asarray(_jit(task.jax_reward_fn)(None, ids, mask, enc))[:n]


def _python_rewards(task, ids, mask, answers):
  rewards, _ = data.score_responses(task, TOK, ids, mask, answers)
  return rewards


class ArithmeticRewardTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("exact", "19", 19, 1.0, False),
      ("spaces", "  19 ", 19, 1.0, False),
      ("leading_zeros", "0019", 19, 1.0, False),
      ("negative", "-4", -4, 1.0, False),
      ("minus_zero", "-0", 0, 1.0, False),
      ("wrong", "18", 19, 0.0, False),
      ("wrong_sign", "-19", 19, 0.0, False),
      ("huge", "1" + "0" * 400, 19, 0.0, False),        # 10**400
      ("huge_zeros", "0" * 5000 + "19", 19, 1.0, False),  # No int() limit.
      ("empty", "", 19, 0.0, True),
      ("spaces_only", "   ", 19, 0.0, True),
      ("inner_space", "1 9", 19, 0.0, True),
      ("minus_space", "- 19", 19, 0.0, True),
      ("plus_sign", "+19", 19, 0.0, True),
      ("expression", "10+9", 19, 0.0, True),
      ("unicode_digit", "\u0661\u0669", 19, 0.0, True),  # Arabic-Indic 19.
      ("unicode_space", "\u200919", 19, 0.0, True),
      ("newline", "19\n", 19, 0.0, True),
      ("text", "the answer is 19", 19, 0.0, True),
      ("decimal", "19.0", 19, 0.0, True),
  )
  def test_table(self, text, answer, reward, failed):
    out = arithmetic_task.reward(text, answer)
    self.assertEqual(out.reward, reward)
    self.assertEqual(out.parse_failed, failed)

  def test_non_string_never_raises(self):
    for bad in (None, 19, b"19", ["19"]):
      self.assertTrue(ARITH.score(bad, 19).parse_failed or
                      ARITH.score(bad, 19).reward in (0.0, 1.0))

  def test_generator_answers_are_right(self):
    rng = np.random.default_rng(0)
    for kw in (dict(), dict(num_digits=3, num_operands=3, ops="+-*/"),
               dict(num_digits=(1, 2), num_operands=4, ops="*/")):
      for _ in range(50):
        prompt, ans = arithmetic_task.generate(rng, **kw)
        self.assertTrue(prompt.endswith("="))
        expr = prompt[:-1]
        # Python's own evaluation agrees (divisions are exact by design).
        # pylint: disable-next=eval-used
        self.assertEqual(eval(expr.replace("/", "//")), ans)
        self.assertLessEqual(abs(ans), data.INT_LIMIT)

  def test_default_prompts_short(self):
    rng = np.random.default_rng(1)
    for _ in range(200):
      prompt, ans = ARITH.sample(rng)
      self.assertLessEqual(len(TOK.encode(prompt)), 16)
      self.assertEqual(ARITH.score(ARITH.solution_fn(prompt, ans), ans).reward,
                       1.0)

  def test_jax_table(self):
    texts = ["19", " 19 ", "-4", "18", "", "1 9", "99999999999", "0019",
             "2147483648", "-2147483647"]
    answers = [19, 19, -4, 19, 0, 19, 0, 19, 0, -2147483647]
    got = _jax_scores(ARITH, texts, answers)
    np.testing.assert_array_equal(got, [1, 1, 1, 0, 0, 0, 0, 1, 0, 1])

  def test_jax_trims_at_end_and_mask(self):
    ids, mask = _rows(["19"] * B)
    # Row 0: garbage after the end token is ignored.
    r = TOK.encode("19") + [TOK.eos_id] + TOK.encode("+x")
    ids[0, :len(r)], mask[0, :len(r)] = r, True
    # Row 1: garbage before it is not.
    r = TOK.encode("19+") + [TOK.eos_id]
    ids[1, :len(r)], mask[1, :len(r)] = r, True
    # Row 2: no end token (a truncated response): the masked text counts.
    mask[2, 2] = False
    # Row 3: an out-of-vocabulary id is malformed (decodes to "<unk>").
    ids[3, 1] = 999
    # Row 4: a masked-out position is skipped ("1?9" with "?" masked).
    r = TOK.encode("1?9") + [TOK.eos_id]
    ids[4, :len(r)], mask[4, :len(r)] = r, True
    mask[4, 1] = False
    got = np.asarray(_jit(ARITH.jax_reward_fn)(None, ids, mask,
                                               np.full((B,), 19)))
    np.testing.assert_array_equal(got[:6], [1, 0, 1, 0, 1, 1])
    np.testing.assert_array_equal(
        got, _python_rewards(ARITH, ids, mask, [19] * B))


class CountdownRewardTest(parameterized.TestCase):

  ANS = data.CountdownAnswer(24, (3, 5, 7, 9))
  DUP = data.CountdownAnswer(25, (5, 5, 1))

  @parameterized.named_parameters(
      ("simple", "3*5+9", 1.0, False),
      ("all_four", "9+7+5+3", 1.0, False),
      ("parens", "(7-5)*(9+3)", 1.0, False),
      ("spaces", " 3 * 5 + 9 ", 1.0, False),
      ("redundant_parens", "((3*5))+(9)", 1.0, False),
      ("wrong_value", "3*5+7", 0.0, False),
      ("reuses_number", "3*3+9+3", 0.0, False),        # 3 given once.
      ("foreign_number", "20+4", 0.0, False),
      ("inexact_division", "7/3*9+3", 0.0, False),     # 7/3 not exact.
      ("division_by_zero", "9/(5-5)+24", 0.0, False),
      ("just_target", "24", 0.0, False),
      ("leading_zero_literal", "03*5+9", 1.0, False),  # "03" reads as 3.
      ("huge_literal", "1" + "0" * 400, 0.0, False),
      ("empty", "", 0.0, True),
      ("unary_minus", "-3+27", 0.0, True),
      ("trailing_op", "3*5+9+", 0.0, True),
      ("unbalanced_open", "(3*5+9", 0.0, True),
      ("unbalanced_close", "3*5+9)", 0.0, True),
      ("empty_parens", "()+3*5+9", 0.0, True),
      ("adjacent_numbers", "3 5", 0.0, True),
      ("equals", "3*5+9=24", 0.0, True),
      ("unicode", "3\u00d75+9", 0.0, True),           # Multiplication sign.
      ("letters", "three*5+9", 0.0, True),
      ("power", "3**2+15", 0.0, True),
      ("deep_nesting", "(" * 500 + "3*5+9" + ")" * 500, 1.0, False),
  )
  def test_table(self, text, reward, failed):
    out = countdown_task.reward(text, self.ANS)
    self.assertEqual(out.reward, reward, msg=text[:40])
    self.assertEqual(out.parse_failed, failed, msg=text[:40])

  def test_each_number_at_most_once(self):
    self.assertEqual(countdown_task.reward("5*5", self.DUP).reward, 1.0)
    self.assertEqual(countdown_task.reward("5*5*1", self.DUP).reward, 1.0)
    self.assertEqual(countdown_task.reward("5*5*1*1", self.DUP).reward, 0.0)
    self.assertEqual(countdown_task.reward("(5+5+5)+10", self.DUP).reward,
                     0.0)

  def test_division_must_be_exact(self):
    ans = data.CountdownAnswer(6, (9, 3, 2, 4))
    self.assertEqual(countdown_task.reward("9/3*2", ans).reward, 1.0)
    self.assertEqual(countdown_task.reward("(9+3)/2", ans).reward, 1.0)
    self.assertEqual(countdown_task.reward("9/2*4/3", ans).reward, 0.0)
    self.assertEqual(countdown_task.reward("9*4/(3*2)", ans).reward, 1.0)
    np.testing.assert_array_equal(
        _jax_scores(CD, ["9/3*2", "(9+3)/2", "9/2*4/3", "9*4/(3*2)"],
                    [ans] * 4), [1, 1, 0, 1])

  def test_use_all(self):
    self.assertEqual(CD_ALL.score("5*5", self.DUP).reward, 0.0)
    self.assertEqual(CD_ALL.score("5*5*1", self.DUP).reward, 1.0)

  def test_overflow_is_wrong_not_a_crash(self):
    ans = data.CountdownAnswer(1, (65536, 65536, 65536))
    # 2**48 / 2**32 = 65536 ... overflows int32 on the way: reward 0.
    self.assertEqual(countdown_task.reward("65536*65536/65536", ans).reward,
                     0.0)
    self.assertEqual(_jax_scores(CD, ["65536*65536/65536"], [ans])[0], 0.0)

  def test_generated_problems_are_valid(self):
    rng = np.random.default_rng(0)
    for task in (CD, CD_ALL, data.countdown(num_numbers=3, max_number=9,
                                            ops="+*")):
      for _ in range(60):
        prompt, ans = task.sample(rng)
        self.assertEqual(prompt, ",".join(map(str, ans.numbers))
                         + f":{ans.target}=")
        self.assertEqual(task.score(ans.solution, ans).reward, 1.0,
                         msg=(prompt, ans))
        if task is CD:
          self.assertLessEqual(len(prompt), 16)

  def test_jax_table(self):
    texts = ["3*5+9", "(7-5)*(9+3)", "3*3+9+3", "7/3*9+3", "9/(5-5)+24",
             "", "3*5+9)", "(3*5+9", "3 5", "03*5+9", "3*5+9=24",
             "((3*5))+(9)"]
    got = _jax_scores(CD, texts, [self.ANS] * len(texts))
    want = [countdown_task.reward(t, self.ANS).reward for t in texts]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(want, [1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1])


class MathAnswerTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("boxed", "so \\boxed{72}.", "72", 1.0, False),
      ("nested_boxed", "\\boxed{\\boxed{3}}", "3", 1.0, False),
      ("last_box_wins", "\\boxed{2} no, \\boxed{3}", "3", 1.0, False),
      ("gsm8k_hashes", "48/2 = 24\n#### 72", "72", 1.0, False),
      ("commas", "#### 1,000", "1000", 1.0, False),
      ("decimal_equal", "\\boxed{72.0}", "72", 1.0, False),
      ("fraction", "\\boxed{\\frac{1}{2}}", "0.5", 1.0, False),
      ("answer_is", "The answer is 42.", "42", 1.0, False),
      ("last_number", "first 3 then 7 apples", "7", 1.0, False),
      ("wrong", "#### 71", "72", 0.0, False),
      ("huge_number", "#### " + "1" + "0" * 400, "72", 0.0, False),
      ("huge_equal", "\\boxed{" + "1" + "0" * 400 + "}", "1" + "0" * 400,
       1.0, False),
      ("hashes_missing_number", "#### ", "72", 0.0, True),
      ("hashes_only", "####", "72", 0.0, True),
      ("empty", "", "72", 0.0, True),
      ("whitespace", " \n\t ", "72", 0.0, True),
      ("no_number", "I do not know.", "72", 0.0, True),
      ("unicode_digits", "\u0667\u0662", "72", 0.0, True),
      ("unbalanced_box", "\\boxed{72", "72", 1.0, False),  # Falls back.
      ("garbage", "\x00\x01}}{{\\boxed", "72", 0.0, True),
      ("emoji", "\U0001F600 \\boxed{\U0001F600}", "72", 0.0, False),
  )
  def test_table(self, text, gold, reward, failed):
    out = data.math_reward(text, gold)
    self.assertEqual((out.reward, out.parse_failed), (reward, failed),
                     msg=text[:60])

  def test_strict_mode(self):
    self.assertTrue(data.math_reward("The answer is 42", "42",
                                     mode="strict").parse_failed)
    self.assertEqual(data.math_reward("#### 42", "42", mode="strict").reward,
                     1.0)

  def test_extract(self):
    self.assertEqual(data.extract_answer("\\boxed{\\boxed{3}}"), "3")
    self.assertEqual(data.extract_answer("$\\boxed{1,000}$."), "1,000")
    self.assertEqual(data.extract_answer("\\boxed 7 done"), "7")
    self.assertIsNone(data.extract_answer(None))
    self.assertEqual(data.extract_gold("blah\n#### 18"), "18")
    self.assertEqual(data.extract_gold("so $\\boxed{\\frac{3}{4}}$"),
                     "\\frac{3}{4}")

  @absltest.skipUnless(data.math_verify_available(), "math-verify missing")
  def test_math_verify_symbolic(self):
    self.assertEqual(data.math_reward("\\boxed{x^2+2x+1}", "(x+1)^2").reward,
                     1.0)
    self.assertEqual(data.math_reward("\\boxed{x^2+1}", "(x+1)^2").reward,
                     0.0)

  def test_without_math_verify_exact_only(self):
    self.assertEqual(data.math_reward("\\boxed{\\frac{2}{4}}", "1/2",
                                      use_math_verify=False).reward, 1.0)
    self.assertEqual(data.math_reward("\\boxed{x^2+2x+1}", "(x+1)^2",
                                      use_math_verify=False).reward, 0.0)

  @settings(max_examples=200, deadline=None, derandomize=True)
  @given(st.text(max_size=200))
  def test_never_raises(self, text):
    out = data.math_reward(text, "7")
    self.assertIn(out.reward, (0.0, 1.0))
    self.assertEqual(out.parse_failed, out.extracted is None)
    for task in (ARITH, CD):
      _, ans = task.sample(np.random.default_rng(0))
      self.assertIn(task.score(text, ans).reward, (0.0, 1.0))


# ---------------------------------------------------------------------------
# JAX checker == Python checker.

_ARITH_CHARS = "0123456789-- +*"
_CD_CHARS = "0123456789+-*/() "


@st.composite
def _arith_row(draw):
  answer = draw(st.integers(-999, 999))
  kind = draw(st.integers(0, 4))
  if kind == 0:
    text = str(answer)
  elif kind == 1:
    text = (" " * draw(st.integers(0, 2)) + str(answer + draw(
        st.sampled_from([0, 0, 1, -1, 10]))) + " " * draw(st.integers(0, 2)))
  elif kind == 2:
    text = draw(st.text(_ARITH_CHARS, max_size=T))
  else:
    text = str(draw(st.integers(-10**12, 10**12)))
  return text, answer


@st.composite
def _expr(draw, numbers):
  """A random expression over ``numbers`` (mostly valid, sometimes not)."""
  leaves = draw(st.lists(st.sampled_from(numbers + [draw(
      st.integers(0, 30))]), min_size=1, max_size=4))
  text = str(leaves[0])
  for x in leaves[1:]:
    op = draw(st.sampled_from("+-*/"))
    if draw(st.booleans()):
      text = f"({text}){op}{x}"
    else:
      text = f"{text}{op}{x}"
  if draw(st.integers(0, 5)) == 0:  # A small corruption.
    i = draw(st.integers(0, len(text)))
    text = text[:i] + draw(st.sampled_from(list(_CD_CHARS))) + text[i:]
  return text


@st.composite
def _cd_row(draw):
  numbers = draw(st.lists(st.integers(0, 12), min_size=2, max_size=4))
  if draw(st.integers(0, 4)) == 0:
    text = draw(st.text(_CD_CHARS, max_size=T))
  else:
    text = draw(_expr(numbers))
  target = draw(st.integers(-5, 60))
  try:  # Aim at the expression's own value half of the time.
    v, _ = countdown_task.evaluate(text)
    if draw(st.booleans()):
      target = v
  except Exception:  # pylint: disable=broad-except
    pass
  return text, data.CountdownAnswer(target, tuple(numbers))


def _tails():
  # What follows the text: end token (+ garbage) or nothing (truncated).
  return st.sampled_from([(True, ()), (True, (5, 14)), (False, ()),
                          (True, (TOK.eos_id, 7))])


class JaxEqualsPythonTest(absltest.TestCase):

  def _check(self, task, rows, tails):
    texts = [r[0] for r in rows]
    answers = [r[1] for r in rows]
    ids = np.full((len(rows), T), TOK.pad_id, np.int32)
    mask = np.zeros((len(rows), T), bool)
    for b, (text, (end, extra)) in enumerate(zip(texts, tails)):
      r = (TOK.encode(text) + ([TOK.eos_id] if end else []) + list(extra))
      r = r[:T]
      ids[b, :len(r)] = r
      mask[b, :len(r)] = True
    enc = np.stack([task.encode_answer(a) for a in answers])
    got = np.asarray(_jit(task.jax_reward_fn)(None, ids, mask, enc))
    want = _python_rewards(task, ids, mask, answers)
    bad = np.nonzero(got != want)[0]
    self.assertEqual(bad.size, 0, msg=[(texts[i], answers[i], got[i],
                                        want[i]) for i in bad[:5]])

  @settings(max_examples=25, deadline=None, derandomize=True)
  @given(st.lists(_arith_row(), min_size=B, max_size=B),
         st.lists(_tails(), min_size=B, max_size=B))
  def test_arithmetic(self, rows, tails):
    self._check(ARITH, rows, tails)

  @settings(max_examples=25, deadline=None, derandomize=True)
  @given(st.lists(_cd_row(), min_size=B, max_size=B),
         st.lists(_tails(), min_size=B, max_size=B))
  def test_countdown(self, rows, tails):
    self._check(CD, rows, tails)

  def test_random_token_ids_bulk(self):
    # Uniform ids (incl. specials and out-of-range), random masks with holes.
    rng = np.random.default_rng(0)
    n = B  # Same shape as every other call: no new compile.
    for task, make in ((ARITH, lambda: int(rng.integers(-99, 99))),
                       (CD, lambda: data.CountdownAnswer(
                           int(rng.integers(0, 30)),
                           tuple(int(x) for x in rng.integers(0, 9, 4))))):
      for _ in range(8):
        digits = rng.integers(4, 4 + 10, (n, T))
        ops = rng.integers(0, TOK.vocab_size + 3, (n, T))
        ids = np.where(rng.random((n, T)) < 0.6, digits, ops).astype(np.int32)
        mask = rng.random((n, T)) < 0.95
        answers = [make() for _ in range(n)]
        enc = np.stack([task.encode_answer(a) for a in answers])
        got = np.asarray(_jit(task.jax_reward_fn)(None, ids, mask, enc))
        want = _python_rewards(task, ids, mask, answers)
        np.testing.assert_array_equal(got, want)

  def test_gold_solutions_score_one_on_device(self):
    rng = np.random.default_rng(3)
    for task in (ARITH, CD):
      ex = [task.sample(rng) for _ in range(B)]
      ids, mask = _rows([task.solution_fn(p, a) for p, a in ex])
      enc = np.stack([task.encode_answer(a) for _, a in ex])
      np.testing.assert_array_equal(
          _jit(task.jax_reward_fn)(None, ids, mask, enc), np.ones(B))

  def test_sentencepiece_char_model(self):
    # A sentencepiece 'char' model is character-level: the JAX checker works
    # with it (spaces are pieces, control tokens decode to nothing).
    sp = tokenizers.train_sentencepiece(
        data.task_corpus(ARITH, 300) + ["-1 2 3 *"], 64, model_type="char")
    fn = jax.jit(ARITH.make_jax_reward_fn(sp))
    texts, answers = [" 19", "-4 ", "19", "1 9", ""], [19, -4, 18, 19, 0]
    ids = np.zeros((len(texts), T), np.int32)
    mask = np.zeros((len(texts), T), bool)
    for b, t in enumerate(texts):
      r = [sp.bos_id] + sp.encode(t) + [sp.eos_id]
      ids[b, :len(r)], mask[b, :len(r)] = r, True
    got = fn(None, ids, mask, np.asarray(answers))
    want = [ARITH.score(sp.decode(tokenizers.trim_at_end(
        ids[b], sp.end_ids, mask[b])), answers[b]).reward
            for b in range(len(texts))]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(want, [1, 1, 0, 0, 0])

  def test_multichar_tokenizer_refused(self):
    sp = tokenizers.train_sentencepiece(
        ["12 + 12 = 24", "123 + 123"] * 50, 64, model_type="bpe",
        split_digits=False)
    with self.assertRaisesRegex(ValueError, "character-level"):
      char_classes.char_class_table(sp)
    # The built-in task then falls back to its Python checker.
    task = data.arithmetic(tokenizer=sp)
    self.assertIsNone(task.jax_reward_fn)
    self.assertEqual(task.score("24", 24).reward, 1.0)


if __name__ == "__main__":
  absltest.main()
