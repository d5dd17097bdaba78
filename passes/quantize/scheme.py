"""Quantization schemes: what is quantized to which format, at which granularity.

==============  =============================================  ===============================
scheme          weights                                        activations (inputs of layers)
==============  =============================================  ===============================
``w8a8``        int8, per-channel, symmetric [-127, 127]       int8 per-tensor, calibrated
``dynamic-int8``int8, per-channel, symmetric [-127, 127]       int8 per-token, from each input
``w8a16``       int8, per-channel, symmetric [-127, 127]       float (16-bit: see below)
``w4a16``       uint4, per-group (``group_size``), asymmetric  float (16-bit: see below)
``fp16``        float16                                        float16
``bf16``        bfloat16                                       bfloat16
``fp8``         float8_e4m3fn, per-channel                     float8_e4m3fn per-tensor, calib.
==============  =============================================  ===============================

``a16`` (w8a16, w4a16): activations stay float; the program (and edgecc's simulator of it)
computes them in float32. Targets may round them to a 16-bit float, as torchao's int4
weight-only runs bfloat16 activations: the x86 host kernel (``targets/tvm/x86_wonly``) rounds
a linear's input to bfloat16 (round to nearest even, relative 2^-8) and accumulates in float32
with ``vdpbf16ps`` for prefill (more than 4 rows) on CPUs with AVX512_BF16 (on AMX-BF16 CPUs,
16+ rows: AMX tiles), for weights this pass quantized (imported GGUF / ONNX weights keep
float32); other x86 CPUs, decode rows and ``edgecc_x86_wonly_bf16 = 0`` keep float32
activations. MiniLM (GPTQ g32): held-out cosine 0.98437 with bfloat16 vs 0.98438 with float32
activations (s25, Intel Xeon: AMX 0.98435, vdpbf16ps 0.98436, float32 0.98435).
"""

from __future__ import annotations

import dataclasses

Granularity = str  # "per-tensor" | "per-channel" | "per-group" | "per-token" (dynamic)
GRANULARITIES = ("per-tensor", "per-channel", "per-group")


@dataclasses.dataclass(frozen=True)
class TensorQuant:
    """How one kind of tensor (weights or activations) is quantized."""

    dtype: str
    granularity: Granularity = "per-tensor"
    symmetric: bool = True
    group_size: int = 0
    narrow: bool = False  # symmetric signed range without the lowest code: [-127, 127]
    reduce_range: bool = False  # one bit less: int8 weights in [-64, 63] (x86 u8s8 kernels)

    def range(self) -> tuple[int | None, int | None]:
        from edgecc.quant import qformat

        fmt = qformat(self.dtype)
        if fmt.is_float:
            return None, None
        if self.reduce_range:
            lo, hi = fmt.qmin // 2, fmt.qmax // 2
            return (lo + 1, hi) if self.narrow and fmt.signed else (lo, hi)
        if self.narrow and fmt.signed:
            return fmt.qmin + 1, fmt.qmax
        return fmt.qmin, fmt.qmax

    def describe(self) -> str:
        group = f" g{self.group_size}" if self.granularity == "per-group" else ""
        sym = "sym" if self.symmetric else "asym"
        return f"{self.dtype} {self.granularity}{group} {sym}"


@dataclasses.dataclass(frozen=True)
class Scheme:
    name: str
    weights: TensorQuant
    activations: TensorQuant | None = None
    dynamic: bool = False  # activation ranges computed at run time

    @property
    def weight_only(self) -> bool:
        return self.activations is None

    @property
    def needs_calibration(self) -> bool:
        return self.activations is not None and not self.dynamic


_W8 = TensorQuant("int8", "per-channel", symmetric=True, narrow=True)
SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in (
        Scheme("w8a8", _W8, TensorQuant("int8", "per-tensor", symmetric=False)),
        Scheme("dynamic-int8", _W8, TensorQuant("int8", "per-token", symmetric=False),
               dynamic=True),
        Scheme("w8a16", _W8),
        Scheme("w4a16", TensorQuant("uint4", "per-group", symmetric=False, group_size=128)),
        Scheme("fp16", TensorQuant("float16"), TensorQuant("float16")),
        Scheme("bf16", TensorQuant("bfloat16"), TensorQuant("bfloat16")),
        Scheme("fp8", TensorQuant("float8_e4m3fn", "per-channel"),
               TensorQuant("float8_e4m3fn", "per-tensor")),
    )
}
