#!/usr/bin/env bash
# Creates .venv with the pinned reference stack (transformers, torch CPU) for the Python scripts.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
if ! .venv/bin/python -c 'import torch, transformers, safetensors, onnxruntime, onnx, kserve, fastapi, uvicorn' 2>/dev/null; then
  .venv/bin/pip install --quiet -r scripts/requirements.txt
fi
