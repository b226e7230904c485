"""The RL iteration and loop: one jit == step by step, seeds, Python
rewards, preemption, checkpoints, metrics and pass@k."""

import json
import os
import re
import signal
import tempfile

from absl.testing import absltest
import jax
import numpy as np

from entropy_rl import builders
from entropy_rl import data as data_lib
from entropy_rl.training import checkpoint as ckpt_lib
from entropy_rl.training import iteration as it_lib
from entropy_rl.training import loop
from entropy_rl.training import metrics as metrics_lib
from entropy_rl.training import step as step_lib
from entropy_rl.training import types
from experiments.configs import base


def tiny_config(config=None, **train):
  """A seconds-long variant of a config's :tiny size (1-layer model)."""
  c = base.get_config("tiny") if config is None else config
  c.model.update(hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=2,
                 intermediate_size=32)
  c.data.update(prompts_per_step=4, num_samples=4)
  c.sampling.update(max_new_tokens=4, block_size=4)
  c.sft.update(steps=0, batch_size=8)
  c.eval.update(every=0, num_prompts=8, num_samples=2, ks=(1, 2))
  c.checkpoint.update(every=0, async_save=False)
  c.log.update(tensorboard=False, progress=False)
  c.mesh.shape = (1, 1, 1)
  c.train.update(**{"num_steps": 2, **train})
  return c


class FastCompiles(absltest.TestCase):
  """Compiles without most XLA optimisations (each test compares programs
  compiled in the same mode); restored afterwards."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls._opt = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)

  @classmethod
  def tearDownClass(cls):
    jax.config.update("jax_disable_most_optimizations", cls._opt)
    super().tearDownClass()


class TinyExperimentTest(FastCompiles):
  """Builds the tiny experiment's step, rollout, prompt batches and state."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.exp = builders.build_experiment(tiny_config())
    exp = cls.exp
    # staticmethod: plain functions stored on a class would bind `self`.
    cls.train_step = staticmethod(step_lib.make_train_step(
        exp.fns, exp.objective, exp.transform, exp.optimizer,
        **exp.step_kwargs))
    cls.rollout_fn = staticmethod(it_lib.make_rollout_fn(
        exp.fns, loop._sample_fn(exp, exp.sampling), num_samples=4))
    ds = data_lib.prompt_map_dataset(exp.task, seed=0, batch_size=4,
                                     tokenizer=exp.tokenizer,
                                     max_prompt_len=8)
    cls.batches = [ds[0], ds[1]]
    cls.state0 = types.init_train_state(exp.params, exp.optimizer,
                                        exp.transform, 0)


class IterationTest(TinyExperimentTest):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    exp = cls.exp
    cls.iteration = staticmethod(it_lib.make_rl_iteration(
        cls.rollout_fn, exp.task.jax_reward_fn, cls.train_step,
        num_samples=4))

  def prompts(self, b):
    return loop._prompts(b, True)

  def run_single_jit(self, state):
    fn = jax.jit(self.iteration)
    ms = []
    for b in self.batches:
      state, m = fn(state, self.prompts(b))
      ms.append(m)
    return state, ms

  def test_single_jit_equals_step_by_step_and_python_reward(self):
    want, want_m = self.run_single_jit(self.state0)
    roll = jax.jit(self.rollout_fn)
    score = jax.jit(lambda ro, a: it_lib.score(self.exp.task.jax_reward_fn,
                                               ro, a, 4))
    update = jax.jit(self.train_step)
    s = self.state0
    for b, m_want in zip(self.batches, want_m):
      p = self.prompts(b)
      ro = roll(s.params, p, types.step_key(s, "rollout"))
      s, m = update(s, score(ro, p.answer))
      np.testing.assert_allclose(m["loss"], m_want["loss"], atol=1e-6)
      np.testing.assert_allclose(m["reward"], m_want["reward"], atol=0)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
                 s.params, want.params)
    # The Python checker between two jitted programs gives the same run.
    reward_fn = lambda t, mk, a: data_lib.score_responses(  # noqa: E731
        self.exp.task, self.exp.tokenizer, t, mk, a)
    s = self.state0
    for b, m_want in zip(self.batches, want_m):
      s, m = it_lib.python_reward_iteration(
          s, loop._prompts(b, False), b.answers, rollout_fn=roll,
          train_step=update, reward_fn=reward_fn, num_samples=4)
      np.testing.assert_allclose(m["reward"], m_want["reward"], atol=0)
      np.testing.assert_allclose(m["accuracy"], m_want["accuracy"], atol=0)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
                 s.params, want.params)

  def test_vmapped_seeds_equal_separate_runs(self):
    states = [types.init_train_state(self.exp.params, self.exp.optimizer,
                                     self.exp.transform,
                                     jax.random.PRNGKey(k)) for k in (3, 4)]
    fn = jax.jit(it_lib.vmap_seeds(self.iteration))
    stacked = it_lib.stack_states(states)
    p = self.prompts(self.batches[0])
    stacked, m = fn(stacked, p)
    self.assertEqual(m["loss"].shape, (2,))
    one = jax.jit(self.iteration)
    for i, st in enumerate(states):
      st, mi = one(st, p)
      np.testing.assert_allclose(m["loss"][i], mi["loss"], atol=1e-6)
      np.testing.assert_allclose(m["reward"][i], mi["reward"], atol=0)
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
                   it_lib.unstack_state(stacked, i).params, st.params)
    # Different seeds really sample differently.
    self.assertFalse(np.allclose(m["sampler_logp"][0], m["sampler_logp"][1]))


class LoopTest(FastCompiles):

  def test_preemption_saves_and_resume_continues(self):
    cfg = tiny_config(num_steps=3)
    cfg.eval.every = 2
    exp = builders.build_experiment(cfg)
    workdir = tempfile.mkdtemp()
    write = metrics_lib.MetricWriter.write

    def write_then_signal(self, step, metrics, phase="rl"):
      out = write(self, step, metrics, phase)
      if phase == "rl" and step == 1:
        os.kill(os.getpid(), signal.SIGTERM)  # handled: stop after step 1
      return out

    metrics_lib.MetricWriter.write = write_then_signal
    try:
      summary = loop.run_rl(exp, workdir)
    finally:
      metrics_lib.MetricWriter.write = write
    self.assertEqual(summary["status"], "preempted")
    self.assertEqual(summary["step"], 1)
    ck = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"))
    self.assertEqual(ck.latest_step(), 1)
    ck.close()
    summary = loop.run_rl(exp, workdir)  # resumes at step 1
    self.assertEqual(summary["status"], "done")
    self.assertEqual(summary["step"], 3)
    recs = metrics_lib.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    self.assertEqual([r["step"] for r in recs if r["phase"] == "rl"],
                     [1, 2, 3])
    self.assertEqual([r["step"] for r in recs if r["phase"] == "eval"],
                     [0, 2, 3])
    first = [r for r in recs if r["phase"] == "rl"]
    for k in ("entropy", "entropy_change", "pred_entropy_change", "reward",
              "accuracy", "cov_logp_adv", "clipped_high_frac", "step_time",
              "tokens_per_s", "response_length", "nonfinite_steps",
              "entropy_q90", "grad_norm"):
      self.assertIn(k, first[0])
    ev = [r for r in recs if r["phase"] == "eval"][-1]
    for k in ("eval/accuracy", "eval/pass@1", "eval/pass@2"):
      self.assertBetween(ev[k], 0.0, 1.0)
    with open(os.path.join(workdir, "summary.json"), encoding="utf-8") as f:
      self.assertEqual(json.load(f)["step"], 3)

  def test_sft_then_rl_with_seeds(self):
    cfg = tiny_config(num_steps=1)
    cfg.sft.update(steps=3, seq_len=12)
    cfg.num_seeds = 2
    cfg.eval.every = 1
    exp = builders.build_experiment(cfg)
    workdir = tempfile.mkdtemp()
    summary = loop.run(exp, workdir)
    self.assertEqual(summary["status"], "done")
    recs = metrics_lib.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    rl = [r for r in recs if r["phase"] == "rl"][0]
    self.assertIn("reward@seed1", rl)
    sft = metrics_lib.read_jsonl(os.path.join(workdir, "sft",
                                              "metrics.jsonl"))
    self.assertEqual([r["step"] for r in sft], [1, 2, 3])
    # A finished warm-up is loaded, not redone.
    params = loop.run_sft(exp, os.path.join(workdir, "sft"))
    self.assertEqual(jax.tree.structure(params),
                     jax.tree.structure(exp.params))


class _Killed(Exception):
  """A simulated kill of the process (raised mid-write by a test)."""


def _rows_by_key(recs):
  """{(phase, step): record without timing fields}; asserts one each."""
  out = {}
  for r in recs:
    key = (r["phase"], r["step"])
    assert key not in out, f"two rows for {key}"
    out[key] = {k: v for k, v in r.items()
                if k not in ("step_time", "tokens_per_s")}
  return out


class ResumeMetricsTest(FastCompiles):
  """Kills at random points of the metric writes, then resumes: the log
  ends with exactly the rows an uninterrupted run writes."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cfg = tiny_config(num_steps=3)
    cfg.eval.every = 2
    cfg.checkpoint.every = 1
    cls.exp = builders.build_experiment(cfg)
    cls.want_dir = tempfile.mkdtemp()
    loop.run_rl(cls.exp, cls.want_dir)

  def rows(self, workdir):
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
      lines = f.read().splitlines()
    return _rows_by_key([json.loads(line) for line in lines])

  def run_killed_at(self, workdir, kill_at, cut):
    """run_rl that dies in its ``kill_at``-th metric write (0-based), after
    writing ``cut`` (a fraction) of that line; True if it was killed."""
    append = metrics_lib.MetricWriter._append
    calls = []

    def torn_append(writer, data):
      calls.append(None)
      if len(calls) - 1 == kill_at:
        append(writer, data[:int(cut * len(data))])
        raise _Killed()
      append(writer, data)

    metrics_lib.MetricWriter._append = torn_append
    try:
      loop.run_rl(self.exp, workdir)
    except _Killed:
      return True
    finally:
      metrics_lib.MetricWriter._append = append
    return False

  def test_kills_during_metric_writes_then_resume_equal_a_straight_run(self):
    want = self.rows(self.want_dir)
    self.assertEqual(sorted(want), [("eval", 0), ("eval", 2), ("eval", 3),
                                    ("rl", 1), ("rl", 2), ("rl", 3)])
    rng = np.random.default_rng(0)
    workdir = tempfile.mkdtemp()
    # The first kill tears the step-1 row: eval 0 is written, no checkpoint
    # yet, so the resumed run evaluates step 0 again. Then random points.
    kills = [(1, rng.uniform())] + [(int(rng.integers(0, 3)), rng.uniform())
                                    for _ in range(2)]
    for kill_at, cut in kills:
      self.assertTrue(self.run_killed_at(workdir, kill_at, cut))
    self.assertFalse(self.run_killed_at(workdir, 99, 0.0))
    self.assertEqual(self.rows(workdir), want)

  def test_kill_before_the_first_checkpoint_keeps_one_step0_eval(self):
    workdir = tempfile.mkdtemp()
    self.assertTrue(self.run_killed_at(workdir, 1, 1.0))  # whole rl-1 line
    self.assertFalse(self.run_killed_at(workdir, 99, 0.0))
    self.assertEqual(self.rows(workdir), self.rows(self.want_dir))


class LayoutTest(absltest.TestCase):

  def test_the_loop_names_no_method(self):
    # Rollout-side methods reach the loop as hooks (Experiment.rollout_hook).
    with open(loop.__file__, encoding="utf-8") as f:
      src = f.read()
    self.assertIsNone(re.search("aepo|cure|dapo|dynamic_sampling|hapo", src,
                                re.IGNORECASE))


class MetricsTest(absltest.TestCase):

  def test_pass_at_k(self):
    self.assertAlmostEqual(metrics_lib.pass_at_k(4, 0, 2), 0.0)
    self.assertAlmostEqual(metrics_lib.pass_at_k(4, 4, 1), 1.0)
    # 1 - C(2,2)/C(4,2) = 1 - 1/6.
    self.assertAlmostEqual(metrics_lib.pass_at_k(4, 2, 2), 5 / 6)
    self.assertAlmostEqual(metrics_lib.pass_at_k(4, 1, 1), 0.25)
    out = metrics_lib.mean_pass_at_k(np.array([[1, 0], [0, 0]], bool),
                                     (1, 2, 4))
    self.assertEqual(out, {"pass@1": 0.25, "pass@2": 0.5})

  def test_writer_and_reader(self):
    d = tempfile.mkdtemp()
    w = metrics_lib.MetricWriter(d)
    w.write(1, {"a": np.float32(1.5), "b": np.array([1.0, 3.0])})
    w.write(2, {"a": float("nan")})
    w.close()
    recs = metrics_lib.read_jsonl(os.path.join(d, "metrics.jsonl"))
    self.assertEqual(recs[0], {"step": 1, "phase": "rl", "a": 1.5, "b": 2.0,
                               "b@seed0": 1.0, "b@seed1": 3.0})
    self.assertIsNone(recs[1]["a"])
    self.assertTrue(os.listdir(os.path.join(d, "tb")))

  def test_resume_drops_a_torn_tail_and_the_next_row_is_whole(self):
    d = tempfile.mkdtemp()
    path = os.path.join(d, "metrics.jsonl")
    rows = [{"step": 0, "phase": "eval", "a": 0.5},
            {"step": 1, "phase": "rl", "a": 1.0},
            {"step": 2, "phase": "rl", "a": 2.0}]
    with open(path, "w", encoding="utf-8") as f:
      f.writelines(json.dumps(r) + "\n" for r in rows)
      f.write(json.dumps({"step": 3, "phase": "rl", "a": 3.0})[:9])  # torn
    loop._resume_jsonl(path, {"rl": 3, "eval": 1})  # checkpoint at step 2
    w = metrics_lib.MetricWriter(d, tensorboard=False)
    w.write(3, {"a": 3.5})
    w.close()
    with open(path, encoding="utf-8") as f:
      lines = f.read().splitlines()
    self.assertEqual([json.loads(x) for x in lines],
                     rows + [{"step": 3, "phase": "rl", "a": 3.5}])

  def test_resume_drops_redone_steps_and_the_step0_eval(self):
    d = tempfile.mkdtemp()
    path = os.path.join(d, "metrics.jsonl")
    rows = [{"step": 0, "phase": "eval"}, {"step": 1, "phase": "rl"},
            {"step": 1, "phase": "sft"}]
    with open(path, "w", encoding="utf-8") as f:
      f.writelines(json.dumps(r) + "\n" for r in rows)
    # No checkpoint yet: step 0 is evaluated again, step 1 redone.
    loop._resume_jsonl(path, {"rl": 1, "eval": 0})
    self.assertEqual(metrics_lib.read_jsonl(path), rows[2:])

  def test_a_failed_rewrite_leaves_the_file_as_it_was(self):
    d = tempfile.mkdtemp()
    path = os.path.join(d, "metrics.jsonl")
    text = '{"step": 1, "phase": "rl"}\n{"step": 2, "ph'
    with open(path, "w", encoding="utf-8") as f:
      f.write(text)
    replace = os.replace

    def killed(*args):
      raise _Killed()

    os.replace = killed
    try:
      with self.assertRaises(_Killed):
        metrics_lib.rewrite_jsonl(path, lambda r: True)
    finally:
      os.replace = replace
    with open(path, encoding="utf-8") as f:
      self.assertEqual(f.read(), text)
    self.assertEqual(os.listdir(d), ["metrics.jsonl"])  # no temporary left

  def test_writer_starts_a_new_line_after_a_torn_one(self):
    d = tempfile.mkdtemp()
    path = os.path.join(d, "metrics.jsonl")
    with open(path, "w", encoding="utf-8") as f:
      f.write('{"step": 1, "phase": "rl"}\n{"step": 2, "ph')
    w = metrics_lib.MetricWriter(d, tensorboard=False)
    w.write(2, {"a": 1.0})
    w.close()
    self.assertEqual(metrics_lib.read_jsonl(path),
                     [{"step": 1, "phase": "rl"},
                      {"step": 2, "phase": "rl", "a": 1.0}])


if __name__ == "__main__":
  absltest.main()
