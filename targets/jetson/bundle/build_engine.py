#!/usr/bin/env python3
"""Build a TensorRT engine from model.onnx on the Jetson (written by edgecc's jetson target).

    python3 build_engine.py [--engine model.plan] [--no-dla] [--verbose]

Reads engine_config.json beside it (precision, sparsity, DLA, optimization profiles,
workspace, the TensorRT/JetPack the bundle was made for) and branches on the installed
TensorRT major: 8.x explicit batch + INT8/FP16 builder flags (weak typing); 10.x a strongly
typed network (the Q/DQ in the ONNX fix the precisions) + SPARSE_WEIGHTS + profiles +
workspace pool + optional DLA with GPU fallback; 11.x always strongly typed. Engines are not
portable: build on the device, or with exactly the same TensorRT and GPU.
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> int:
    with open(os.path.join(HERE, "engine_config.json")) as f:
        cfg = json.load(f)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx", default=os.path.join(HERE, "model.onnx"))
    ap.add_argument("--engine", default=os.path.join(HERE, "model.plan"))
    ap.add_argument("--no-dla", action="store_true", help="build for the GPU only")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()

    import tensorrt as trt

    version = trt.__version__
    major = int(version.split(".")[0])
    if version.split(".")[:2] != cfg["tensorrt"].split(".")[:2]:
        print(f"warning: this bundle was made for TensorRT {cfg['tensorrt']} (JetPack "
              f"{cfg['jetpack']}), found {version}", file=sys.stderr)
    logger = trt.Logger(trt.Logger.VERBOSE if args.verbose else trt.Logger.INFO)
    builder = trt.Builder(logger)
    quantized = cfg["quantized"]
    fp16_onnx = cfg.get("onnx_float_type") == "float16"
    # strongly typed where the ONNX's types say everything: Q/DQ, an fp16 ONNX, or fp32
    strongly_typed = major >= 11 or (major == 10 and (quantized or fp16_onnx
                                                      or not cfg["fp16"]))
    if major >= 11:
        flags = 0  # TensorRT 11: every network is strongly typed
    elif major == 10:
        flags = (1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
                 if strongly_typed else 0)
    else:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(args.onnx):
        for i in range(parser.num_errors):
            print(parser.get_error(i), file=sys.stderr)
        return 1
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg["workspace_mb"] << 20)
    if not strongly_typed:
        # weak typing (8.x; 10.x fp16 precision): precisions come from builder flags
        if cfg["fp16"]:
            config.set_flag(trt.BuilderFlag.FP16)
        if quantized:
            config.set_flag(trt.BuilderFlag.INT8)
    elif major >= 11 and cfg["fp16"] and not quantized and not fp16_onnx:
        print("warning: TensorRT 11 builds the ONNX's own types (fp32 here); for fp16 convert "
              "model.onnx with ModelOpt AutoCast first", file=sys.stderr)
    if cfg["sparsity"]:
        config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
    if cfg["dla"] and not args.no_dla:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = cfg["dla_core"]
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if cfg["profiles"]:
        profile = builder.create_optimization_profile()
        for name, shapes in cfg["profiles"].items():
            profile.set_shape(name, shapes["min"], shapes["opt"], shapes["max"])
        config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        print("engine build failed (see the log above)", file=sys.stderr)
        return 1
    with open(args.engine, "wb") as f:
        f.write(engine)
    print(f"wrote {args.engine} ({len(engine)} bytes, TensorRT {version}, "
          f"{'strongly' if strongly_typed else 'weakly'} typed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
