"""Runs every ``Examples:`` doctest of the library's modules."""

import doctest
import pathlib
import pkgutil

from absl.testing import absltest
from absl.testing import parameterized

import entropy_rl
from tests import test_utils

_OPTIMISATIONS = None
_ROOT = pathlib.Path(entropy_rl.__file__).parent


def _modules_with_examples() -> list[str]:
  names = []
  for info in pkgutil.walk_packages([str(_ROOT)], prefix="entropy_rl."):
    spec = info.module_finder.find_spec(info.name.rsplit(".", 1)[-1])
    origin = getattr(spec, "origin", None)
    if origin and origin.endswith(".py") and ">>>" in pathlib.Path(
        origin).read_text():
      names.append(info.name)
  return sorted(names)


def setUpModule():
  # The examples print 4 decimals of tiny arrays; unoptimised XLA compiles
  # their many small programs several times faster.
  global _OPTIMISATIONS
  _OPTIMISATIONS = test_utils.disable_most_optimizations()
  next(_OPTIMISATIONS)


def tearDownModule():
  next(_OPTIMISATIONS, None)


class DoctestsTest(parameterized.TestCase):

  def test_the_core_api_has_examples(self):
    names = _modules_with_examples()
    for module in ("entropy_rl.core.combine", "entropy_rl.core.loss"):
      self.assertIn(module, names)

  @parameterized.named_parameters(
      (name.replace(".", "_"), name) for name in _modules_with_examples())
  def test_examples(self, name):
    module = __import__(name, fromlist=["_"])
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        verbose=False)
    self.assertGreater(result.attempted, 0)
    self.assertEqual(result.failed, 0, f"{name}: see the doctest output above")


if __name__ == "__main__":
  absltest.main()
