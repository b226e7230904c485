"""experiments/study.py, aggregate.py and claims.py on synthetic runs (no
training: fake run directories with metrics.jsonl / summary.json)."""

import io
import json
import math
import os
import shutil
import tempfile
from contextlib import redirect_stdout
from unittest import mock

from absl.testing import absltest
import numpy as np

from experiments import aggregate as agg
from experiments import claims
from experiments import study
from experiments import sweep

V = claims.Verdict
QUICK = "experiments/configs/study_quick.py"


def curve(h0=1.0, decay=0.01, steps=20, acc0=0.5, acc1=0.6, length=4.0,
          reward=None, ks=(1, 2, 4), passk=0.7, proxy=None, seed_keys=None):
  """Synthetic records: entropy h0·exp(−decay·t), an eval every 10 steps."""
  recs = [{"step": 0, "phase": "eval", "eval/accuracy": acc0}]
  for t in range(1, steps + 1):
    h = h0 * math.exp(-decay * t)
    r = {"step": t, "phase": "rl", "entropy": h, "response_length": length,
         "reward": (0.9 - 0.5 * math.exp(h)) if reward is None else reward,
         "entropy_change": -decay * h}
    if proxy is not None:
      r["aepo_entropy_proxy"] = proxy
    recs.append(r)
    if t % 10 == 0:
      e = {"step": t, "phase": "eval",
           "eval/accuracy": acc0 + (acc1 - acc0) * t / steps,
           "eval/response_length": length}
      e.update({f"eval/pass@{k}": passk * (1 - 0.5 ** k) for k in ks})
      recs.append(e)
  return recs


def write_run(root, name, recs, status="done", config=None):
  d = os.path.join(root, name)
  os.makedirs(d, exist_ok=True)
  with open(os.path.join(d, "metrics.jsonl"), "w", encoding="utf-8") as f:
    for r in recs:
      f.write(json.dumps(r) + "\n")
  with open(os.path.join(d, "summary.json"), "w", encoding="utf-8") as f:
    json.dump({"status": status}, f)
  with open(os.path.join(d, "config.json"), "w", encoding="utf-8") as f:
    json.dump(config or {}, f)
  return d


def data_of(methods):
  """StudyData from {method: [records per seed]}."""
  records = {m: dict(enumerate(rs)) for m, rs in methods.items()}
  per_seed = study.per_seed_metrics(records, collapse_fraction=0.1,
                                    final_window=3)
  return claims.StudyData(per_seed, records, {})


class StatsTest(absltest.TestCase):

  def test_t_quantiles(self):
    self.assertAlmostEqual(agg.t_quantile_975(2), 4.303, places=3)
    self.assertAlmostEqual(agg.t_quantile_975(4), 2.776, places=3)
    self.assertAlmostEqual(agg.t_quantile_975(1), 12.706, places=3)
    self.assertAlmostEqual(agg.t_quantile_975(30), 2.042, places=3)
    self.assertAlmostEqual(agg.t_quantile_975(60), 2.0003, places=3)
    self.assertAlmostEqual(agg.t_quantile_975(120), 1.9799, places=3)
    self.assertAlmostEqual(agg.t_quantile_975(1e6), 1.95997, places=4)
    self.assertBetween(agg.t_quantile_975(2.5), 3.1824, 4.3027)
    with self.assertRaises(ValueError):
      agg.t_quantile_975(0)

  def test_mean_ci(self):
    iv = agg.mean_ci([1.0, 2.0, 3.0])
    self.assertAlmostEqual(iv.mean, 2.0)
    self.assertAlmostEqual(iv.half, 4.3027 / math.sqrt(3), places=4)
    self.assertEqual(iv.format(), "2.000 ± 2.484 (n=3)")
    one = agg.mean_ci([0.5, None, float("nan")])
    self.assertEqual((one.n, one.half), (1, None))
    self.assertEqual(one.format(), "0.500 ± n/a (n=1)")
    self.assertEqual(agg.mean_ci([]).format(), "—")

  def test_diff_ci_welch(self):
    d = agg.diff_ci([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    self.assertAlmostEqual(d.mean, 2.0)
    # b has no variance: Welch df = 2, se = 1/sqrt(3).
    self.assertAlmostEqual(d.half, 4.3027 / math.sqrt(3), places=4)
    self.assertIsNone(agg.diff_ci([1.0], [0.0, 1.0]).half)

  def test_auc_and_collapse(self):
    s, y = np.array([0.0, 10.0, 20.0]), np.array([1.0, 1.0, 0.0])
    self.assertAlmostEqual(agg.auc(s, y), 0.75)
    self.assertAlmostEqual(agg.auc(s[:1], y[:1]), 1.0)
    self.assertIsNone(agg.auc(s[:0], y[:0]))
    s = np.arange(1.0, 6.0)
    self.assertEqual(agg.steps_to_collapse(
        s, np.array([1.0, 0.5, 0.2, 0.09, 0.01]), 0.1), 4.0)
    self.assertIsNone(agg.steps_to_collapse(
        s, np.array([1.0, 0.5, 0.2, 0.11, 0.1]), 0.1))

  def test_run_metrics(self):
    m = agg.run_metrics(curve(decay=0.2, steps=20), collapse_fraction=0.1,
                        final_window=3)
    self.assertAlmostEqual(m["entropy/initial"], math.exp(-0.2))
    # First t with exp(-0.2 t) < 0.1 exp(-0.2): t = 13 (12 steps later).
    self.assertEqual(m["steps_to_collapse"], 13.0)
    self.assertAlmostEqual(m["entropy/final"], np.mean(
        [math.exp(-0.2 * t) for t in (18, 19, 20)]))
    self.assertAlmostEqual(m["eval/accuracy"], 0.6)
    self.assertAlmostEqual(m["eval/accuracy/initial"], 0.5)
    self.assertAlmostEqual(m["eval/pass@4"], 0.7 * (1 - 0.5 ** 4))
    self.assertAlmostEqual(m["abs_entropy_change"], np.mean(
        [0.2 * math.exp(-0.2 * t) for t in range(1, 21)]))

  def test_split_seeds(self):
    recs = [{"step": 1, "phase": "rl", "entropy": 0.5,
             "entropy@seed0": 0.4, "entropy@seed1": 0.6}]
    out = agg.split_seeds(recs)
    self.assertEqual(sorted(out), [0, 1])
    self.assertEqual(out[1][0]["entropy"], 0.6)
    self.assertNotIn("entropy@seed0", out[1][0])
    self.assertEqual(list(agg.split_seeds([{"step": 1}])), [None])


class ClaimsTest(absltest.TestCase):

  def seeds(self, **kw):
    jitter = (0.0, 0.01, -0.01)
    return [curve(**{k: (v + j if isinstance(v, float) else v)
                     for k, v in kw.items()}) for j in jitter]

  def test_cov_claims(self):
    grpo = self.seeds(decay=0.1, passk=0.6)
    high = self.seeds(decay=0.01, passk=0.9)
    r = claims._cov_check("clip_cov")(data_of(
        {"grpo": grpo, "clip_cov": high}), {})
    self.assertIs(r.verdict, V.REPRODUCED, r.evidence)
    self.assertIn("eval/pass@4", r.evidence)
    r = claims._cov_check("clip_cov")(data_of(
        {"grpo": high, "clip_cov": grpo}), {})
    self.assertIs(r.verdict, V.NOT_REPRODUCED)
    r = claims._cov_check("kl_cov")(data_of({"grpo": grpo, "kl_cov": grpo}),
                                    {})
    self.assertIs(r.verdict, V.INCONCLUSIVE)
    self.assertIn("intervals overlap", r.evidence)
    r = claims._cov_check("kl_cov")(data_of({"grpo": grpo}), {})
    self.assertIs(r.verdict, V.INCONCLUSIVE)
    self.assertIn("kl_cov not in the study", r.evidence)
    r = claims._cov_check("kl_cov")(data_of({"grpo": grpo[:1],
                                             "kl_cov": high[:1]}), {})
    self.assertIs(r.verdict, V.INCONCLUSIVE)
    self.assertIn("n=1", r.evidence)

  def test_entropy_law(self):
    ok = claims._entropy_law(data_of({"grpo": self.seeds(decay=0.05)}),
                             {"law_r2": 0.9})
    self.assertIs(ok.verdict, V.REPRODUCED, ok.evidence)
    self.assertIn("a=0.5", ok.evidence)
    self.assertIn("R²=1.000", ok.evidence)
    rng = np.random.default_rng(0)
    bad = []
    for _ in range(3):
      recs = curve(decay=0.05)
      for r in recs:
        if r.get("phase") == "rl":
          r["reward"] = float(rng.normal())
      bad.append(recs)
    r = claims._entropy_law(data_of({"grpo": bad}), {"law_r2": 0.9})
    self.assertIsNot(r.verdict, V.REPRODUCED)
    flat = claims._entropy_law(data_of({"grpo": [curve(decay=0.0)] * 3}), {})
    self.assertIs(flat.verdict, V.INCONCLUSIVE)

  def test_aepo_target(self):
    config = {"regularizers": {"aepo": {"target_entropy": 0.5}}}
    for proxy, verdict in ((0.52, V.REPRODUCED), (1.0, V.NOT_REPRODUCED)):
      d = data_of({"aepo": self.seeds(proxy=proxy)})
      d = d._replace(configs={"aepo": config})
      r = claims._aepo_target(d, {"aepo_tolerance": 0.1})
      self.assertIs(r.verdict, verdict, r.evidence)
    d = data_of({"aepo": [curve(proxy=0.45), curve(proxy=0.65)]})
    r = claims._aepo_target(d._replace(configs={"aepo": config}),
                            {"aepo_tolerance": 0.1})
    self.assertIs(r.verdict, V.INCONCLUSIVE, r.evidence)
    r = claims._aepo_target(data_of({"aepo": self.seeds(proxy=0.5)}), {})
    self.assertIs(r.verdict, V.INCONCLUSIVE)
    self.assertIn("no target_entropy", r.evidence)

  def test_steer_band(self):
    r = claims._steer_band(data_of({"steer": self.seeds(decay=0.001)}),
                           {"steer_band": 0.5})
    self.assertIs(r.verdict, V.REPRODUCED, r.evidence)
    r = claims._steer_band(data_of({"steer": self.seeds(decay=0.2)}),
                           {"steer_band": 0.5})
    self.assertIs(r.verdict, V.NOT_REPRODUCED, r.evidence)

  def test_grpo_lambda(self):
    grpo = self.seeds(length=4.0, acc1=0.6)
    short = self.seeds(length=3.0, acc1=0.6)
    r = claims._grpo_lambda(data_of({"grpo": grpo, "grpo_lambda": short}),
                            {})
    self.assertIs(r.verdict, V.REPRODUCED, r.evidence)
    worse = self.seeds(length=3.0, acc1=0.3)
    r = claims._grpo_lambda(data_of({"grpo": grpo, "grpo_lambda": worse}),
                            {})
    self.assertIs(r.verdict, V.NOT_REPRODUCED, r.evidence)
    r = claims._grpo_lambda(data_of({"grpo": grpo, "grpo_lambda": grpo}), {})
    self.assertIs(r.verdict, V.INCONCLUSIVE, r.evidence)

  def test_improves_without_reward(self):
    check = claims._improves_without_reward("rent")
    self.assertIs(check(data_of({"rent": self.seeds(acc1=0.7)}), {}).verdict,
                  V.REPRODUCED)
    self.assertIs(check(data_of({"rent": self.seeds(acc1=0.3)}), {}).verdict,
                  V.NOT_REPRODUCED)
    mixed = [curve(acc1=0.7), curve(acc1=0.3), curve(acc1=0.5)]
    r = check(data_of({"rent": mixed}), {})
    self.assertIs(r.verdict, V.INCONCLUSIVE)
    self.assertIn("contains 0", r.evidence)

  def test_forking_non_inferiority(self):
    base = self.seeds(acc1=0.6)
    d = data_of({"grpo": base, "forking": self.seeds(acc1=0.61)})
    self.assertIs(claims._forking(d, {"match_margin": 0.05}).verdict,
                  V.REPRODUCED)
    d = data_of({"grpo": base, "forking": self.seeds(acc1=0.3)})
    self.assertIs(claims._forking(d, {"match_margin": 0.05}).verdict,
                  V.NOT_REPRODUCED)
    d = data_of({"dapo": base, "grpo": self.seeds(acc1=0.1),
                 "forking": self.seeds(acc1=0.6)})
    r = claims._forking(d, {})
    self.assertIn("forking − dapo", r.evidence)
    self.assertIs(r.verdict, V.REPRODUCED)

  def test_check_all_and_report(self):
    d = data_of({"grpo": self.seeds(decay=0.1)})
    results = claims.check_all(d, {})
    names = [c.name for c, _ in results]
    self.assertIn("entropy_law", names)
    self.assertIn("clip_cov", names)  # needs grpo: listed, inconclusive
    self.assertNotIn("rent", names)
    text = claims.report(results)
    self.assertIn("clip_cov: INCONCLUSIVE", text)
    self.assertIn("clip_cov not in the study", text)
    self.assertIn("arxiv.org/abs/2505.22617", text)


class StudyTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.dir, ignore_errors=True)
    self.cfg = study.load_study(QUICK)

  def test_plan_and_selection(self):
    methods, seeds, extra = study.select(self.cfg, None, None, False)
    self.assertEqual(methods, ["clip_cov", "grpo", "kl_cov", "rent"])
    self.assertEqual(seeds, [0, 1])
    self.assertEqual(extra, [])
    m, s, extra = study.select(self.cfg, "grpo", "1", True)
    self.assertEqual((m, s, extra), (["grpo"], [1], ["train.num_steps=20"]))
    with self.assertRaisesRegex(ValueError, "unknown nope"):
      study.select(self.cfg, "grpo,nope", None, False)
    with self.assertRaisesRegex(ValueError, "--seeds"):
      study.select(self.cfg, None, "a,b", False)
    jobs = study.plan(self.cfg, self.dir, ["grpo", "rent"], [0, 1],
                      ["train.num_steps=20"])
    self.assertEqual([j.name for j in jobs], [
        "grpo/seed=0", "grpo/seed=1", "rent/seed=0", "rent/seed=1"])
    argv = jobs[1].argv
    self.assertIn("--config.eval.ks=(1, 2, 4, 8, 16)", argv)
    self.assertEqual(argv[-2:], ["--config.train.num_steps=20",
                                 "--config.seed=1"])
    self.assertIn("--config.train.num_steps=100", argv)  # shared, then --set
    # Equal warm-up settings share one SFT; seeds do not.
    self.assertEqual(jobs[0].sft_key, jobs[2].sft_key)
    self.assertNotEqual(jobs[0].sft_key, jobs[1].sft_key)
    with self.assertRaisesRegex(ValueError, "'grpo'.*bad override"):
      study.plan(self.cfg, self.dir, ["grpo"], [0], ["train.num_stepz=3"])
    with self.cfg.unlocked():
      self.cfg.seed_mode = "vmap"
    jobs = study.plan(self.cfg, self.dir, ["grpo"], [2, 3])
    self.assertEqual(jobs[0].name, "grpo/seeds=2-3")
    self.assertIn("--config.num_seeds=2", jobs[0].argv)
    with self.assertRaisesRegex(ValueError, "consecutive|s, s\\+1"):
      study.plan(self.cfg, self.dir, ["grpo"], [0, 2])

  def test_eval_ks_need_samples(self):
    with self.cfg.unlocked():
      self.cfg.shared.eval.num_samples = 8
    with self.assertRaisesRegex(ValueError, "eval.num_samples >= 16"):
      study.plan(self.cfg, self.dir, ["grpo"], [0])

  def test_resume_skip_and_sft_wait(self):
    jobs = study.plan(self.cfg, self.dir, ["grpo", "rent"], [0])
    write_run(self.dir, "grpo/seed=0", curve())
    ready = study.make_ready(jobs, self.dir)
    # rent waits while grpo (same SFT) runs, until the warm-up is finished.
    self.assertFalse(ready("rent/seed=0", {"grpo/seed=0"}, {}))
    self.assertTrue(ready("rent/seed=0", set(), {}))
    sft = os.path.join(self.dir, "_sft", jobs[0].sft_key)
    os.makedirs(sft)
    with open(os.path.join(sft, "metrics.jsonl"), "w") as f:
      f.write(json.dumps({"step": jobs[0].sft_steps, "phase": "sft"}) + "\n")
    self.assertTrue(ready("rent/seed=0", {"grpo/seed=0"}, {}))
    # The finished run is skipped; the other one runs (a fake process).
    fake = [j._replace(argv=["python", "-c", "pass"]) for j in jobs]
    out = io.StringIO()
    with redirect_stdout(out):
      codes = study.run_jobs(fake, self.dir)
    self.assertEqual(codes, {"grpo/seed=0": 0, "rent/seed=0": 0})
    text = out.getvalue()
    self.assertIn("[1/2] grpo seed 0 ... done before (skipped)", text)
    self.assertRegex(text, r"\[2/2\] rent seed 0 \.\.\. done in \d+ s")
    self.assertTrue(os.path.islink(os.path.join(self.dir, "rent/seed=0",
                                                "sft")))

  def test_collect_vmapped_and_unfinished(self):
    recs = [{"step": 1, "phase": "rl", "entropy@seed0": 0.4,
             "entropy@seed1": 0.6, "entropy": 0.5}]
    write_run(self.dir, "grpo/seeds=3-4", recs)
    write_run(self.dir, "rent/seed=0", curve(), status="preempted")
    records, _, status = study.collect(self.dir, ["grpo", "rent"])
    self.assertEqual(sorted(records["grpo"]), [3, 4])
    self.assertEqual(records["grpo"][4][0]["entropy"], 0.6)
    self.assertNotIn("rent", records)
    self.assertEqual(status["rent/seed=0"], "unfinished")
    records, _, _ = study.collect(self.dir, ["grpo"], seeds=[4])
    self.assertEqual(list(records["grpo"]), [4])

  def test_table_format(self):
    per_seed = {"grpo": {0: {"entropy/final": 1.0, "steps_to_collapse": None,
                             "entropy/initial": 1.0, "eval/pass@16": 0.5},
                         1: {"entropy/final": 2.0, "steps_to_collapse": 40.0,
                             "entropy/initial": 1.0, "eval/pass@16": 0.7},
                         2: {"entropy/final": 3.0, "steps_to_collapse": None,
                             "entropy/initial": 1.0}}}
    md = study.table(per_seed)
    head, _, row = md.strip().split("\n")
    self.assertIn("| pass@16 |", head)
    self.assertIn("| 2.000 ± 2.484 (n=3) |", row)
    self.assertIn("0.600 ± 1.271 (n=2)", row)
    self.assertIn("40.0 ± n/a (n=1); never in 2/3", row)

  def test_end_to_end_with_fake_runner(self):
    """main(): runs (a patched runner writing synthetic runs), then
    results.md / .json with claims and both plots."""
    def fake_run_all(cmds, workdir, parallel=1, **kw):
      del parallel, kw
      for i, (name, _) in enumerate(cmds):
        method = name.split("/")[0]
        write_run(workdir, name, curve(
            decay=0.1 if method == "grpo" else 0.01,
            passk=(0.6 if method == "grpo" else 0.9) + 0.01 * i,
            ks=(1, 2, 4, 8, 16)))
      return {n: 0 for n, _ in cmds}

    out = io.StringIO()
    with mock.patch.object(sweep, "run_all", fake_run_all), \
        redirect_stdout(out):
      rc = study.main([f"--config={QUICK}", f"--workdir={self.dir}",
                       "--methods=grpo,clip_cov", "--seeds=0,1,2",
                       "--set=train.num_steps=20"])
    self.assertEqual(rc, 0)
    md = open(os.path.join(self.dir, "results.md")).read()
    self.assertIn("| clip_cov |", md)
    self.assertIn("(n=3)", md)
    self.assertIn("clip_cov: REPRODUCED", md)
    self.assertIn("kl_cov: INCONCLUSIVE", md)
    res = json.load(open(os.path.join(self.dir, "results.json")))
    self.assertEqual(res["aggregate"]["grpo"]["eval/pass@16"]["n"], 3)
    for png in ("study_curves.png", "study_passk.png"):
      self.assertGreater(os.path.getsize(os.path.join(self.dir, png)), 1000)
    # --report_only re-aggregates without running anything.
    with mock.patch.object(sweep, "run_all") as never, redirect_stdout(out):
      self.assertEqual(study.main([f"--config={QUICK}",
                                   f"--workdir={self.dir}", "--report_only",
                                   "--methods=grpo"]), 0)
    never.assert_not_called()


if __name__ == "__main__":
  absltest.main()
