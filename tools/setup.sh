#!/usr/bin/env bash
# Creates .venv and installs the project with every extra that runs here. Idempotent.
# torch: the CPU build is installed first and by exact version, so that the `export` extra's
# range is already satisfied and pip never pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv"
    "$PY" -m venv .venv
fi
echo "[setup] installing dependencies into .venv (first run: about a minute)"
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==${TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[rtx,export,baseline,dev]'
.venv/bin/python -c "from netdef.backend import describe; print('[setup] TensorRT backend:', describe())"
