#!/usr/bin/env bash
# The server checks (scripts/check_serve.py) with real clients from PyPI, in their own light venv.
set -euo pipefail
cd "$(dirname "$0")/.."
cli=${1:-.build/debug/vitmsn}
if [ ! -x .venv-serve/bin/python ]; then python3 -m venv .venv-serve; fi
if ! .venv-serve/bin/python -c 'import tritonclient.http, numpy, schemathesis' 2>/dev/null; then
  .venv-serve/bin/pip install --quiet -r scripts/requirements-serve.txt
fi
.venv-serve/bin/python scripts/check_serve.py "$cli" "${@:2}"
