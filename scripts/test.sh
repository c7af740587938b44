#!/usr/bin/env bash
# Set up .venv if needed, then lint and run the test suite (extra arguments go to pytest).
#   bash scripts/test.sh             # the default suite (excludes tests marked slow)
#   bash scripts/test.sh -m slow     # the slow ones
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/setup-browser.sh || echo "[test] no browser: the browser tests will be skipped" >&2
# Two cores on CI: keep torch from oversubscribing them.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
