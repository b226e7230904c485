"""The import graph of the entropy_rl package has no cycle.

Every ``entropy_rl/**/*.py`` is parsed with :mod:`ast` (nothing is
imported); each ``import`` / ``from ... import`` statement, at module level
or inside a function or class, is an edge from its module to the module it
names (``from a.b import c`` names ``a.b.c`` when that is a module of the
package, else ``a.b``). Importing ``a.b.c`` also runs the package
``a/b/__init__.py``; those implicit parent edges are left out (every
submodule of a package that re-exports its submodules would otherwise close
a loop through its ``__init__``), but an explicit import of a package
(``from entropy_rl import agents``) is an edge to its ``__init__``.

A function-level import is how a cycle hides (it runs only when called),
so :func:`test_no_function_level_imports_within_agents` also forbids those
between the modules of ``entropy_rl.agents``.
"""

from __future__ import annotations

import ast
import pathlib

from absl.testing import absltest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = "entropy_rl"


def module_files() -> dict[str, pathlib.Path]:
  """``{dotted module name: file}`` of every module of the package."""
  out = {}
  for path in sorted((ROOT / PACKAGE).rglob("*.py")):
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
      parts = parts[:-1]
    out[".".join(parts)] = path
  return out


def _resolve(name: str, mod: str, is_pkg: bool, level: int) -> str:
  """The absolute name of ``from <level dots><name>`` in ``mod``."""
  if not level:
    return name
  base = mod.split(".") if is_pkg else mod.split(".")[:-1]
  base = base[:len(base) - (level - 1)]
  return ".".join(base + ([name] if name else []))


def imports(mod: str, path: pathlib.Path, modules: set[str]
            ) -> list[tuple[str, int, bool]]:
  """``[(imported module, line, inside a function)]`` of one module
  (package modules only)."""
  tree = ast.parse(path.read_text(), str(path))
  is_pkg = path.name == "__init__.py"
  found = []

  def visit(node: ast.AST, in_def: bool) -> None:
    if isinstance(node, ast.Import):
      for a in node.names:
        if a.name in modules:
          found.append((a.name, node.lineno, in_def))
    elif isinstance(node, ast.ImportFrom):
      src = _resolve(node.module or "", mod, is_pkg, node.level)
      for a in node.names:
        sub = f"{src}.{a.name}"
        if sub in modules:
          found.append((sub, node.lineno, in_def))
        elif src in modules:
          found.append((src, node.lineno, in_def))
    in_def = in_def or isinstance(
        node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
    for child in ast.iter_child_nodes(node):
      visit(child, in_def)

  visit(tree, False)
  return found


def import_graph() -> dict[str, set[str]]:
  files = module_files()
  names = set(files)
  return {m: {t for t, _, _ in imports(m, p, names) if t != m}
          for m, p in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One cycle ``[a, b, ..., a]`` of the directed graph, or None."""
  state = {}  # 1: on the stack, 2: done
  stack = []

  def dfs(u):
    state[u] = 1
    stack.append(u)
    for v in sorted(graph.get(u, ())):
      if state.get(v) == 1:
        return stack[stack.index(v):] + [v]
      if v not in state:
        c = dfs(v)
        if c:
          return c
    stack.pop()
    state[u] = 2
    return None

  for u in sorted(graph):
    if u not in state:
      c = dfs(u)
      if c:
        return c
  return None


class ImportGraphTest(absltest.TestCase):

  def test_find_cycle(self):
    self.assertIsNone(find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}))
    self.assertEqual(find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}),
                     ["a", "b", "c", "a"])

  def test_resolve(self):
    self.assertEqual(_resolve("x", "p.q.m", False, 1), "p.q.x")
    self.assertEqual(_resolve("", "p.q", True, 1), "p.q")
    self.assertEqual(_resolve("x", "p.q.m", False, 2), "p.x")

  def test_graph_sees_the_agents_modules(self):
    g = import_graph()
    self.assertIn("entropy_rl.agents._turns", g["entropy_rl.agents._branching"])
    self.assertIn("entropy_rl.agents._branching",
                  g["entropy_rl.agents._rollout"])
    self.assertIn("entropy_rl.agents._turns", g["entropy_rl.agents._rollout"])

  def test_no_cycle(self):
    cycle = find_cycle(import_graph())
    self.assertIsNone(cycle, f"import cycle: {' -> '.join(cycle or ())}")

  def test_no_function_level_imports_within_agents(self):
    files = module_files()
    names = set(files)
    inner = [(m, t, line) for m, p in files.items()
             if m.startswith(f"{PACKAGE}.agents")
             for t, line, in_def in imports(m, p, names)
             if in_def and t.startswith(f"{PACKAGE}.agents")]
    self.assertEqual(inner, [])


if __name__ == "__main__":
  absltest.main()
