r"""Deprecated alias of ``python -m experiments.main`` for classic configs.

Classic configs run through the one entry point, like every other config::

  python -m experiments.main \
      --config=experiments/configs/classic_sac.py:tiny --workdir=runs/sac

This script keeps the old command line
(``python experiments/classic/run.py --config path[:size] [--out DIR]``)
working by running ``experiments.main`` in its place with
``--workdir=DIR/<config name>[_<size>]`` (default ``DIR``:
``experiments/classic/out``), the repository root on ``PYTHONPATH``.
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def translate(argv: list[str]) -> list[str]:
  """The old flags -> ``experiments.main``'s arguments."""
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--config", required=True)
  ap.add_argument("--out", default=os.path.join(HERE, "out"))
  args = ap.parse_args(argv)
  path, _, arg = args.config.partition(":")
  name = os.path.basename(path)[:-3] + (f"_{arg}" if arg else "")
  return [f"--config={args.config}",
          f"--workdir={os.path.join(args.out, name)}"]


def main(argv: list[str] | None = None) -> None:
  args = translate(sys.argv[1:] if argv is None else argv)
  print("experiments/classic/run.py is deprecated; running: python -m "
        "experiments.main " + " ".join(args), file=sys.stderr, flush=True)
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(
      p for p in (ROOT, env.get("PYTHONPATH")) if p)
  os.execve(sys.executable, [sys.executable, "-m", "experiments.main",
                             *args], env)


if __name__ == "__main__":
  main()
