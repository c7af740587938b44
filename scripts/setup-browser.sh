#!/usr/bin/env bash
# Make a headless Chromium available for the browser tests (listening test, studio).
# Uses the system's Chromium (Debian/Ubuntu package `chromium`); never downloads a browser of
# its own (`playwright install` is not used). Exits non-zero when none can be had.
set -euo pipefail
for b in "${LORA_AUDIO_CHROMIUM:-}" chromium chromium-browser google-chrome; do
    [[ -n "$b" ]] && command -v "$b" >/dev/null 2>&1 && exit 0
done
if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing Debian's chromium for the browser tests" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    command -v chromium >/dev/null 2>&1 && exit 0
fi
exit 1
