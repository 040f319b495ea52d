#!/usr/bin/env bash
# Installs the official clients, SDKs and Crawlee the compatibility tests use (pinned versions).
set -euo pipefail
cd "$(dirname "$0")/../tests/compat"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r python/requirements.txt
(cd js && npm ci --no-audit --no-fund --loglevel=error)
