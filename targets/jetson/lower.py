"""Lower a program for a Jetson: explicitly quantized ONNX, checked by edgecc's TensorRT
rules, plus the bundle that builds and runs the engine on the device.

Writes ``model.onnx`` (``model.onnx.data`` past ``external_data_mb``), ``engine_config.json``,
``build_engine.py``, ``trtexec.sh``, ``run_engine.py``, ``reference.npz`` and ``README.txt``;
returns the artifacts and the lowering report (TensorRT / JetPack versions, Q/DQ placement,
checks run here).
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import numpy as np

from edgecc.errors import LoweringError, one_line
from edgecc.program import Program
from edgecc.target import Artifact
from edgecc.targets.jetson import checker, engine, partition, runner
from edgecc.targets.jetson.onnx_export import export
from edgecc.targets.jetson.presets import JetsonOptions, Resolved, resolve

MODEL = "model.onnx"
WEIGHTS = "model.onnx.data"
BUNDLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bundle")
FLOAT_REASON = "jetson_float_reason"  # node meta the placement pass leaves


def lower(program: Program, output_dir: str, options: JetsonOptions
          ) -> tuple[list[Artifact], dict[str, Any]]:
    import onnx

    res = resolve(options)
    try:
        model, stored = export(program, res.opset)
    except Exception as exc:
        raise LoweringError(f"ONNX export failed: {one_line(exc)}") from exc
    problems = checker.check(model, tensorrt=res.tensorrt,
                             fp8="fp8" in res.device.precisions)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise LoweringError(f"TensorRT {res.tensorrt} would refuse the model: "
                            f"{problems[0]}{more}")
    quantized = any(n.op_type == "DequantizeLinear" for n in model.graph.node)
    float_type = "float32"
    if options.precision == "fp16" and not quantized and res.trt_major >= 11:
        # TensorRT 11 builds every network strongly typed: the ONNX's types are the
        # engine's, so an fp16 engine needs an fp16 ONNX (inputs and outputs stay fp32)
        model = _to_fp16(model)
        float_type = "float16"
    # everything that reads tensors in memory runs before saving (external data moves them)
    float_reasons = {n.name: n.meta[FLOAT_REASON] for n in program.nodes("call_function")
                     if FLOAT_REASON in n.meta}
    placement = partition.placement_report(model, float_reasons)
    qdq = _qdq_counts(model)
    step = runner.quant_step(model)
    sparse = runner.check_2_4(model) if options.sparsity else {}
    profiles = _profiles(program, options)
    path = os.path.join(output_dir, MODEL)
    external = model.ByteSize() > options.external_data_mb * 1_000_000
    onnx.save_model(model, path, save_as_external_data=external, all_tensors_to_one_file=True,
                    location=WEIGHTS, size_threshold=1024)
    del model
    try:
        onnx.checker.check_model(path, full_check=True)
    except Exception as exc:
        raise LoweringError(f"onnx.checker rejected the model: {one_line(exc)}") from exc

    report: dict[str, Any] = {
        "device": res.device.name, "module": res.device.module, "gpu": res.device.sm,
        "jetpack": res.jetpack.version, "tensorrt": res.tensorrt, "cuda": res.jetpack.cuda,
        "l4t": res.jetpack.l4t, "jetpack_table_verified": res.jetpack.verified,
        "opset": res.opset, "precision": options.precision, "quantized": quantized,
        "onnx_float_type": float_type, "external_data": external,
        "stored_weights": stored, "qdq": qdq, "placement": placement,
        "profiles": profiles, "operator_table": partition.CHECKED_AGAINST,
        "tensorrt_rules": "passed",
    }
    # checks that run here
    ort = runner.OnnxModelRunner(path)
    from edgecc.inputs import fresh_inputs

    samples = [fresh_inputs(program, seed=3000 + i) for i in range(2)]
    if float_type == "float16":
        report["onnxruntime_vs_fake_quant"] = runner.fp16_check(program, ort, samples)
    else:
        report["onnxruntime_vs_fake_quant"] = runner.one_step_check(program, ort, samples, step)
    check = report["onnxruntime_vs_fake_quant"]
    if not check["passed"]:
        raise LoweringError(f"onnxruntime's run of {MODEL} differs from edgecc's program by "
                            f"{max(check['max_abs_per_output']):.3g}, more than "
                            f"{check['tolerance']:.3g} ({check['bound']})")
    report["polygraphy"] = runner.lint(path)
    if not all(v["passed"] for v in report["polygraphy"].values()):
        bad = next(k for k, v in report["polygraphy"].items() if not v["passed"])
        raise LoweringError(f"polygraphy {bad} failed on {MODEL}: "
                            f"{report['polygraphy'][bad]['detail']}")
    if options.sparsity:
        report["sparsity_2_4"] = {"layers": sparse, "sparse": sum(sparse.values()),
                                  "dense": len(sparse) - sum(sparse.values())}
        if not any(sparse.values()):
            raise LoweringError("sparsity=true but no weight is 2:4 sparse along its input "
                                "channels; run prune{pattern=2:4} in the pipeline first")

    cfg = _engine_config(res, options, program, quantized, profiles, step, float_type)
    _write_bundle(output_dir, res, options, cfg, quantized, samples[0], program)
    report["engine"] = engine.build_and_run(output_dir)
    if report["engine"]["built"] and not report["engine"]["passed"]:
        raise LoweringError(f"the TensorRT engine's outputs differ from edgecc's program: "
                            f"{report['engine']['detail']}")
    artifacts = [
        Artifact(MODEL, "model", f"ONNX opset {res.opset}, {float_type}"
                 + (f", explicit Q/DQ, {stored} stored weights" if quantized else "")),
        Artifact("engine_config.json", "config", "what build_engine.py builds"),
        Artifact("build_engine.py", "script", "TensorRT Python API engine build"),
        Artifact("trtexec.sh", "script", "the same build with trtexec"),
        Artifact("run_engine.py", "runner", "runs model.plan on reference.npz and compares"),
        Artifact("reference.npz", "data", "inputs and edgecc's outputs for them"),
        Artifact("README.txt", "readme", "what to run on the device"),
    ]
    if external:
        artifacts.insert(1, Artifact(WEIGHTS, "weights", "external tensor data of model.onnx"))
    if report["engine"]["built"]:
        artifacts.append(Artifact(engine.PLAN, "engine",
                                  f"TensorRT {report['engine']['tensorrt']} engine built here"))
    return artifacts, report


def _to_fp16(model: Any) -> Any:
    """The float model in fp16, inputs and outputs kept fp32 (Casts at the boundary)."""
    try:
        from onnxconverter_common import float16
    except ImportError as exc:
        raise LoweringError("an fp16 ONNX for TensorRT 11 needs onnxconverter-common: pip "
                            "install -c constraints.txt onnxconverter-common") from exc
    return float16.convert_float_to_float16(model, keep_io_types=True)


def _qdq_counts(model: Any) -> dict[str, int]:
    inits = {i.name for i in model.graph.initializer}
    q = sum(n.op_type == "QuantizeLinear" for n in model.graph.node)
    dq_w = sum(n.op_type == "DequantizeLinear" and n.input[0] in inits
               for n in model.graph.node)
    dq_a = sum(n.op_type == "DequantizeLinear" and n.input[0] not in inits
               for n in model.graph.node)
    return {"activation_q": q, "activation_dq": dq_a, "weight_dq": dq_w}


def _profiles(program: Program, options: JetsonOptions) -> dict[str, dict[str, list[int]]]:
    """min/opt/max per input with a dynamic dimension (static models: none)."""
    out: dict[str, dict[str, list[int]]] = {}
    examples = program.example_inputs
    for spec, example in zip(program.input_specs, examples):
        if all(isinstance(d, int) for d in spec.shape):
            continue
        ranges = {sym: (lo, hi) for sym, lo, hi in spec.ranges}
        lo_s, opt_s, hi_s = [], [], []
        for i, d in enumerate(spec.shape):
            opt = int(example.shape[i])
            if isinstance(d, int):
                lo_s.append(d), opt_s.append(d), hi_s.append(d)
                continue
            lo, hi = ranges.get(d, (1, None))
            lo, hi = max(lo, 1), hi if hi is not None else opt
            if i == 0:
                lo = max(lo, options.profile_min)
                opt = options.profile_opt or opt
                hi = options.profile_max or max(hi, opt)
            lo_s.append(lo), opt_s.append(max(opt, lo)), hi_s.append(max(hi, opt))
        out[spec.name] = {"min": lo_s, "opt": opt_s, "max": hi_s}
    return out


def _engine_config(res: Resolved, options: JetsonOptions, program: Program, quantized: bool,
                   profiles: dict[str, Any], step: float, float_type: str) -> dict[str, Any]:
    return {
        "device": res.device.name, "jetpack": res.jetpack.version, "tensorrt": res.tensorrt,
        "precision": options.precision, "quantized": quantized, "onnx_float_type": float_type,
        "fp16": options.precision == "fp16" or (quantized and res.trt_major == 8),
        "sparsity": options.sparsity, "dla": options.dla, "dla_core": options.dla_core,
        "workspace_mb": options.workspace_mb, "profiles": profiles,
        "inputs": [s.name for s in program.input_specs],
        "outputs": [s.name for s in program.output_specs],
        "output_atol": step or None,
    }


def _write_bundle(output_dir: str, res: Resolved, options: JetsonOptions,
                  cfg: dict[str, Any], quantized: bool, sample: tuple[Any, ...],
                  program: Program) -> None:
    with open(os.path.join(output_dir, "engine_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    for name in ("build_engine.py", "run_engine.py"):
        shutil.copyfile(os.path.join(BUNDLE, name), os.path.join(output_dir, name))
    outs = program.run(*sample)
    arrays = {f"input:{s.name}": np.ascontiguousarray(x.detach().numpy())
              for s, x in zip(program.input_specs, sample)}
    arrays.update({f"output:{s.name}": o.detach().float().numpy()
                   for s, o in zip(program.output_specs, outs)})
    np.savez(os.path.join(output_dir, "reference.npz"), **arrays)

    def shape_flag(kind: str) -> str:
        return ",".join(f"{n}:{'x'.join(map(str, p[kind]))}" for n, p in cfg["profiles"].items())

    shapes = ("".join(f" \\\n  --{k}Shapes={shape_flag(k)}"
                      for k in ("min", "opt", "max")) if cfg["profiles"] else "")
    fp16 = options.precision == "fp16" and not quantized
    typed = not fp16 or cfg["onnx_float_type"] == "float16"
    text = _template("trtexec.sh").format(
        trt_major=res.trt_major,
        flags_8="--int8 --fp16" if quantized else "--fp16",
        flags_10="--stronglyTyped" if typed else "--fp16",
        flags_11="",
        sparsity=" --sparsity=enable" if options.sparsity else "",
        shapes=shapes, workspace_mb=options.workspace_mb,
        dla=f" --useDLACore={options.dla_core} --allowGPUFallback" if options.dla else "")
    with open(os.path.join(output_dir, "trtexec.sh"), "w") as f:
        f.write(text)
    os.chmod(os.path.join(output_dir, "trtexec.sh"), 0o755)
    notes = []
    if quantized:
        notes.append("The ONNX carries explicit Q/DQ (symmetric, fp32 scales): TensorRT >= 10 "
                     "builds it strongly typed; layers left float run in FP32 there.")
    elif cfg["onnx_float_type"] == "float16":
        notes.append("TensorRT 11 builds the ONNX's own types (strongly typed): model.onnx "
                     "is fp16 inside, with fp32 inputs and outputs.")
    if options.sparsity:
        notes.append("2:4 sparse weights: the build enables sparse kernels (SPARSE_WEIGHTS / "
                     "--sparsity=enable); the verbose log lists the layers that use them.")
    if options.dla:
        notes.append(f"DLA core {options.dla_core} with GPU fallback for layers DLA lacks.")
    precision_text = {"fp16": "float (TensorRT builds it in FP16)",
                      "int8": "INT8 explicit Q/DQ (w8a8)",
                      "w4a16": "INT4 weight-only blocked DequantizeLinear (w4a16)",
                      "fp8": "FP8 explicit Q/DQ", "auto": "mixed INT8 / float Q/DQ"}
    readme = _template("README.txt").format(
        device_module=res.device.module, sm=res.device.sm, jetpack=res.jetpack.version,
        tensorrt=res.tensorrt, precision_text=precision_text[options.precision]
        if quantized or options.precision == "fp16" else "float",
        gpu=res.device.gpu, cc=".".join(map(str, res.device.compute_capability)),
        notes="\n".join(notes) + ("\n" if notes else ""),
        sparsity_check=", and a 2:4 pattern check of the sparse weights"
        if options.sparsity else "")
    with open(os.path.join(output_dir, "README.txt"), "w") as f:
        f.write(readme)


def _template(name: str) -> str:
    with open(os.path.join(BUNDLE, name)) as f:
        return f.read()
