"""What an ``-t apple`` package is made for: the Core ML deployment targets (OS releases)
and the compression each can hold, the compute precisions and compute units.

Each deployment target adds to the one before (``ct.target``: iOS16=7 ... iOS26=10)::

    ios16 / macos13   int8/uint8 per-tensor or per-channel weights (constexpr_affine_dequantize),
                      per-tensor look-up tables (constexpr_lut_to_dense), unstructured
                      sparsity with a bit mask (constexpr_sparse_to_dense)
    ios17 / macos14   activation quantize / dequantize (int8, uint8)
    ios18 / macos15   int4/uint4 and per-block weights (constexpr_blockwise_shift_scale),
                      grouped look-up tables, joint sparse+quantized
                      (constexpr_sparse_blockwise_shift_scale), fused SDPA
    ios26 / macos26   nothing new for compression in coremltools 9.0

``compute_units`` is a load-time choice on the device (``MLModel(..., compute_units=...)``):
it is recorded in the bundle's README and the manifest, not in the package.
"""

from __future__ import annotations

import dataclasses

from edgecc.target import QuantSupport

# coremltools releases this target is tested with (constraints.txt pins 9.0)
COREMLTOOLS_TESTED = ((9, 0), (9, 1))  # [lowest, highest) as (major, minor)


@dataclasses.dataclass(frozen=True)
class Deployment:
    name: str
    ct_target: str  # attribute of coremltools.target
    level: int  # 16, 17, 18, 26: what it can hold (iOS numbering; macOS 13 = iOS 16 ...)
    adds: str

    @property
    def affine_int8(self) -> bool:
        return True

    @property
    def activation_qdq(self) -> bool:
        return self.level >= 17

    @property
    def int4_and_blocks(self) -> bool:
        return self.level >= 18

    @property
    def grouped_lut(self) -> bool:
        return self.level >= 18

    @property
    def joint_sparse(self) -> bool:
        return self.level >= 18


_ADDS = {
    16: "int8 per-channel weights, per-tensor LUTs, sparse weights (bit mask)",
    17: "+ activation quantize/dequantize (int8/uint8)",
    18: "+ int4/uint4 per-block weights, grouped LUTs, joint sparse+quantized, fused SDPA",
    26: "as 18 (no new compression ops in coremltools 9.0)",
}

DEPLOYMENTS: dict[str, Deployment] = {
    d.name: d for d in (
        Deployment("ios16", "iOS16", 16, _ADDS[16]),
        Deployment("ios17", "iOS17", 17, _ADDS[17]),
        Deployment("ios18", "iOS18", 18, _ADDS[18]),
        Deployment("ios26", "iOS26", 26, _ADDS[26]),
        Deployment("macos13", "macOS13", 16, _ADDS[16]),
        Deployment("macos14", "macOS14", 17, _ADDS[17]),
        Deployment("macos15", "macOS15", 18, _ADDS[18]),
        Deployment("macos26", "macOS26", 26, _ADDS[26]),
    )
}
DEFAULT_DEPLOYMENT = "ios18"
COMPUTE_PRECISIONS = ("fp16", "fp32")
COMPUTE_UNITS = ("all", "cpu_and_ne", "cpu_only", "cpu_and_gpu")
FALLBACKS = ("error", "dequantize")


def min_deployment(level: int, like: Deployment | None = None) -> str:
    """The first deployment name with ``level``'s abilities (a macOS one when ``like`` is
    a macOS deployment: ``macos15`` for 18)."""
    if like is not None and like.name.startswith("macos"):
        return {16: "macos13", 17: "macos14", 18: "macos15"}.get(level, "macos26")
    return {16: "ios16", 17: "ios17", 18: "ios18"}.get(level, "ios26")


def needs(what: str, level: int, dep: Deployment) -> str:
    """``"<what> need deployment=ios18 or later (this is ios17)"``: the fix named as the
    option to give."""
    return (f"{what} need --target-option deployment={min_deployment(level, dep)} or later "
            f"(deployment={dep.name} cannot hold them)")


def quantization(deployment: Deployment, fallback: str) -> QuantSupport:
    """What the quantize pass may produce for ``deployment`` (with ``fallback=dequantize``
    anything: what cannot be held is stored as float, named in the report)."""
    if fallback == "dequantize":
        return QuantSupport(int4_block_axis_packing=True)
    weights = {"int8", "uint8", "float16"} | (
        {"int4", "uint4"} if deployment.int4_and_blocks else set())
    granularities = {"per-tensor", "per-channel"} | (
        {"per-group"} if deployment.int4_and_blocks else set())
    activations = {"float16"} | ({"int8", "uint8"} if deployment.activation_qdq else set())
    return QuantSupport(weight_dtypes=frozenset(weights),
                        activation_dtypes=frozenset(activations),
                        weight_granularities=frozenset(granularities),
                        dynamic_activations=False,
                        # carry.unpacked_codes reads codes packed along the block axis (3x3
                        # and 1x1 convolutions in blocks along input channels)
                        int4_block_axis_packing=True)


def listing() -> str:
    lines = ["deployment (--target-option deployment=..., default ios18):"]
    for d in DEPLOYMENTS.values():
        lines.append(f"  {d.name:<9} {d.adds}")
    lines.append(f"compute_precision: {' | '.join(COMPUTE_PRECISIONS)} (default fp16); "
                 f"compute_units: {' | '.join(COMPUTE_UNITS)} (recorded; chosen at load)")
    return "\n".join(lines)
