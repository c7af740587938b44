#!/usr/bin/env bash
# Create .venv and install lora-audio into it (editable, with dev tools).
# Idempotent: does nothing when pyproject.toml has not changed since the last run.
#
#   bash scripts/setup.sh            # usually called by scripts/demo.sh and scripts/test.sh
#
# Environment:
#   PYTHON            interpreter to build the venv with (default: python3)
#   LORA_AUDIO_TORCH  pip requirement for torch (default: torch==2.13.0; on a machine with no
#                     GPU point pip at a CPU-only build, e.g. with PIP_INDEX_URL/PIP_FIND_LINKS)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV=".venv"
STAMP="$VENV/.lora-audio-installed"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
    exit 0
fi

echo "[setup] creating $VENV and installing lora-audio (first run takes a few minutes)" >&2
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --quiet --disable-pip-version-check)

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1; then
        echo "[setup] NVIDIA GPU found: installing the CUDA build of torch" >&2
    else
        echo "[setup] no GPU found: installing torch for the CPU" >&2
    fi
    "${PIP[@]}" install "${LORA_AUDIO_TORCH:-torch==2.13.0}"
fi
"${PIP[@]}" install -e ".[dev]"
echo "$want" > "$STAMP"
echo "[setup] done" >&2
