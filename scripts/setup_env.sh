#!/usr/bin/env bash
# Create .venv (or reuse it) and install the project with pinned versions.
# torch first (its CUDA build runs on the CPU too), then deepspeed against that torch, then the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${MFM_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    python3.11 -m venv "$VENV" 2>/dev/null || python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
STAMP="$VENV/.mfm-installed"
if [ -f "$STAMP" ] && [ "$STAMP" -nt pyproject.toml ] && [ "$STAMP" -nt constraints.txt ]; then
    exit 0
fi
"$PY" -m pip install --quiet --upgrade pip
"$PY" -m pip install --quiet -c constraints.txt torch torchvision
DS_BUILD_OPS=0 "$PY" -m pip install --quiet --no-build-isolation -c constraints.txt deepspeed
"$PY" -m pip install --quiet -c constraints.txt -e ".[test]"
# rapidocr (PP-OCR ONNX models ship in its wheel) with --no-deps: some releases require opencv-python, which
# would overwrite our opencv-python-headless (same cv2 module); the deps it imports are pinned in pyproject.toml.
"$PY" -m pip install --quiet --no-deps -c constraints.txt rapidocr
# DeepSpeed JIT-compiles its CPU shared-memory comm op on the first distributed start: do it once here.
"$PY" -c "from deepspeed.accelerator import get_accelerator as a; a().create_op_builder('ShareMemCommBuilder').load()"
touch "$STAMP"
