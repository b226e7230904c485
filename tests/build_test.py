"""BUILD lists every module and test file (it cannot rot)."""

import pathlib
import re

from absl.testing import absltest

ROOT = pathlib.Path(__file__).resolve().parent.parent


class BuildTest(absltest.TestCase):

  def test_every_module_and_test_is_listed(self):
    text = (ROOT / "BUILD").read_text()
    listed = set(re.findall(r'"([\w/.-]+\.py)"', text))
    wanted = {str(p.relative_to(ROOT))
              for pattern in ("entropy_rl/**/*.py", "tests/**/*.py",
                              "experiments/**/*.py")
              for p in ROOT.glob(pattern) if "__pycache__" not in p.parts}
    missing = sorted(wanted - listed)
    self.assertEqual(missing, [], "not in BUILD (run .ci/update_build.py)")
    stale = sorted(p for p in listed if not (ROOT / p).exists())
    self.assertEqual(stale, [], "listed in BUILD but gone")

  def test_one_py_test_per_test_file(self):
    text = (ROOT / "BUILD").read_text()
    tests = sorted(p.stem for p in ROOT.glob("tests/**/*_test.py"))
    targets = sorted(re.findall(r'py_test\(\n    name = "(\w+)"', text))
    self.assertEqual(targets, tests)

  def test_module_bazel_has_pip_hub(self):
    text = (ROOT / "MODULE.bazel").read_text()
    self.assertIn('bazel_dep(name = "rules_python"', text)
    self.assertIn('hub_name = "pypi"', text)
    self.assertTrue((ROOT / "requirements_lock.txt").exists())


if __name__ == "__main__":
  absltest.main()
