"""Every public name resolves; the core obeys its dependency walls."""

import ast
import pathlib

from absl.testing import absltest

import entropy_rl
from entropy_rl import regularizers

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORE_ALLOWED = {"jax", "numpy", "optax", "chex", "entropy_rl", "__future__",
                "math", "typing", "collections", "functools", "zlib",
                "dataclasses", "itertools"}


class ApiTest(absltest.TestCase):

  def test_all_names_resolve(self):
    for name in entropy_rl.__all__:
      self.assertTrue(hasattr(entropy_rl, name), name)
    self.assertEqual(list(entropy_rl.__all__), sorted(entropy_rl.__all__))

  def test_regularizers_are_transforms(self):
    self.assertIsInstance(regularizers.entropy_bonus(0.1),
                          entropy_rl.EntropyTransform)

  def test_core_imports_only_allowed_packages(self):
    for path in (ROOT / "entropy_rl" / "core").glob("*.py"):
      tree = ast.parse(path.read_text())
      for node in ast.walk(tree):
        if isinstance(node, ast.Import):
          mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
          mods = [node.module]
        else:
          continue
        for m in mods:
          top = m.split(".")[0]
          self.assertIn(top, CORE_ALLOWED, f"{path.name} imports {m}")
          if top == "entropy_rl":
            self.assertTrue(m.startswith("entropy_rl.core"),
                            f"{path.name} imports {m} outside the core")


if __name__ == "__main__":
  absltest.main()
