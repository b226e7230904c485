#!/usr/bin/env bash
# entropy_rl developer entry point. Creates ./.venv on first use (idempotent),
# installs the package with its test extras, then runs one of:
#   bash run.sh experiment [flags...]   the default experiment (CPU)
#   bash run.sh test [pytest args...]   the whole test suite
#   bash run.sh python ...              the venv's python
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv
PY=${PYTHON:-python3}
stamp=$VENV/.installed-$(cat setup.py | sha1sum | cut -c1-12)
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
if [ ! -f "$stamp" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e ".[test]"
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi
cmd=${1:-test}
shift || true
case "$cmd" in
  experiment)
    exec "$VENV/bin/python" -m experiments.main \
      --config=experiments/configs/default.py --workdir="${WORKDIR:-runs/default}" "$@" ;;
  test)
    exec "$VENV/bin/python" -m pytest -q -n 2 --dist worksteal --timeout=900 tests "$@" ;;
  python)
    exec "$VENV/bin/python" "$@" ;;
  *)
    echo "usage: bash run.sh {experiment|test|python} [args...]" >&2; exit 2 ;;
esac
