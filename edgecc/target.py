"""The target interface: what a backend must answer.

A target says (1) whether its toolchain is available here, and why not; (2) which nodes it
supports, with a reason when it does not; (3) which passes it needs before lowering
(legalization); (4) how to lower a program into artifact files, returning them with a
report of the lowering (``Lowered``); and, if it can execute on this machine, (5) how to
load those files back and run them, so ``compile()`` can verify the artifact against the
original model. Backend libraries are imported only inside methods.

A target with presets (devices) names the option a preset fills (``preset_option``), so
``-t arm64:raspberry-pi-5`` means ``-t arm64 --target-option preset=raspberry-pi-5``
(``split_target_spec``, ``with_preset``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol

import torch
import torch.fx as fx

from edgecc.errors import OptionError
from edgecc.pass_base import NoOptions
from edgecc.pipeline_text import PassStep
from edgecc.program import Program, TensorSpec, op_name


@dataclasses.dataclass(frozen=True)
class Availability:
    available: bool
    detail: str  # the toolchain version, or what is missing and how to install it


def module_versions(modules: Sequence[tuple[str, str]]) -> tuple[dict[str, str], list[str]]:
    """``({package: version}, [missing packages])`` for ``(module, package)`` pairs: a module
    that does not import counts as missing. For availability checks (the import is the
    target's own, done when ``edgecc targets`` or a compile asks)."""
    import importlib

    found, missing = {}, []
    for module, package in modules:
        try:
            found[package] = str(importlib.import_module(module).__version__)
        except Exception:
            missing.append(package)
    return found, missing


@dataclasses.dataclass(frozen=True)
class Support:
    supported: bool
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class Artifact:
    """One file a target wrote, relative to the output directory."""

    path: str
    kind: str  # "library", "params", "runner", ...
    description: str = ""


@dataclasses.dataclass(frozen=True)
class Lowered:
    """What ``Target.lower`` returns: the files it wrote, and facts about the lowering for
    the manifest's ``lowering`` section (tuning statistics, integer kernels, ...)."""

    artifacts: list[Artifact]
    report: dict[str, Any] = dataclasses.field(default_factory=dict)


ALL_QUANT_DTYPES = frozenset(
    ("int8", "uint8", "int4", "uint4", "float8_e4m3fn", "float8_e5m2", "float16", "bfloat16"))


@dataclasses.dataclass(frozen=True)
class QuantSupport:
    """What quantization a target executes; the quantize pass makes its result legal here.

    The default (every format, every granularity, asymmetric, dynamic) is what the float
    simulator runs; hardware targets narrow it (e.g. TensorRT: symmetric int8 only).
    """

    weight_dtypes: frozenset[str] = ALL_QUANT_DTYPES
    activation_dtypes: frozenset[str] = ALL_QUANT_DTYPES
    weight_granularities: frozenset[str] = frozenset(("per-tensor", "per-channel", "per-group"))
    symmetric_activations_only: bool = False
    symmetric_weights_only: bool = False
    dynamic_activations: bool = True
    # 8-bit weights one bit narrower ([-64, 63]): runtimes whose int8 kernels sum u8·s8
    # pairs in saturating 16-bit lanes (onnxruntime on x86 without VNNI) need it.
    reduce_range_weights: bool = False
    # 4-bit per-block weights with an odd last dimension (3x3 / 1x1 convolutions, blocks
    # along input channels) packed along the block axis (edgecc.quant.packed_dim): only
    # targets whose lowering unpacks with edgecc.quant.stored_packed_dim say True
    int4_block_axis_packing: bool = False


class Runner(Protocol):
    def run(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]: ...


class Target:
    """Base class of targets (see the module docstring)."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    can_execute: ClassVar[bool] = False
    quantization: ClassVar[QuantSupport] = QuantSupport()
    # the option ``-t NAME:PRESET`` fills ("" = the target has no presets)
    preset_option: ClassVar[str] = ""

    def availability(self) -> Availability:
        return Availability(True, "")

    def require_available(self) -> Availability:
        """The availability, or ``TargetUnavailableError`` saying what is missing."""
        avail = self.availability()
        if not avail.available:
            from edgecc.errors import TargetUnavailableError

            raise TargetUnavailableError(f"target '{self.name}' is unavailable: {avail.detail}")
        return avail

    def supports(self, node: fx.Node) -> Support:
        return Support(True)

    def legalization(self, options: Any) -> Sequence[PassStep]:
        """Passes run after the user's pipeline and before ``lower``."""
        return ()

    def check_pipeline(self, steps: Sequence[Any], options: Any) -> None:
        """Refuse, before any pass runs, a step of the user's pipeline this target cannot
        honour (an ``EdgeccError`` naming the step and the fix); by default every step is
        accepted."""

    def lower(self, program: Program, output_dir: str, options: Any) -> Lowered:
        raise NotImplementedError

    def load(self, output_dir: str, manifest: dict[str, Any]) -> Runner:
        raise NotImplementedError(f"target '{self.name}' cannot execute on this machine")

    def listing(self) -> str:
        """Extra lines for ``edgecc targets`` (e.g. the presets a target knows)."""
        return ""

    def executes(self, options: Any) -> bool:
        """Whether artifacts built with ``options`` can run here now (an emulator may need
        setting up first)."""
        return self.can_execute

    def not_verified(self, options: Any) -> list[str]:
        """What this target's verification cannot check here (written into the manifest)."""
        return [] if self.can_execute else ["artifact execution (target cannot run here)"]

    # -- helpers --------------------------------------------------------------------------
    def unsupported_nodes(self, program: Program) -> list[tuple[str, str, str]]:
        """``(node name, operator, reason)`` for every node this target cannot lower."""
        out = []
        for node in program.nodes("call_function"):
            support = self.supports(node)
            if not support.supported:
                out.append((node.name, op_name(node), support.reason))
        return out


def split_target_spec(spec: str) -> tuple[str, str | None]:
    """``"arm64:cortex-a76"`` -> ``("arm64", "cortex-a76")``; ``"host"`` -> ``("host", None)``."""
    name, sep, preset = spec.partition(":")
    return name, (preset if sep else None)


def with_preset(target_cls: type[Target], preset: str | None,
                options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with the preset of ``-t NAME:PRESET`` filled into the target's
    ``preset_option``; an error for a target without presets, an empty preset, or a
    preset given both ways with different values."""
    out = dict(options)
    if preset is None:
        return out
    name, key = target_cls.name, target_cls.preset_option
    if not key:
        raise OptionError(f"target '{name}' has no presets: write '-t {name}' (and "
                          "--target-option KEY=VALUE for its options)")
    if not preset:
        raise OptionError(f"'-t {name}:' names no preset: write '-t {name}:PRESET' "
                          "(`edgecc targets` lists them)")
    if key in out and out[key] != preset:
        raise OptionError(f"the {name} preset is given twice: '-t {name}:{preset}' and "
                          f"{key}={out[key]!r}; give one")
    out[key] = preset
    return out


def example_shape(spec: TensorSpec) -> list[int]:
    """A concrete shape for ``spec`` (a symbolic dimension takes 1), for the examples in
    bundle READMEs."""
    return [d if isinstance(d, int) else 1 for d in spec.shape]
