"""Executes every Colab notebook in colab/ headless on CPU, at the CPU size.

Each notebook runs in a fresh kernel of this interpreter (``sys.executable``,
so it works wherever only the venv exists: no installed kernel spec is
needed) with ``ENTROPY_RL_CPU_SMALL=1`` and its own ``ENTROPY_RL_NB_OUT``
directory; the test asserts that it finished without error and wrote its
figures there. The kernels compile with most XLA optimisations off
(``JAX_DISABLE_MOST_OPTIMIZATIONS=1``, as the ``experiments.main`` tests
do): at the CPU size a notebook's time is mostly the compiles of each
method's RL iteration, and the test reads no number it prints. A second
test checks the committed files: outputs stripped, an Open-in-Colab badge
pointing at the notebook's own path, a title, an install cell guarded by
an import, and ``# @param`` form fields.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import sys
import tempfile
import time
from typing import Any

from absl.testing import absltest
from absl.testing import parameterized
import jupyter_client
from jupyter_client import kernelspec
import nbclient
import nbformat

try:
  import psutil  # only for the CPU-time report
except ImportError:  # pragma: no cover
  psutil = None

ROOT = pathlib.Path(__file__).resolve().parents[1]
COLAB = ROOT / "colab"
BADGE = ("https://colab.research.google.com/github/entropy-rl/entropy_rl/"
         "blob/main/colab/{name}")
INSTALL = ('pip install -q "entropy_rl[colab] @ '
           'git+https://github.com/entropy-rl/entropy_rl"')

# name -> (figures it must write, fake CPU devices for its kernel, timeout s)
NOTEBOOKS = {
    "01_quickstart.ipynb": (("01_batch.png", "01_weights.png",
                             "01_gradients.png"), 1, 300),
    "02_entropy_collapse.ipynb": (("02_compare.png", "02_entropy_law.png",
                                   "02_fit.png"), 1, 900),
    "03_pretrained_on_tpu.ipynb": (("03_curves.png",), 4, 900),
    "04_sweeps.ipynb": (("04_sweep.png", "04_curves.png"), 1, 900),
}


def _kernel_manager(env: dict[str, str]):
  """A KernelManager for ``sys.executable -m ipykernel_launcher``.

  The kernel spec is written to a temporary directory, so nothing needs to
  be installed (``jupyter kernelspec``) and no other Python is picked up.
  """
  kernels = pathlib.Path(tempfile.mkdtemp(prefix="nb_kernels_"))
  spec_dir = kernels / "entropy_rl_test"
  spec_dir.mkdir()
  (spec_dir / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f",
               "{connection_file}"],
      "display_name": "entropy_rl (test)", "language": "python",
      "env": env}), encoding="utf-8")
  ksm = kernelspec.KernelSpecManager(kernel_dirs=[str(kernels)],
                                     ensure_native_kernel=False)
  return jupyter_client.KernelManager(kernel_name="entropy_rl_test",
                                      kernel_spec_manager=ksm)


def _kernel_cpu_seconds(km) -> float | None:
  """CPU seconds (user + system, children included) of a running kernel."""
  if psutil is None:
    return None
  try:
    t = psutil.Process(km.provisioner.pid).cpu_times()
  except Exception:  # pylint: disable=broad-except
    return None
  return t.user + t.system + t.children_user + t.children_system


def execute(name: str, out_dir: str, devices: int, timeout: int
            ) -> tuple[Any, float | None]:
  """Runs ``colab/<name>`` in a fresh kernel.

  Returns:
    The executed notebook and the kernel's CPU seconds (None if unknown).
  """
  nb = nbformat.read(COLAB / name, as_version=4)
  env = dict(
      ENTROPY_RL_CPU_SMALL="1", ENTROPY_RL_NB_OUT=out_dir,
      JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3", MPLBACKEND="Agg",
      JAX_DISABLE_MOST_OPTIMIZATIONS="1",  # faster compiles
      XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
      PYTHONPATH=os.pathsep.join(
          [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(
              os.pathsep) if p]))
  km = _kernel_manager(env)
  cpu = [None]

  def on_cell_executed(**kwargs):
    del kwargs
    cpu[0] = _kernel_cpu_seconds(km)

  client = nbclient.NotebookClient(
      nb, km=km, timeout=timeout, startup_timeout=300, allow_errors=False,
      resources={"metadata": {"path": str(ROOT)}},
      on_cell_executed=on_cell_executed)
  client.execute()
  return nb, cpu[0]


class NotebooksRunTest(parameterized.TestCase):

  @parameterized.named_parameters(
      (n.split("_")[0], n) for n in sorted(NOTEBOOKS))
  def test_runs_on_cpu(self, name):
    figures, devices, timeout = NOTEBOOKS[name]
    tmp = tempfile.TemporaryDirectory(prefix=f"nb_{name[:2]}_")
    self.addCleanup(tmp.cleanup)
    out_dir = tmp.name
    t0 = time.time()
    nb, cpu = execute(name, out_dir, devices, timeout)
    print(f"{name}: {time.time() - t0:.0f}s wall, {cpu or float('nan'):.0f}s "
          "CPU (kernel)", file=sys.stderr)
    errors = [o for c in nb.cells if c.cell_type == "code"
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    self.assertEqual(errors, [])
    for fig in figures:
      path = os.path.join(out_dir, fig)
      self.assertTrue(os.path.isfile(path), f"{name} did not write {fig}; "
                      f"{out_dir} holds {sorted(os.listdir(out_dir))}")
      self.assertGreater(os.path.getsize(path), 5_000, path)


class NotebooksFormatTest(parameterized.TestCase):

  def test_all_notebooks_are_tested(self):
    self.assertEqual(sorted(p.name for p in COLAB.glob("*.ipynb")),
                     sorted(NOTEBOOKS))

  @parameterized.named_parameters(
      (n.split("_")[0], n) for n in sorted(NOTEBOOKS))
  def test_committed_form(self, name):
    nb = json.loads((COLAB / name).read_text(encoding="utf-8"))
    self.assertEqual(nb["nbformat"], 4)
    cells = nb["cells"]
    for c in cells:
      if c["cell_type"] == "code":
        self.assertEqual(c["outputs"], [], f"{name}: outputs not stripped")
        self.assertIsNone(c["execution_count"], name)
      self.assertNotIn("colab", c.get("metadata", {}), name)
    first = "".join(cells[0]["source"])
    self.assertEqual(cells[0]["cell_type"], "markdown")
    self.assertRegex(first, r"^# \S")
    self.assertIn(BADGE.format(name=name), first)
    sources = ["".join(c["source"]) for c in cells]
    code = [s for s, c in zip(sources, cells) if c["cell_type"] == "code"]
    self.assertIn(INSTALL, code[0])
    self.assertIn("except ImportError", code[0])
    text = "\n".join(code)
    self.assertRegex(text, r"# @param")
    self.assertIn("ENTROPY_RL_CPU_SMALL", text)
    self.assertIn("ENTROPY_RL_NB_OUT", text)
    # No library code in notebooks (a class would be a sure sign).
    self.assertNotRegex(text, re.compile(r"^class ", re.M))


if __name__ == "__main__":
  absltest.main()
