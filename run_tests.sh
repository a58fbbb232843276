#!/usr/bin/env bash
# Run the test suite (slow integration tests included) in the project's .venv.
#   bash run_tests.sh            everything
#   bash run_tests.sh -m "not slow"   the fast unit tests only; any pytest arguments work
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure_venv.sh
exec python -m pytest "$@"
