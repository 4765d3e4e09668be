#!/usr/bin/env bash
# Shared by scripts/demo and scripts/test: a virtualenv in .venv with the CPU build of torch installed FIRST
# (so no multi-GB CUDA build is pulled on a machine without a GPU), then stsweep and the given extras.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-demo}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
stamp=".venv/.stsweep-installed-$extras"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/python -m pip install -q "torch==2.13.0"
  fi
  # compat: a plain .pth path entry (the default meta-path finder warns on every install)
  .venv/bin/python -m pip install -q -e ".[$extras]" --config-settings editable_mode=compat
  touch "$stamp"
fi
