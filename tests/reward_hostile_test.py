"""Hostile model outputs against every reward checker and the calculator.

The policy's text is untrusted: whatever it writes, a checker must return a
finite reward in its range, raise nothing, execute nothing, and take at
most about its time budget (the bounded worker pool of
`entropy_rl.data.bounded`). Before that pool and the pre-filters, each of
the three named responses cost `math_reward` 5-6 s and a countdown response
of 5000 nested parentheses 1.2 s.
"""

import functools
import json
import os
import time

from hypothesis import given
from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st
import numpy as np
import pytest

from entropy_rl import agents
from entropy_rl import builders
from entropy_rl import data
from entropy_rl.data import bounded
from entropy_rl.data import types

BUDGET = 0.1  # CPU seconds per response in these tests.
SLACK = 1.0   # Wall seconds allowed on top (a loaded 2-core machine).
NAMED = (r"\boxed{9^{9^{9^{9}}}}", r"\boxed{10^{10^{10}}!}",
         "\\boxed{" + "(" * 300 + "1" + ")" * 300 + "}")

_FUZZ = settings(max_examples=30, deadline=None, database=None,
                 suppress_health_check=list(HealthCheck))


def _nested(n, open_, close, inner="1"):
  return open_ * n + inner + close * n


def _tower(n, base="9"):
  s = base
  for _ in range(n):
    s = f"{base}^{{{s}}}"
  return s


# Hostile shapes, each possibly boxed / tagged / behind "the answer is".
HOSTILE = st.one_of(
    st.text(max_size=200),
    st.integers(1, 2000).map(lambda n: _nested(n, "(", ")")),
    st.integers(1, 2000).map(lambda n: _nested(n, "{", "}")),
    st.integers(1, 500).map(lambda n: _nested(n, "\\left(", "\\right)")),
    st.tuples(st.integers(2, 8), st.sampled_from(["9", "x", "10", "2"])).map(
        lambda t: _tower(*t)),
    st.integers(1, 10**12).map(lambda n: f"10^{{{n}}}"),
    st.integers(1, 10**9).map(lambda n: f"{n}!"),
    st.integers(1, 400).map(lambda n: "9" * n),
    st.integers(3, 12).map(lambda n: f"(10^{{{10**n}}})!"),
    st.text(max_size=50).map(lambda t: "\\boxed{" + t),
    st.sampled_from(["\x00", "\x00\\boxed{\x001}", "\\boxed{1}\x00" * 10]),
    st.lists(st.sampled_from([
        "\\frac", "\\sqrt", "\\int", "\\sum_{n=1}^{\\infty}",
        "\\begin{pmatrix}",
        "\\end{pmatrix}", "\\\\", "&", "\\mathbb{R}", "\\lim_{x\\to 0}",
        "\\binom{10^{100}}{5}", "\\overline", "\\text{", "}", "{", "^", "_",
        "x", "1", "\\cdot", "\\infty", "!", "\\def\\a{\\a\\a}\\a",
    ]), max_size=40).map("".join),
    st.sampled_from([
        "__import__('os').system('touch PWNED')",
        "().__class__.__base__.__subclasses__()",
        "exec(\"open('PWNED','w')\")", "lambda: 1", "[x for x in range(10**9)]",
        "'a' * 10**10", "2**2**2**2**2", "9**9**9", "factorial(10**100)",
    ]),
)


def _wrap(draw_kind, s):
  return [s, "\\boxed{" + s + "}", "<answer>" + s + "</answer>",
          "The answer is " + s, "#### " + s][draw_kind]


RESPONSES = st.tuples(st.integers(0, 4), HOSTILE).map(lambda t: _wrap(*t))


@pytest.fixture(scope="module")
def pool():
  p = bounded.ScorePool(2).start(("math_verify", "sympy", "reasoning_gym"))
  yield p
  pids = p.pids()
  p.close()
  assert p.pids() == []
  for pid in pids:  # No worker outlives the pool.
    with pytest.raises(ProcessLookupError):
      os.kill(pid, 0)


@pytest.fixture(scope="module")
def math_task(tmp_path_factory):
  path = tmp_path_factory.mktemp("jsonl") / "train.jsonl"
  with open(path, "w", encoding="utf-8") as f:
    f.write(json.dumps({"question": "2+3?", "answer": "#### 5"}) + "\n")
    f.write(json.dumps({"question": "half?",
                        "answer": "\\boxed{\\frac{1}{2}}"}) + "\n")
  return data.get_task(f"jsonl:{path}")


@pytest.fixture(scope="module")
def rg_tasks():
  return {name: data.get_task(f"rg:{name}", size=20, seed=0)
          for name in ("basic_arithmetic", "countdown", "spiral_matrix")}


def _check(out, n, lo=0.0, hi=1.0):
  assert out.rewards.shape == (n,) and out.rewards.dtype == np.float32
  assert np.all(np.isfinite(out.rewards))
  assert np.all((out.rewards >= lo) & (out.rewards <= hi))
  assert out.parse_failed.dtype == bool and out.timeouts.dtype == bool


def _timed(pool, task, texts, answers, budget=BUDGET):
  t = time.monotonic()
  out = pool.score(task.reward_fn, texts, answers, budget)
  return out, time.monotonic() - t


def test_named_examples_are_fast_and_score_zero(pool, math_task):
  gold = math_task.examples[0][1]
  data.math_reward("\\boxed{x+1}", "1+x")  # Imports math-verify here.
  for text in NAMED:
    out, wall = _timed(pool, math_task, [text], [gold])
    _check(out, 1)
    assert out.rewards[0] == 0.0
    assert wall < BUDGET + SLACK, (text[:30], wall)
    # Before the fix the checker itself took 5-6 s on each; the pre-filter
    # now rejects them in microseconds, in-process too.
    t = time.monotonic()
    assert data.math_reward(text, "5").reward == 0.0
    assert time.monotonic() - t < 0.1


def test_over_budget_scores_zero_and_counts_as_timeout(pool, math_task):
  gold = math_task.examples[0][1]
  # Not pre-filtered (3-level towers are legal), but seconds of sympy.
  slow = "\\boxed{" + "+".join(f"{v}^{{{v}^{{{v}}}}}!" for v in "xyzw") + "}"
  out, wall = _timed(pool, math_task, [slow, "\\boxed{5}"], [gold, gold])
  _check(out, 2)
  assert out.timeouts.tolist() == [True, False]
  assert out.rewards.tolist() == [0.0, 1.0]
  assert wall < BUDGET + SLACK + 1.0


def test_hostile_batch_of_64_finishes_in_seconds(pool, math_task):
  gold = math_task.examples[0][1]
  # Distinct (sympy caches), each over budget or pre-filtered.
  texts = []
  for i in range(64):
    v = "abcdefghijklmnopqrstuvwxyz"[i % 26] + str(i)
    kind = i % 4
    if kind == 0:
      texts.append("\\boxed{" + "+".join(
          f"{v}{k}^{{{v}{k}^{{{v}{k}}}}}!" for k in range(4)) + "}")
    elif kind == 1:
      texts.append("\\boxed{" + _tower(3 + i % 5, str(2 + i)) + "}")
    elif kind == 2:
      texts.append("\\boxed{" + _nested(200 + i, "(", ")") + "}")
    else:
      texts.append(f"\\boxed{{({10**(i + 3)})!}}")
  out, wall = _timed(pool, math_task, texts, [gold] * 64)
  _check(out, 64)
  assert np.all(out.rewards == 0.0)
  # 16 checks run to the budget, on 2 workers: ~1 s of CPU; unbounded,
  # this batch took minutes.
  print(f"64 hostile responses: {wall:.2f}s, {out.timeouts.sum()} timeouts")
  assert wall < 16 * BUDGET / 2 + 10.0


@_FUZZ
@given(text=RESPONSES)
def test_fuzz_math(pool, math_task, text):
  gold = math_task.examples[1][1]
  out, wall = _timed(pool, math_task, [text], [gold])
  _check(out, 1)
  assert wall < BUDGET + SLACK


@_FUZZ
@given(text=RESPONSES, which=st.sampled_from(
    ["basic_arithmetic", "countdown", "spiral_matrix"]))
def test_fuzz_reasoning_gym(pool, rg_tasks, text, which):
  task = rg_tasks[which]
  out, wall = _timed(pool, task, [text], [task.examples[0][1]])
  _check(out, 1)
  assert wall < BUDGET + SLACK


@_FUZZ
@given(text=RESPONSES)
def test_fuzz_builtin_checkers_in_process(text):
  arith, cd = data.arithmetic(), data.countdown()
  ans = cd.sample(np.random.default_rng(0))[1]
  t = time.monotonic()
  for task, answer in ((arith, 19), (cd, ans)):
    out = data.score_texts(task, [text], [answer])
    _check(out, 1)
  assert time.monotonic() - t < BUDGET + SLACK


def test_long_inputs(pool, math_task, rg_tasks):
  big = ["1" * (1 << 20), "(" * (1 << 20), "\\boxed{" * (1 << 17),
         "\x00" * (1 << 20)]
  for task, answer in ((math_task, math_task.examples[0][1]),
                       (rg_tasks["countdown"], rg_tasks["countdown"]
                        .examples[0][1])):
    out, wall = _timed(pool, task, big, [answer] * len(big))
    _check(out, len(big))
    assert wall < len(big) * (BUDGET + SLACK)
  t = time.monotonic()
  cd = data.countdown()
  ans = cd.sample(np.random.default_rng(0))[1]
  for text in big + ["(" * 4999 + "1" + ")" * 4999]:
    _check(data.score_texts(cd, [text], [ans]), 1)
    _check(data.score_texts(data.arithmetic(), [text], [7]), 1)
  assert time.monotonic() - t < 1.0  # Was 1.2 s for the 5000 parentheses.


def test_no_code_execution(pool, rg_tasks, tmp_path):
  target = tmp_path / "pwned"
  code = f"__import__('pathlib').Path({str(target)!r}).touch()"
  ds_task = rg_tasks["countdown"]
  item = ds_task.examples[0][1]
  for text in (f"<answer>{code}</answer>", f"The answer is {code}", code):
    out = pool.score(ds_task.reward_fn, [text], [item], BUDGET)
    _check(out, 1)
    assert ds_task.score(text, item).reward == 0.0  # In-process too.
  lit = rg_tasks["spiral_matrix"]
  out = pool.score(lit.reward_fn, [f"<answer>{code}</answer>"],
                   [lit.examples[0][1]], BUDGET)
  _check(out, 1)
  assert not target.exists()
  # The guard matters: reasoning-gym's own countdown scorer runs the text.
  ds_task.reward_fn.dataset.score_answer(answer=code, entry=item)
  assert target.exists()


def test_answer_is_inert():
  inert = data.rg_tasks.answer_is_inert
  assert inert("36+29-(95/5)*4", "expr")
  assert inert("x**2 + sin(x) + C", "expr")
  assert not inert("__import__('os')", "expr")
  assert not inert("x.__class__", "expr")
  assert not inert("open(1)", "expr")
  assert inert("[[1, 2], [3, -4]]", "literal")
  assert inert("1 2 3", "literal")  # Not Python: eval only raises.
  assert not inert("[open('f')]", "literal")
  assert not inert("'a' * 10**10", "literal")
  assert inert("anything at all", None)


def test_parallel_scores_equal_serial_scores(pool, math_task, rg_tasks):
  rng = np.random.default_rng(0)
  gold = math_task.examples[1][1]
  texts, answers = [], []
  for i in range(160):
    a, b = int(rng.integers(1, 60)), int(rng.integers(1, 60))
    texts.append([f"#### {a}", f"so \\boxed{{{a}/{b}}}", f"The answer is {a}",
                  f"\\boxed{{\\frac{{{a}}}{{{2 * a + i % 2}}}}}",
                  f"\\boxed{{{a}.5}}", "\\boxed{0.5}", f"x = {a}",
                  f"\\boxed{{\\dfrac{{{b}}}{{{2 * b}}}}}"][i % 8])
    answers.append(gold if i % 3 else math_task.examples[0][1])
  for i in range(40):
    item = rg_tasks["basic_arithmetic"].examples[i % 20][1]
    texts.append([f"<answer>{item['answer']}</answer>", f"{i} = {i}",
                  f"\\boxed{{{item['answer']}}}", "zzz"][i % 4])
    answers.append(item)
  want = [types.safe_reward(math_task.reward_fn if i < 160 else
                            rg_tasks["basic_arithmetic"].reward_fn, t, a)
          for i, (t, a) in enumerate(zip(texts, answers))]
  got_m = pool.score(math_task.reward_fn, texts[:160], answers[:160], 5.0)
  got_r = pool.score(rg_tasks["basic_arithmetic"].reward_fn, texts[160:],
                     answers[160:], 5.0)
  got = np.concatenate([got_m.rewards, got_r.rewards])
  failed = np.concatenate([got_m.parse_failed, got_r.parse_failed])
  np.testing.assert_array_equal(got, [w.reward for w in want])
  np.testing.assert_array_equal(failed, [w.parse_failed for w in want])
  assert not got_m.timeouts.any() and not got_r.timeouts.any()
  assert 0 < got.sum() < len(got)  # Both right and wrong answers.


def test_dead_worker_is_replaced(pool, math_task):
  gold = math_task.examples[0][1]
  pool.score(math_task.reward_fn, ["\\boxed{5}"], [gold], BUDGET)
  victim = pool.pids()[0]
  os.kill(victim, 9)
  time.sleep(0.2)
  out = pool.score(math_task.reward_fn, ["\\boxed{5}", "#### 4"] * 3,
                   [gold] * 6, 1.0)
  assert out.rewards.tolist() == [1.0, 0.0] * 3
  assert victim not in pool.pids() and len(pool.pids()) == 2


def test_unpicklable_checker_runs_in_process():
  task = types.Task("closure", sample=lambda rng: ("p", 1),
                    reward_fn=lambda text, answer: float(text == "1"),
                    reward_time_budget=BUDGET)
  out = data.score_texts(task, ["1", "2"], [1, 1])
  assert out.rewards.tolist() == [1.0, 0.0]


def test_builder_sets_the_budget():
  spec = dict(name="arithmetic", kwargs={})
  assert builders.build_task(spec).reward_time_budget == (
      builders.DEFAULT_REWARD_TIME_BUDGET)
  spec["reward_time_budget"] = 0
  assert builders.build_task(spec).reward_time_budget is None
  spec["reward_time_budget"] = -1
  with pytest.raises(ValueError, match="reward_time_budget"):
    builders.build_task(spec)


def test_calculator_tool_is_safe():
  for expr in ("9**9**9", "__import__('os')", "1/0", "(" * 60, "1e308*1e308",
               "9" * 64, "\x00", "1" * 10**6, "lambda: 1", "2**-1"):
    t = time.monotonic()
    assert agents.safe_eval(expr) is None
    assert time.monotonic() - t < 0.1
  assert agents.safe_eval("(3 + 4) * 2") == "14"


@_FUZZ
@given(text=st.one_of(st.text(max_size=80), HOSTILE))
def test_fuzz_calculator_env(text):
  envs, spec, tok = _calc()
  env = envs[0]
  env.reset(np.zeros(2, np.uint32))
  assert agents.safe_eval(text) is None or isinstance(
      agents.safe_eval(text), str)
  for prefix in ("calc:", "answer:", ""):
    ids = tok.encode(prefix + text)[:spec.action_len - 1] + [tok.eos_id]
    obs, reward, done = env.step(ids)
    assert np.isfinite(reward) and 0.0 <= reward <= 1.0
    assert isinstance(obs, list) and isinstance(done, bool)
    if done:
      env.reset(np.zeros(2, np.uint32))


@functools.lru_cache(maxsize=1)
def _calc():
  return agents.calculator_task(num_envs=1, size=20)
