"""Damaged checkpoints and failed saves: the Checkpointer falls back to the
newest checkpoint that restores, moves damaged ones aside (never deletes
them), checks what it wrote, and stops a run that cannot save with a clear
message while keeping what was saved before.

Each case truncates (to half its size) or overwrites with garbage one kind
of file of the latest checkpoint of a small pytree + grain iterator, then
restores. No model is compiled except in the one loop test at the end.
"""

import errno
import glob
import json
import os
import shutil
import tempfile
import warnings

from absl.testing import absltest
from absl.testing import parameterized
import grain
import jax.numpy as jnp
import numpy as np
from orbax.checkpoint import handlers as ocp_handlers

from entropy_rl import builders
from entropy_rl.training import checkpoint as ckpt_lib
from entropy_rl.training import loop
from entropy_rl.training import metrics as metrics_lib
from tests import training_loop_test

# The files of one step folder (orbax 0.12.8, OCDBT), relative to it.
FILE_KINDS = {
    "state_data": "state/d/*",  # the OCDBT data file(s): b-tree + chunks
    "state_manifest": "state/manifest.ocdbt",
    "state_metadata": "state/_METADATA",
    "state_array_metadata": "state/array_metadatas/process_0",
    "meta": "meta/metadata",
    "data_iterator": "data/process_0-of-1.json",
}
CASES = [(f"{kind}_{how}", kind, how) for kind in FILE_KINDS
         for how in ("truncated", "garbage")]


def _state(step):
  """A small train-state-like pytree whose values identify ``step``."""
  rng = np.random.RandomState(step)
  return {"w": jnp.asarray(rng.randn(48, 48).astype(np.float32)),
          "b": jnp.arange(3, dtype=jnp.int32) * step,
          "step": jnp.int32(step)}


def _iterator():
  return iter(grain.MapDataset.range(1000).batch(2).to_iter_dataset())


def _save(directory, steps, **kw):
  """Saves ``steps``; before step k the iterator has yielded k batches."""
  it = _iterator()
  with ckpt_lib.Checkpointer(directory, keep=5, keep_best=0, **kw) as ck:
    for k in steps:
      while int(next(it)[0]) // 2 + 1 < k:
        pass
      ck.save(k, _state(k), data_iterator=it, meta={"k": k}, force=True)


def _damage(step_dir, pattern, how):
  """Truncates / overwrites every file matching ``pattern``; returns them."""
  files = sorted(glob.glob(os.path.join(step_dir, pattern)))
  assert files, f"no {pattern} in {os.listdir(step_dir)}"
  for path in files:
    with open(path, "rb") as f:
      data = f.read()
    if how == "truncated":
      data = data[:len(data) // 2]
    else:
      data = np.random.RandomState(0).bytes(max(len(data), 16))
    with open(path, "wb") as f:
      f.write(data)
  return [os.path.relpath(p, step_dir) for p in files]


def _restore(directory, steps_back=None):
  """Restores into a fresh target; returns (restored, meta, next batch)."""
  it = _iterator()
  with ckpt_lib.Checkpointer(directory, keep=5, keep_best=0) as ck:
    out = ck.restore(_state(0), data_iterator=it, step=steps_back)
    steps = ck.all_steps()
  state, meta = out
  return state, meta, next(it), steps


def _tempdir(test):
  d = tempfile.mkdtemp()
  test.addCleanup(shutil.rmtree, d, ignore_errors=True)
  return d


def _assert_state_of(test, state, meta, batch, k):
  want = _state(k)
  for name in want:
    np.testing.assert_array_equal(np.asarray(state[name]),
                                  np.asarray(want[name]))
    test.assertEqual(state[name].dtype, want[name].dtype)
  test.assertEqual(meta, {"k": k})
  # The iterator continues right after step k's position.
  np.testing.assert_array_equal(batch, [2 * k, 2 * k + 1])


class CorruptionTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.clean = tempfile.mkdtemp()
    _save(cls.clean, (1, 2, 3), async_save=False)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.clean, ignore_errors=True)
    super().tearDownClass()

  def copy(self):
    d = os.path.join(_tempdir(self), "checkpoints")
    shutil.copytree(self.clean, d)
    return d

  def test_clean_restore(self):
    state, meta, batch, steps = _restore(self.copy())
    _assert_state_of(self, state, meta, batch, 3)
    self.assertEqual(steps, [1, 2, 3])

  @parameterized.named_parameters(CASES)
  def test_latest_damaged_falls_back_and_is_moved_aside(self, kind, how):
    d = self.copy()
    files = _damage(os.path.join(d, "3"), FILE_KINDS[kind], how)
    with self.assertWarns(ckpt_lib.CheckpointWarning) as cm:
      state, meta, batch, steps = _restore(d)
    _assert_state_of(self, state, meta, batch, 2)
    self.assertEqual(steps, [1, 2])
    msg = str(cm.warning)
    self.assertIn("step 3", msg)
    self.assertTrue(any(f in msg for f in files), (files, msg))
    # Moved aside, not deleted: the damaged files are still there.
    moved = os.path.join(d, "corrupt", "3")
    self.assertFalse(os.path.exists(os.path.join(d, "3")))
    for f in files:
      self.assertTrue(os.path.isfile(os.path.join(moved, f)), f)
    # A new Checkpointer (the next start) does not see it again.
    with warnings.catch_warnings():
      warnings.simplefilter("error", ckpt_lib.CheckpointWarning)
      state, meta, batch, steps = _restore(d)
    _assert_state_of(self, state, meta, batch, 2)
    self.assertEqual(steps, [1, 2])

  def test_two_damaged_fall_back_two_steps(self):
    d = self.copy()
    _damage(os.path.join(d, "3"), FILE_KINDS["state_data"], "truncated")
    _damage(os.path.join(d, "2"), FILE_KINDS["meta"], "garbage")
    with self.assertWarns(ckpt_lib.CheckpointWarning):
      state, meta, batch, steps = _restore(d)
    _assert_state_of(self, state, meta, batch, 1)
    self.assertEqual(steps, [1])
    self.assertCountEqual(os.listdir(os.path.join(d, "corrupt")), ["2", "3"])

  @parameterized.named_parameters(
      ("state_data", "state_data", "state/d/"),
      ("meta", "meta", "meta/metadata"),
      ("data_iterator", "data_iterator", "data/process_0-of-1.json"))
  def test_nothing_restores_names_step_file_and_reason(self, kind, name):
    d = os.path.join(_tempdir(self), "checkpoints")
    _save(d, (1,), async_save=False)
    _damage(os.path.join(d, "1"), FILE_KINDS[kind], "truncated")
    with self.assertRaises(ckpt_lib.CheckpointCorruptError) as cm:
      _restore(d)
    self.assertIsInstance(cm.exception, RuntimeError)
    msg = str(cm.exception)
    self.assertIn("step 1", msg)
    self.assertIn(name, msg)
    self.assertIn(d, msg)
    (failure,) = cm.exception.failures
    self.assertEqual(failure.step, 1)
    self.assertIn(name, failure.file)
    self.assertTrue(failure.reason)
    # Nothing that might still be wanted is moved when nothing restores (a
    # wrong target, e.g. a changed config, must not empty the directory).
    self.assertTrue(os.path.isdir(os.path.join(d, "1")))

  def test_target_mismatch_falls_back(self):
    d = os.path.join(_tempdir(self), "checkpoints")
    it = _iterator()
    with ckpt_lib.Checkpointer(d, keep=5, keep_best=0,
                               async_save=False) as ck:
      next(it)
      ck.save(1, _state(1), data_iterator=it, meta={"k": 1})
      next(it)
      ck.save(2, dict(_state(2), b=jnp.zeros(4, jnp.int32)),
              data_iterator=it, meta={"k": 2})
    with self.assertWarnsRegex(ckpt_lib.CheckpointWarning,
                               r"step 2 .*\(3,\).*\(4,\)"):
      state, meta, batch, steps = _restore(d)
    # The iterator is restored again from step 1 (a failed step may have
    # set it before its state failed).
    _assert_state_of(self, state, meta, batch, 1)
    self.assertEqual(steps, [1])
    self.assertTrue(os.path.isdir(os.path.join(d, "corrupt", "2")))

  def test_explicit_step_raises_without_fallback(self):
    d = self.copy()
    _damage(os.path.join(d, "2"), FILE_KINDS["meta"], "truncated")
    with self.assertRaisesRegex(ckpt_lib.CheckpointCorruptError,
                                "step 2.*meta/metadata"):
      _restore(d, steps_back=2)
    state, meta, batch, _ = _restore(d, steps_back=1)
    _assert_state_of(self, state, meta, batch, 1)


class _FailingJsonWrites:
  """Patches orbax's JSON writer (the ``meta`` item) for chosen steps:
  ``mode="enospc"`` raises ``OSError(ENOSPC)`` like a full disk, and
  ``mode="garbage"`` writes a cut-off file without an error."""

  def __init__(self, steps, mode):
    self.steps, self.mode = set(steps), mode
    self._orig = ocp_handlers.JsonCheckpointHandler._save_fn

  def __enter__(self):
    orig, steps, mode = self._orig, self.steps, self.mode

    async def save_fn(handler, x, directory):
      if isinstance(x, dict) and x.get("k") in steps:
        path = directory / handler._filename  # pylint: disable=protected-access
        if mode == "enospc":
          raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        path.write_text(json.dumps(x)[:3])
        return
      await orig(handler, x, directory)

    ocp_handlers.JsonCheckpointHandler._save_fn = save_fn
    return self

  def __exit__(self, *exc):
    ocp_handlers.JsonCheckpointHandler._save_fn = self._orig


class SaveFailureTest(parameterized.TestCase):

  @parameterized.parameters(True, False)
  def test_disk_full_stops_clearly_and_keeps_earlier(self, async_save):
    d = os.path.join(_tempdir(self), "checkpoints")
    it = _iterator()
    ck = ckpt_lib.Checkpointer(d, keep=2, keep_best=0, async_save=async_save)
    with _FailingJsonWrites({3}, "enospc"):
      with self.assertRaises(ckpt_lib.CheckpointSaveError) as cm:
        for k in (1, 2, 3, 4):
          next(it)
          ck.save(k, _state(k), data_iterator=it, meta={"k": k}, force=True)
        ck.wait()
    ck.close()
    msg = str(cm.exception)
    self.assertIn(f"no space left on device while saving checkpoint step 3 "
                  f"in {d}", msg)
    self.assertEqual(cm.exception.step, 3)
    self.assertTrue(cm.exception.no_space)
    # Steps 1 and 2 are intact and restore (keep=2 did not drop step 1 for
    # a step 3 that never finished).
    with ckpt_lib.Checkpointer(d, keep=2, keep_best=0) as ck:
      self.assertEqual(ck.all_steps(), [1, 2])
      for k in (1, 2):
        it = _iterator()
        state, meta = ck.restore(_state(0), data_iterator=it, step=k)
        _assert_state_of(self, state, meta, next(it), k)

  @parameterized.parameters(True, False)
  def test_bad_write_is_verified_and_moved_aside(self, async_save):
    d = os.path.join(_tempdir(self), "checkpoints")
    with _FailingJsonWrites({2}, "garbage"):
      with self.assertWarnsRegex(ckpt_lib.CheckpointWarning,
                                 "step 2.*meta/metadata"):
        _save(d, (1, 2), async_save=async_save)
    self.assertTrue(os.path.isfile(os.path.join(d, "corrupt", "2", "meta",
                                                "metadata")))
    with warnings.catch_warnings():
      warnings.simplefilter("error", ckpt_lib.CheckpointWarning)
      state, meta, batch, steps = _restore(d)
    _assert_state_of(self, state, meta, batch, 1)
    self.assertEqual(steps, [1])


class LoopResumeTest(training_loop_test.FastCompiles):
  """run_rl: a full disk at step 3 stops the run clearly with steps 1-2 and
  metrics.jsonl intact; a damaged step 2 is then skipped and the rerun
  resumes from step 1 and finishes."""

  def test_disk_full_then_damaged_latest(self):
    cfg = training_loop_test.tiny_config(num_steps=3)
    cfg.checkpoint.update(every=1, keep=3)
    exp = builders.build_experiment(cfg)
    workdir = _tempdir(self)
    ckdir = os.path.join(workdir, "checkpoints")
    orig = ocp_handlers.JsonCheckpointHandler._save_fn

    async def full_at_3(handler, x, directory):
      if directory.parent.name.split(".")[0] == "3":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))
      await orig(handler, x, directory)

    ocp_handlers.JsonCheckpointHandler._save_fn = full_at_3
    try:
      with self.assertRaisesRegex(
          ckpt_lib.CheckpointSaveError,
          f"no space left on device while saving checkpoint step 3 in "
          f"{ckdir}"):
        loop.run_rl(exp, workdir)
    finally:
      ocp_handlers.JsonCheckpointHandler._save_fn = orig
    recs = metrics_lib.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    self.assertEqual([r["step"] for r in recs], [1, 2, 3])
    first = recs
    with ckpt_lib.Checkpointer(ckdir) as ck:
      self.assertEqual(ck.all_steps(), [1, 2])
    _damage(os.path.join(ckdir, "2"), "state/d/*", "truncated")
    with self.assertWarnsRegex(ckpt_lib.CheckpointWarning, "step 2"):
      summary = loop.run_rl(exp, workdir)
    self.assertEqual(summary["status"], "done")
    self.assertEqual(summary["step"], 3)
    self.assertEqual(os.listdir(os.path.join(ckdir, "corrupt")), ["2"])
    with ckpt_lib.Checkpointer(ckdir) as ck:  # steps 2 and 3 saved again
      self.assertEqual(ck.all_steps(), [1, 2, 3])
    recs = metrics_lib.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    self.assertEqual([r["step"] for r in recs], [1, 2, 3])
    # Resumed from step 1: steps 2 and 3 are redone with the same numbers.
    for a, b in zip(first, recs):
      self.assertEqual(a.get("loss"), b.get("loss"))
      self.assertIsNotNone(a.get("loss"))


if __name__ == "__main__":
  absltest.main()
