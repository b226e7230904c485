"""BUILD is current and globs every module and test file (it cannot rot)."""

import pathlib
import re
import subprocess
import sys

from absl.testing import absltest

ROOT = pathlib.Path(__file__).resolve().parent.parent


class BuildTest(absltest.TestCase):

  def test_build_is_what_update_build_renders(self):
    result = subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "update_build.py"), "--check"],
        capture_output=True, text=True, check=False)
    self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

  def test_sources_and_tests_are_globbed(self):
    text = (ROOT / "BUILD").read_text()
    for pattern in ('glob(["entropy_rl/**/*.py"])',
                    'glob(["experiments/**/*.py"])',
                    'glob(["tests/**/*_test.py"])'):
      self.assertIn(pattern, text)
    # No file is named by hand, so none can be missing or stale.
    self.assertEqual(re.findall(r'"[\w/.-]+\.py"', text), [])

  def test_every_test_file_gets_a_distinct_target_name(self):
    stems = [p.stem for p in ROOT.glob("tests/**/*_test.py")]
    self.assertNotEmpty(stems)
    self.assertLen(set(stems), len(stems))

  def test_module_bazel_has_pip_hub(self):
    text = (ROOT / "MODULE.bazel").read_text()
    self.assertIn('bazel_dep(name = "rules_python"', text)
    self.assertIn('hub_name = "pypi"', text)
    self.assertTrue((ROOT / "requirements_lock.txt").exists())


if __name__ == "__main__":
  absltest.main()
