"""Jetson modules, the JetPack releases each runs, and the TensorRT each JetPack fixes.

A Jetson's TensorRT comes with its JetPack (there is no separate TensorRT install on the
device), so an engine must be built by the TensorRT of the JetPack the board runs. Each
preset records what the module's GPU can do (compute capability, DLA cores, 2:4 sparse
tensor cores, precisions) and which JetPacks support it; :class:`JetsonOptions` refuses an
impossible request (FP8 on Orin, DLA on Orin Nano or Thor, 2:4 sparsity on Xavier,
TensorRT 11 on JetPack 6, a JetPack the module never had) when it is constructed, before
any pass runs.

Sources (checked with the search tool; "unverified" where no NVIDIA page was found):

* JetPack 4.6 = L4T 32.6.1, TensorRT 8.0.1; 4.6.1 / 4.6.2 = L4T 32.7.1, TensorRT 8.2.1,
  CUDA 10.2 (developer.nvidia.com/jetpack-sdk-461: "JetPack 4.6.1 includes TensorRT 8.2";
  community table gist Tiryoh/2b5dc1f86ab6bc3e6922e97a4c1ac2f2).
* JetPack 5.1 = L4T 35.2.1, CUDA 11.4, TensorRT 8.5.2, cuDNN 8.6.0; supports AGX Orin, Orin
  NX and AGX Xavier / Xavier NX (developer.nvidia.com/embedded/jetpack-sdk-51). 5.1.x is
  Xavier's last JetPack.
* JetPack 6.0 = TensorRT 8.6.2, CUDA 12.2 (unverified: no NVIDIA page in the corpus).
* JetPack 6.1 and 6.2 = CUDA 12.6, TensorRT 10.3, cuDNN 9.3 (pytorch.org/TensorRT
  getting_started/jetpack; a JetPack 6.2 Orin Nano report lists L4T 36.4, TensorRT 10.3).
* JetPack 7.0 / 7.1 (Thor only) = TensorRT 10.13, CUDA 13.0 (shared/notes; TensorRT 10.13.2
  "Added support for CUDA 13.0"); JetPack 7.2 (Orin and Thor) = TensorRT 10.16, CUDA 13.2
  (NVIDIA/TensorRT#4832, L4T R39.2).
* TensorRT 11.3 "NVIDIA JetPack is not supported ... Jetson Orin (JetPack 6.x): not
  supported ... upgrade to JetPack 7.x is required before a future TensorRT 11.x JetPack
  release" (docs.nvidia.com/deeplearning/tensorrt/11.3.0, migration 10.x to 11.x on Jetson);
  TensorRT 11.4.1 supports JetPack >= 7.2.2 on AGX Orin and Thor (shared/notes).
* DLA: "TensorRT 10.7 was the last release that supported DLA" (same 11.3 page); none on
  Orin Nano (NVIDIA module spec) or Thor.
* Precisions: INT8 and INT4 weight-only (W4A16) Ampere and newer, FP8 Ada (sm_89) and newer,
  FP4 Blackwell (ModelOpt support matrix); INT4 weight-only DequantizeLinear needs TensorRT
  10 (opset 21 blocked quantization).
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Literal

Precision = Literal["fp16", "int8", "w4a16", "fp8", "auto"]


@dataclasses.dataclass(frozen=True)
class JetPack:
    version: str
    tensorrt: str  # the TensorRT version it ships
    cuda: str
    l4t: str
    verified: bool = True  # False: no NVIDIA page found for this row

    @property
    def trt_major(self) -> int:
        return int(self.tensorrt.split(".")[0])


JETPACKS: dict[str, JetPack] = {j.version: j for j in (
    JetPack("4.6", "8.0.1", "10.2", "32.6.1"),
    JetPack("4.6.1", "8.2.1", "10.2", "32.7.1"),
    JetPack("5.1", "8.5.2", "11.4", "35.2.1"),
    JetPack("6.0", "8.6.2", "12.2", "36.3", verified=False),
    JetPack("6.1", "10.3.0", "12.6", "36.4"),
    JetPack("6.2", "10.3.0", "12.6", "36.4.3"),
    JetPack("7.0", "10.13.3", "13.0", "38.2"),
    JetPack("7.1", "10.13.3", "13.0", "38.4", verified=False),
    JetPack("7.2", "10.16.2", "13.2", "39.2"),
)}

# TensorRT 11 on Jetson: 11.4.1 on JetPack >= 7.2.2, AGX Orin and Thor only.
TRT11_JETPACKS = ("7.2",)
TRT11_DEVICES = ("agx-orin", "agx-thor")

# The highest ONNX opset each TensorRT's parser is documented to import (support matrix).
MAX_OPSET = {"8.0": 13, "8.2": 13, "8.5": 17, "8.6": 17, "10.3": 20, "10.13": 24,
             "10.16": 24, "11.4": 24}


@dataclasses.dataclass(frozen=True)
class Device:
    name: str
    module: str
    gpu: str  # architecture
    compute_capability: tuple[int, int]
    dla_cores: int
    sparse_2_4: bool  # 2:4 structured-sparse tensor cores
    precisions: tuple[str, ...]
    jetpacks: tuple[str, ...]  # JetPack versions supporting the module
    default_jetpack: str

    @property
    def sm(self) -> str:
        return f"sm_{self.compute_capability[0]}{self.compute_capability[1]}"


_XAVIER = dict(gpu="Volta", compute_capability=(7, 2), sparse_2_4=False,
               precisions=("fp16", "int8", "auto"), jetpacks=("4.6", "4.6.1", "5.1"),
               default_jetpack="5.1")
_ORIN = dict(gpu="Ampere", compute_capability=(8, 7), sparse_2_4=True,
             precisions=("fp16", "int8", "w4a16", "auto"),
             jetpacks=("5.1", "6.0", "6.1", "6.2", "7.2"), default_jetpack="6.2")

DEVICES: dict[str, Device] = {d.name: d for d in (
    Device("agx-xavier", "Jetson AGX Xavier", dla_cores=2, **_XAVIER),
    Device("xavier-nx", "Jetson Xavier NX", dla_cores=2, **_XAVIER),
    Device("agx-orin", "Jetson AGX Orin 32/64 GB", dla_cores=2, **_ORIN),
    Device("orin-nx-16gb", "Jetson Orin NX 16 GB", dla_cores=2, **_ORIN),
    Device("orin-nx-8gb", "Jetson Orin NX 8 GB", dla_cores=1, **_ORIN),
    Device("orin-nano", "Jetson Orin Nano 4/8 GB", dla_cores=0, **_ORIN),
    Device("agx-thor", "Jetson AGX Thor T5000", gpu="Blackwell", compute_capability=(11, 0),
           dla_cores=0, sparse_2_4=True, precisions=("fp16", "int8", "w4a16", "fp8", "auto"),
           jetpacks=("7.0", "7.1", "7.2"), default_jetpack="7.0"),
)}

# Minimum TensorRT major per precision (INT4 weight-only DQ: TensorRT 10).
_MIN_TRT = {"w4a16": 10, "fp8": 10}


@dataclasses.dataclass(frozen=True)
class JetsonOptions:
    """``-t jetson --target-option device=orin-nano,precision=int8``.

    ``jetpack`` defaults to the device's usual JetPack; ``tensorrt`` overrides the TensorRT
    the JetPack ships (only TensorRT 11 on JetPack 7.2 is a real alternative).
    ``opset`` 0 picks the TensorRT's highest (at most 20; 21 for w4a16); the model is
    exported at opset >= 18 (torch.onnx) and converted down for TensorRT 8.
    """

    device: str = "orin-nano"
    jetpack: str = ""
    tensorrt: str = ""
    precision: Precision = "fp16"
    dla: bool = False
    dla_core: int = 0
    sparsity: bool = False  # build with 2:4 sparse kernels (prune{pattern=2:4} first)
    narrow_range: bool = False  # activations in [-127, 127] (weights always are)
    opset: int = 0
    block_size: int = 128  # w4a16: weights per scale along K (ModelOpt's int4 default)
    # Q/DQ placement (ModelOpt's defaults): GEMV (M or N = 1) and convolutions with fewer
    # than 16 channels stay in float, with the reason in the report.
    quantize_gemv: bool = False
    quantize_small_convs: bool = False
    workspace_mb: int = 2048
    # model.onnx keeps its tensors in model.onnx.data past this size (protobuf's 2 GB
    # limit, with room: TensorRT#4494 "Reading dangerously large protocol message")
    external_data_mb: int = 1800
    # dynamic inputs: batch size range of the optimization profile (min, opt, max)
    profile_min: int = 1
    profile_opt: int = 0  # 0: the example input's
    profile_max: int = 0  # 0: the example input's

    def __post_init__(self) -> None:
        resolve(self)

    @property
    def target(self) -> Device:
        return DEVICES[self.device]


@dataclasses.dataclass(frozen=True)
class Resolved:
    device: Device
    jetpack: JetPack
    tensorrt: str
    opset: int

    @property
    def trt_major(self) -> int:
        return int(self.tensorrt.split(".")[0])

    @property
    def trt_minor(self) -> str:
        return ".".join(self.tensorrt.split(".")[:2])


def resolve(opts: JetsonOptions) -> Resolved:
    """The device, JetPack and TensorRT ``opts`` ask for; ``ValueError`` (one line: the
    problem and the fix) when the combination does not exist."""
    if opts.device not in DEVICES:
        close = difflib.get_close_matches(opts.device, list(DEVICES), n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ValueError(f"unknown Jetson device '{opts.device}'; {hint}devices: "
                         f"{', '.join(DEVICES)}")
    dev = DEVICES[opts.device]
    version = opts.jetpack or dev.default_jetpack
    if version not in JETPACKS:
        raise ValueError(f"unknown JetPack '{version}'; JetPacks edgecc knows: "
                         f"{', '.join(JETPACKS)} ({dev.name} runs {', '.join(dev.jetpacks)})")
    if version not in dev.jetpacks:
        raise ValueError(f"JetPack {version} does not support the {dev.module}; use "
                         f"jetpack={' or '.join(dev.jetpacks)}")
    jp = JETPACKS[version]
    trt = jp.tensorrt
    if opts.tensorrt:
        major = opts.tensorrt.split(".")[0]
        if major == "11":
            if version not in TRT11_JETPACKS or dev.name not in TRT11_DEVICES:
                raise ValueError(
                    f"TensorRT 11 does not support JetPack {version} on {dev.name} (11.4.1 "
                    f"needs JetPack >= 7.2.2 on agx-orin or agx-thor); leave tensorrt unset "
                    f"to use JetPack {version}'s TensorRT {jp.tensorrt}")
            trt = "11.4.1" if opts.tensorrt == "11" else opts.tensorrt
        elif opts.tensorrt.split(".")[:2] != jp.tensorrt.split(".")[:2]:
            raise ValueError(f"JetPack {version} ships TensorRT {jp.tensorrt}, not "
                             f"{opts.tensorrt}; leave tensorrt unset or pick the JetPack "
                             "that ships it")
        else:
            trt = opts.tensorrt
    trt_major = int(trt.split(".")[0])
    trt_minor = ".".join(trt.split(".")[:2])
    if opts.precision not in dev.precisions:
        having = [d for d, v in DEVICES.items() if opts.precision in v.precisions]
        raise ValueError(f"{dev.name} ({dev.gpu} {dev.sm}) has no {opts.precision} support; "
                         f"use precision={' or '.join(dev.precisions[:-1])} or a device that "
                         f"has it: {', '.join(having)}")
    if trt_major < _MIN_TRT.get(opts.precision, 0):
        newer = [v for v in dev.jetpacks if JETPACKS[v].trt_major >= _MIN_TRT[opts.precision]]
        raise ValueError(f"precision={opts.precision} needs TensorRT >= "
                         f"{_MIN_TRT[opts.precision]} and JetPack {version} ships {trt}; use "
                         f"jetpack={' or '.join(newer)}")
    if opts.dla:
        if dev.dla_cores == 0:
            raise ValueError(f"{dev.module} has no DLA; set dla=false (the GPU runs the "
                             "whole network) or pick agx-orin / orin-nx-16gb / agx-xavier")
        if not 0 <= opts.dla_core < dev.dla_cores:
            raise ValueError(f"{dev.name} has {dev.dla_cores} DLA core(s); use dla_core="
                             f"{' or '.join(str(i) for i in range(dev.dla_cores))}")
        dla_ok = (trt_major == 8 or (trt_major == 10 and int(trt.split(".")[1]) <= 7)
                  or (trt_major == 11 and dev.name == "agx-orin"))
        if not dla_ok:
            raise ValueError(f"TensorRT {trt} (JetPack {version}) has no DLA support (10.7 was "
                             "the last 10.x with DLA); use jetpack=6.2 or set dla=false")
        if opts.precision not in ("fp16", "int8"):
            raise ValueError(f"DLA runs fp16 and int8 only, not {opts.precision}; use "
                             "precision=int8 or dla=false")
    if opts.sparsity and not dev.sparse_2_4:
        raise ValueError(f"{dev.module} ({dev.gpu}) has no 2:4 sparse tensor cores; set "
                         "sparsity=false (pruned weights still run dense)")
    if not 0 <= opts.dla_core:
        raise ValueError("dla_core must be >= 0")
    top = MAX_OPSET.get(trt_minor, 20)
    if opts.precision == "w4a16" and trt_major >= 10:
        # INT4 weights exist in ONNX only as opset 21's blocked DequantizeLinear; TensorRT
        # 10.0 EA's parser "Added support for INT4 quantization" (onnx-tensorrt changelog)
        # while its documented range still ended at opset 20 (raised to 22 in 10.9).
        top = max(top, 21)
    opset = opts.opset or (21 if opts.precision == "w4a16" else min(top, 20))
    if not 13 <= opset <= 23:
        raise ValueError(f"opset must be between 13 and 23, got {opset}")
    if opts.precision == "w4a16" and opset < 21:
        raise ValueError("precision=w4a16 writes blocked DequantizeLinear, which needs "
                         "opset >= 21; leave opset unset")
    if opset > top:
        raise ValueError(f"TensorRT {trt} imports ONNX opset <= {top}, not {opset}; use "
                         f"opset={top} or a newer JetPack")
    if opts.block_size < 2 or opts.block_size % 2:
        raise ValueError(f"block_size must be a positive even number (INT4 packs two per "
                         f"byte), got {opts.block_size}; ModelOpt uses 128")
    if not 0 <= opts.external_data_mb <= 2000:
        raise ValueError("external_data_mb must be between 0 and 2000 (protobuf cannot "
                         f"serialize 2 GB), got {opts.external_data_mb}")
    if opts.workspace_mb <= 0:
        raise ValueError("workspace_mb must be positive")
    if opts.profile_min < 1 or (opts.profile_max and opts.profile_max < opts.profile_min) or (
            opts.profile_opt and not opts.profile_min <= opts.profile_opt
            <= (opts.profile_max or opts.profile_opt)):
        raise ValueError("the optimization profile needs 1 <= profile_min <= profile_opt <= "
                         "profile_max")
    return Resolved(dev, jp, trt, opset)


def describe() -> str:
    """One line per device for ``edgecc targets``."""
    lines = []
    for d in DEVICES.values():
        lines.append(f"{d.name:<14}{d.gpu} {d.sm:<7} DLA {d.dla_cores}  2:4 "
                     f"{'yes' if d.sparse_2_4 else 'no ':<4}{'/'.join(d.precisions):<28}"
                     f"JetPack {', '.join(d.jetpacks)} (default {d.default_jetpack}: "
                     f"TensorRT {JETPACKS[d.default_jetpack].tensorrt})")
    return "\n".join(lines)
