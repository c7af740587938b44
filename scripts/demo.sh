#!/usr/bin/env bash
# Set up .venv if needed, then run the whole path on the built-in default (no downloads).
#   bash scripts/demo.sh                 # writes everything under ./demo-output/
#   bash scripts/demo.sh -o /tmp/demo    # extra arguments go to `lora-audio demo`
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
exec .venv/bin/lora-audio demo "$@"
