"""``-t jetson`` (``-t jetson:orin-nano``): TensorRT for a Jetson module and its JetPack.

The folder has the shape of every target: ``presets.py`` (modules, JetPack -> TensorRT,
options refusing what cannot exist), ``partition.py`` (TensorRT's ONNX operator table, what
runs in which precision), ``placement.py`` (legalization: Q/DQ where TensorRT fuses them),
``onnx_export.py`` + ``lower.py`` (the ONNX and the bundle), ``checker.py`` (TensorRT's
quantization rules), ``runner.py`` (what runs here: onnxruntime on the exact ONNX, polygraphy)
and ``bundle/`` (build_engine.py, trtexec.sh, run_engine.py, README.txt).

A Jetson's TensorRT is the one its JetPack ships. ``compile()`` verifies ``model.onnx`` with
onnxruntime against the fake-quant program and the original; where ``tensorrt`` imports and
an NVIDIA GPU is visible it also builds the engine and compares its outputs
(``engine.py``); elsewhere the engine build and GPU execution are listed as not verified.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from edgecc.errors import OptionError
from edgecc.passes import (
    ApplyMasks, AttentionMaskToAdditive, DecomposeComposites, FoldBatchNorm, Quantize,
    QuantizeOptions,
)
from edgecc.pipeline_text import PassStep, flat_steps
from edgecc.program import Program
from edgecc.target import Availability, Lowered, QuantSupport, Target, module_versions
from edgecc.targets.jetson.placement import JetsonQDQPlacement, PlacementOptions
from edgecc.targets.jetson.presets import JetsonOptions, describe, resolve



def quantize_options(options: JetsonOptions) -> QuantizeOptions | None:
    """The quantize options the legalization runs for ``options.precision`` (None: fp16).
    A program the user's pipeline already quantized is left as it is: quantize finds no
    float layer to do."""
    return {
        "int8": QuantizeOptions(scheme="w8a8", embeddings=False),
        # INT4 weight-only as ModelOpt's int4 ONNX mode writes it: signed, symmetric,
        # blocks of ``block_size`` along K, fp32 scales
        "w4a16": QuantizeOptions(scheme="w4a16", weight_dtype="int4", weight_symmetric=True,
                                 group_size=options.block_size, scale_dtype="float32",
                                 embeddings=False),
        "fp8": QuantizeOptions(scheme="fp8", embeddings=False),
        "auto": QuantizeOptions(scheme="auto", auto_from="w8a8", embeddings=False),
    }.get(options.precision)


@functools.lru_cache(maxsize=1)
def _versions() -> tuple[dict[str, str], list[str]]:
    return module_versions((("onnx", "onnx"), ("onnxruntime", "onnxruntime"),
                            ("onnxscript", "onnxscript"),
                            ("onnx_graphsurgeon", "onnx-graphsurgeon"),
                            ("polygraphy", "polygraphy")))


class JetsonTarget(Target):
    """TensorRT-ready explicitly quantized ONNX + engine build scripts for a Jetson."""

    name = "jetson"
    description = ("NVIDIA Jetson (TensorRT): explicitly quantized ONNX + engine build "
                   "scripts per JetPack; engine built on the device")
    Options = JetsonOptions
    preset_option = "device"
    can_execute = True  # model.onnx runs here with onnxruntime; the engine does not
    quantization = QuantSupport(
        weight_dtypes=frozenset({"int8", "int4", "float8_e4m3fn"}),
        activation_dtypes=frozenset({"int8", "float8_e4m3fn"}),
        symmetric_activations_only=True, symmetric_weights_only=True,
        dynamic_activations=False)

    def availability(self) -> Availability:
        found, missing = _versions()
        if missing:
            return Availability(False, f"missing {', '.join(missing)}: pip install -c "
                                       f"constraints.txt 'edgecc[jetson]'")
        trt = "tensorrt not installed: engines are built on the device"
        try:
            import tensorrt  # noqa: F401

            trt = f"tensorrt {tensorrt.__version__}"
        except Exception:
            pass
        return Availability(True, ", ".join(f"{k} {v}" for k, v in found.items()) + f"; {trt}")

    def legalization(self, options: JetsonOptions) -> tuple[PassStep, ...]:
        # masks (prune{pattern=2:4}) go into the weights before quantize, which stores
        # only constant weights; zeros stay zeros under symmetric quantization
        steps = [PassStep(FoldBatchNorm, FoldBatchNorm.Options()),
                 PassStep(ApplyMasks, ApplyMasks.Options())]
        quantize = quantize_options(options)
        if quantize is not None:
            steps.append(PassStep(Quantize, quantize))
        steps += [PassStep(DecomposeComposites, DecomposeComposites.Options()),
                  PassStep(AttentionMaskToAdditive, AttentionMaskToAdditive.Options()),
                  PassStep(JetsonQDQPlacement, PlacementOptions(
                      quantize_gemv=options.quantize_gemv,
                      quantize_small_convs=options.quantize_small_convs,
                      narrow_range=options.narrow_range))]
        return tuple(steps)

    def check_pipeline(self, steps: Sequence[Any], options: JetsonOptions) -> None:
        """Asymmetric quantization asked for explicitly is refused: TensorRT runs zero
        points of 0 only ("TRT only supports symmetric quantization"). A scheme that is
        asymmetric by default is made symmetric by the quantize pass (the target's
        ``quantization`` says so) and reported; an explicit request is not silently
        changed."""
        for step in flat_steps(steps):
            if step.pass_cls is not Quantize:
                continue
            for key in ("activation_symmetric", "weight_symmetric"):
                if getattr(step.options, key) is False:
                    raise OptionError(
                        f"quantize{{{key}=false}}: TensorRT runs symmetric quantization "
                        f"only (zero point 0); drop {key}=false (the jetson target "
                        "quantizes symmetrically)")

    def lower(self, program: Program, output_dir: str, options: JetsonOptions) -> Lowered:
        self.require_available()
        from edgecc.targets.jetson.lower import lower

        artifacts, report = lower(program, output_dir, options)
        return Lowered(artifacts, report)

    def load(self, output_dir: str, manifest: dict[str, Any]) -> Any:
        import os

        from edgecc.targets.jetson.runner import OnnxModelRunner

        return OnnxModelRunner(os.path.join(output_dir, "model.onnx"))

    def not_verified(self, options: JetsonOptions) -> list[str]:
        from edgecc.targets.jetson.engine import tensorrt_here

        res = resolve(options)
        version, gpu = tensorrt_here()
        if version is not None:  # compile() built and ran the engine here
            return [f"the engine on the {res.device.module} itself (built here with "
                    f"TensorRT {version} on {gpu}; the device builds with TensorRT "
                    f"{res.tensorrt}, {res.device.sm})"]
        return [f"TensorRT {res.tensorrt} engine build (JetPack {res.jetpack.version}, "
                f"{res.device.sm}): {gpu}",
                "GPU execution of the engine (run_engine.py on the device)"]

    def listing(self) -> str:
        return describe()
