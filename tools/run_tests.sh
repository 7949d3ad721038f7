#!/usr/bin/env bash
# Install the stack (a no-op when it is up to date) and run the test suite.
# Extra arguments go to pytest, e.g. `bash tools/run_tests.sh -m "not slow"`.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash tools/install.sh
exec "${DYNCONV_MM_VENV:-$ROOT/.venv}/bin/python" -m pytest "$@"
