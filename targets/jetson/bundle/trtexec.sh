#!/usr/bin/env bash
# Build model.plan with trtexec (written by edgecc's jetson target): the command line
# equivalent of build_engine.py. Branches on the installed TensorRT major.
set -euo pipefail
cd "$(dirname "$0")"
TRTEXEC=${{TRTEXEC:-/usr/src/tensorrt/bin/trtexec}}
command -v "$TRTEXEC" >/dev/null 2>&1 || TRTEXEC=trtexec
MAJOR=$(python3 -c 'import tensorrt; print(tensorrt.__version__.split(".")[0])' 2>/dev/null || echo {trt_major})
case "$MAJOR" in
  8) TYPING="{flags_8}" ;;
  10) TYPING="{flags_10}" ;;
  *) TYPING="{flags_11}" ;;
esac
exec "$TRTEXEC" --onnx=model.onnx --saveEngine=model.plan $TYPING{sparsity}{shapes} \
  --memPoolSize=workspace:{workspace_mb}M{dla} \
  --profilingVerbosity=detailed --dumpLayerInfo --exportLayerInfo=layers.json "$@"
