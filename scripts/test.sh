#!/usr/bin/env bash
# Quick-start command 2: set up .venv if needed, then run the whole test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/unit -k features`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
exec python -m pytest -q "$@"
