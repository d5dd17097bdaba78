"""The declarative NPU description: what an NPU can run, written once as data.

A description is a YAML file (the shipped ones live in ``devices/``; users pass the path of
their own) loaded into frozen dataclasses. It holds the NPU's name, its codegen (``vela`` for
Arm Ethos-U, ``c`` for a C-source NPU), its on-chip memory and clock, the quantization it
computes with, the ops it supports with their constraints, and the patterns it fuses. Legal
quantization, partitioning and the deployability report all follow from it.

Every error in a description is one line naming the file, the line and the field::

    my-npu.yaml:14: ops.conv2d.stride: min 4 > max 3

``OpSpec.check(...)`` answers whether one op instance fits, with the constraint that refuses it.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Mapping, Sequence
from typing import Any

from edgecc.errors import EdgeccError, UnknownNameError

# op name -> kind; kinds decide which constraint keys make sense and what a pattern can fuse
KNOWN_OPS: dict[str, str] = {
    "conv2d": "mac", "depthwise_conv2d": "mac", "fully_connected": "mac", "matmul": "mac",
    "transpose_conv2d": "mac",
    "add": "elementwise", "sub": "elementwise", "mul": "elementwise", "maximum": "elementwise",
    "minimum": "elementwise",
    "avg_pool2d": "pool", "max_pool2d": "pool", "mean": "reduction",
    "relu": "activation", "relu6": "activation", "relu_n1_to_1": "activation",
    "leaky_relu": "activation", "sigmoid": "activation", "tanh": "activation",
    "hardswish": "activation", "gelu": "activation",
    "softmax": "normalization",
    "reshape": "shape", "concat": "shape", "pad": "shape", "transpose": "shape",
    "slice": "shape", "strided_slice": "shape", "resize": "shape",
}
DTYPES = ("int8", "uint8", "int16")
CODEGENS = ("vela", "c")
# accelerator configs Vela 5.2 accepts (vela --help, --accelerator-config)
VELA_ACCELERATORS = ("ethos-u55-32", "ethos-u55-64", "ethos-u55-128", "ethos-u55-256",
                     "ethos-u65-256", "ethos-u65-512", "ethos-u85-128", "ethos-u85-256",
                     "ethos-u85-512", "ethos-u85-1024", "ethos-u85-2048")


class NpuDescriptionError(EdgeccError):
    """A malformed NPU description: one line with the file, line and field."""

    def __init__(self, file: str, line: int, field: str, problem: str):
        super().__init__(f"{file}:{line}: {field}: {problem}")
        self.file, self.line, self.field = file, line, field


@dataclasses.dataclass(frozen=True)
class Range:
    min: int
    max: int

    def __contains__(self, v: int) -> bool:
        return self.min <= v <= self.max

    def __str__(self) -> str:
        return f"[{self.min}, {self.max}]"


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """One supported op and its constraints; ``None`` means unconstrained."""

    name: str
    tflite: str | None = None  # the TFLite builtin Vela compiles (codegen vela)
    dtypes: tuple[str, ...] = ("int8",)
    kernel_height: Range | None = None  # dilated kernel for convolutions
    kernel_width: Range | None = None
    kernel_area: Range | None = None
    same_padding_kernel: Range | None = None  # kernel sides allowed with SAME padding
    stride: Range | None = None
    large_stride_needs_valid: bool = False  # stride > stride.max only with dilation 1, VALID
    dilation: Range | None = None
    padding: tuple[int, int, int, int] | None = None  # max (top, left, bottom, right)
    groups: Range | None = None
    depth_multiplier: Range | None = None
    channel_multiple: int = 1
    max_rank: int | None = None
    dim: Range | None = None
    batch: Range | None = None
    weight_abs_sum_max: int | None = None  # per output channel, sum |w|
    bias_bits: int | None = None
    reduced_axis_max: int | None = None  # input features of fully_connected / matmul
    ifm_area_max: int | None = None  # H * W of the input (softmax)
    same_quantization: bool = False  # inputs and output share scale and zero point

    @property
    def kind(self) -> str:
        return KNOWN_OPS[self.name]

    def check(self, *, dtype: str = "int8", shapes: Sequence[Sequence[int]] = (),
              kernel: Sequence[int] | None = None, stride: Sequence[int] | None = None,
              dilation: Sequence[int] | None = None, padding: str | None = None,
              pads: Sequence[int] | None = None, groups: int | None = None,
              depth_multiplier: int | None = None, channels: Sequence[int] = (),
              weight_abs_sum: int | None = None, bias_max_abs: int | None = None,
              reduced_axis: int | None = None) -> str | None:
        """None if an op instance with these attributes fits, else the constraint refusing it.

        ``kernel`` is (h, w) before dilation; ``padding`` "SAME" / "VALID"; ``pads`` explicit
        (top, left, bottom, right); ``channels`` the channel counts the multiple applies to.
        """
        f = f"ops.{self.name}"
        if dtype not in self.dtypes:
            return f"dtype {dtype} not in {list(self.dtypes)} ({f}.dtypes)"
        for shape in shapes:
            if self.max_rank is not None and len(shape) > self.max_rank:
                return f"rank {len(shape)} > {self.max_rank} ({f}.max_rank)"
            if self.dim is not None and any(d not in self.dim for d in shape):
                return f"shape {list(shape)} has a dimension outside {self.dim} ({f}.dim)"
            if self.batch is not None and shape and shape[0] not in self.batch:
                return f"batch {shape[0]} outside {self.batch} ({f}.batch)"
        dil = tuple(dilation or (1, 1))
        if self.dilation is not None and any(d not in self.dilation for d in dil):
            return f"dilation {list(dil)} outside {self.dilation} ({f}.dilation)"
        if kernel is not None:
            kh, kw = ((kernel[0] - 1) * dil[0] + 1, (kernel[1] - 1) * dil[1] + 1)
            if self.kernel_height is not None and kh not in self.kernel_height:
                return f"kernel height {kh} outside {self.kernel_height} ({f}.kernel_height)"
            if self.kernel_width is not None and kw not in self.kernel_width:
                return f"kernel width {kw} outside {self.kernel_width} ({f}.kernel_width)"
            if self.kernel_area is not None and kh * kw not in self.kernel_area:
                return f"kernel area {kh * kw} outside {self.kernel_area} ({f}.kernel_area)"
            if (padding == "SAME" and self.same_padding_kernel is not None
                    and (kh not in self.same_padding_kernel or kw not in self.same_padding_kernel)):
                return (f"kernel {kh}x{kw} with SAME padding outside {self.same_padding_kernel} "
                        f"({f}.same_padding_kernel)")
        if stride is not None and self.stride is not None:
            bad = [s for s in stride if s not in self.stride]
            large_ok = (self.large_stride_needs_valid and dil == (1, 1) and padding == "VALID"
                        and all(s >= self.stride.min for s in stride))
            if bad and not large_ok:
                extra = (", above the maximum only with dilation 1 and VALID padding"
                         if self.large_stride_needs_valid else "")
                return f"stride {list(stride)} outside {self.stride}{extra} ({f}.stride)"
        if pads is not None and self.padding is not None:
            if any(p > m for p, m in zip(pads, self.padding)):
                return (f"padding {list(pads)} exceeds (top, left, bottom, right) "
                        f"{list(self.padding)} ({f}.padding)")
        if groups is not None and self.groups is not None and groups not in self.groups:
            return f"groups {groups} outside {self.groups} ({f}.groups)"
        if (depth_multiplier is not None and self.depth_multiplier is not None
                and depth_multiplier not in self.depth_multiplier):
            return (f"depth multiplier {depth_multiplier} outside {self.depth_multiplier} "
                    f"({f}.depth_multiplier)")
        if self.channel_multiple > 1:
            for c in channels:
                if c % self.channel_multiple:
                    return (f"{c} channels not a multiple of {self.channel_multiple} "
                            f"({f}.channel_multiple)")
        if (weight_abs_sum is not None and self.weight_abs_sum_max is not None
                and weight_abs_sum > self.weight_abs_sum_max):
            return (f"sum |w| of an output channel {weight_abs_sum} > {self.weight_abs_sum_max} "
                    f"({f}.weight_abs_sum_max)")
        if (bias_max_abs is not None and self.bias_bits is not None
                and bias_max_abs >= 1 << (self.bias_bits - 1)):
            return f"bias {bias_max_abs} needs more than {self.bias_bits} bits ({f}.bias_bits)"
        if (reduced_axis is not None and self.reduced_axis_max is not None
                and reduced_axis > self.reduced_axis_max):
            return f"{reduced_axis} input features > {self.reduced_axis_max} ({f}.reduced_axis_max)"
        if self.ifm_area_max is not None and shapes and len(shapes[0]) == 4:
            area = shapes[0][1] * shapes[0][2]
            if area > self.ifm_area_max:
                return f"input H*W {area} > {self.ifm_area_max} ({f}.ifm_area_max)"
        return None


@dataclasses.dataclass(frozen=True)
class Quantization:
    """What the NPU computes with: int8 activations per tensor, weights, bias width."""

    activation_dtype: str = "int8"
    activation_zero_point: str = "any"  # "any" (asymmetric) | "zero" (symmetric only)
    weight_dtype: str = "int8"
    weight_granularity: str = "per-channel"  # "per-channel" | "per-tensor"
    weight_symmetric: bool = True
    bias_dtype: str = "int32"
    bias_bits: int = 32


@dataclasses.dataclass(frozen=True)
class Pattern:
    """A fused region root: ``root`` plus optional bias and a trailing activation."""

    name: str
    root: str
    fuse: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Memory:
    sram_bytes: int  # the SRAM arena the NPU compiler may use
    clock_hz: int
    internal_buffer_bytes: int | None = None  # on-NPU buffer (Ethos-U SHRAM)


@dataclasses.dataclass(frozen=True)
class VelaConfig:
    accelerator: str  # Vela --accelerator-config
    system_config: str
    memory_mode: str


@dataclasses.dataclass(frozen=True)
class NpuDescription:
    name: str
    codegen: str
    memory: Memory
    quantization: Quantization
    ops: Mapping[str, OpSpec]
    patterns: tuple[Pattern, ...] = ()
    vela: VelaConfig | None = None
    summary: str = ""
    source: str = ""
    path: str = ""

    def op(self, name: str) -> OpSpec | None:
        return self.ops.get(name)


# loading ------------------------------------------------------------------------------------
_RANGE_KEYS = ("kernel_height", "kernel_width", "kernel_area", "same_padding_kernel", "stride",
               "dilation", "groups", "depth_multiplier", "dim", "batch")
_INT_KEYS = ("channel_multiple", "max_rank", "weight_abs_sum_max", "bias_bits",
             "reduced_axis_max", "ifm_area_max")
_BOOL_KEYS = ("large_stride_needs_valid", "same_quantization")
_OP_KEYS = {"tflite", "dtypes", "padding", *_RANGE_KEYS, *_INT_KEYS, *_BOOL_KEYS}
_FLOORS = {"kernel_height": 1, "kernel_width": 1, "kernel_area": 1, "same_padding_kernel": 1,
           "stride": 1, "dilation": 1, "groups": 1, "depth_multiplier": 1, "dim": 1, "batch": 1,
           "channel_multiple": 1, "max_rank": 1, "weight_abs_sum_max": 1, "bias_bits": 8,
           "reduced_axis_max": 1, "ifm_area_max": 1}


class _Loader:
    """Walks yaml's node tree (which keeps line marks) and builds the dataclasses."""

    def __init__(self, file: str, text: str):
        import yaml

        self.file = file
        self.constructor = yaml.SafeLoader("")
        self.key_of: dict[int, Any] = {}  # id(value node) -> its key node, for line numbers
        try:
            self.root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = mark.line + 1 if mark else 1
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise NpuDescriptionError(file, line, "<yaml>", f"not valid YAML: {problem}") from None
        if self.root is None:
            raise NpuDescriptionError(file, 1, "<root>", "empty description")

    def fail(self, node, field: str, problem: str):
        raise NpuDescriptionError(self.file, node.start_mark.line + 1, field, problem)

    def mapping(self, node, field: str, required: Sequence[str], optional: Sequence[str],
                keys_free: bool = False) -> dict[str, Any]:
        import yaml

        if not isinstance(node, yaml.MappingNode):
            self.fail(node, field, "expected a mapping")
        out = {}
        allowed = set(required) | set(optional)
        for k, v in node.value:
            key = self.scalar(k, field)
            where = f"{field}.{key}" if field else str(key)
            if key in out:
                self.fail(k, where, "given twice")
            if not keys_free and key not in allowed:
                close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                self.fail(k, where, f"unknown key{hint} (allowed: {', '.join(sorted(allowed))})")
            out[key] = v
            self.key_of[id(v)] = k
        for r in required:
            if r not in out:  # reported at the line of the mapping's own key
                self.fail(self.key_of.get(id(node), node), f"{field}.{r}" if field else r,
                          "missing required field")
        return out

    def scalar(self, node, field: str):
        import yaml

        if not isinstance(node, yaml.ScalarNode):
            self.fail(node, field, "expected a single value")
        return self.constructor.construct_object(node, deep=True)

    def typed(self, node, field: str, kind, floor: int | None = None):
        v = self.scalar(node, field)
        if kind is int and (isinstance(v, bool) or not isinstance(v, int)):
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            else:
                self.fail(node, field, f"expected an integer, got {v!r}")
        if kind is str and not isinstance(v, str):
            self.fail(node, field, f"expected a string, got {v!r}")
        if kind is bool and not isinstance(v, bool):
            self.fail(node, field, f"expected true or false, got {v!r}")
        if floor is not None and v < floor:
            self.fail(node, field, f"{v} is below the minimum {floor}")
        return v

    def choice(self, node, field: str, choices: Sequence[str]) -> str:
        v = self.typed(node, field, str)
        if v not in choices:
            close = difflib.get_close_matches(v, choices, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            self.fail(node, field, f"unknown value '{v}': {hint}(one of {', '.join(choices)})")
        return v

    def seq(self, node, field: str) -> list:
        import yaml

        if not isinstance(node, yaml.SequenceNode):
            self.fail(node, field, "expected a list")
        return list(node.value)

    def range(self, node, field: str, floor: int) -> Range:
        import yaml

        if isinstance(node, yaml.ScalarNode):  # a single value: min = max
            v = self.typed(node, field, int, floor)
            return Range(v, v)
        items = self.seq(node, field)
        if len(items) != 2:
            self.fail(node, field, f"expected [min, max], got {len(items)} values")
        lo, hi = (self.typed(i, field, int, floor) for i in items)
        if lo > hi:
            self.fail(node, field, f"contradictory range: min {lo} > max {hi}")
        return Range(lo, hi)

    # sections ----------------------------------------------------------------------------
    def op(self, name_node, node) -> OpSpec:
        name = self.scalar(name_node, "ops")
        field = f"ops.{name}"
        if name not in KNOWN_OPS:
            close = difflib.get_close_matches(str(name), sorted(KNOWN_OPS), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            self.fail(name_node, field, f"unknown op '{name}': {hint}(known: "
                      f"{', '.join(sorted(KNOWN_OPS))})")
        m = self.mapping(node, field, (), sorted(_OP_KEYS)) if node.value else {}
        kw: dict[str, Any] = {"name": name}
        if "tflite" in m:
            kw["tflite"] = self.typed(m["tflite"], f"{field}.tflite", str)
        if "dtypes" in m:
            kw["dtypes"] = tuple(self.choice(d, f"{field}.dtypes", DTYPES)
                                 for d in self.seq(m["dtypes"], f"{field}.dtypes"))
        if "padding" in m:
            pads = self.seq(m["padding"], f"{field}.padding")
            if len(pads) != 4:
                self.fail(m["padding"], f"{field}.padding",
                          "expected [top, left, bottom, right]")
            kw["padding"] = tuple(self.typed(p, f"{field}.padding", int, 0) for p in pads)
        for k in _RANGE_KEYS:
            if k in m:
                kw[k] = self.range(m[k], f"{field}.{k}", _FLOORS[k])
        for k in _INT_KEYS:
            if k in m:
                kw[k] = self.typed(m[k], f"{field}.{k}", int, _FLOORS[k])
        for k in _BOOL_KEYS:
            if k in m:
                kw[k] = self.typed(m[k], f"{field}.{k}", bool)
        spec = OpSpec(**kw)
        # cross-field contradictions
        if spec.large_stride_needs_valid and spec.stride is None:
            self.fail(m["large_stride_needs_valid"], f"{field}.large_stride_needs_valid",
                      "needs a stride range to exceed")
        kh, kw_, ka = spec.kernel_height, spec.kernel_width, spec.kernel_area
        if kh and kw_ and ka and kh.min * kw_.min > ka.max:
            self.fail(m["kernel_area"], f"{field}.kernel_area",
                      f"contradicts kernel_height/kernel_width: smallest kernel "
                      f"{kh.min}x{kw_.min} > kernel_area max {ka.max}")
        if spec.same_padding_kernel and kh and spec.same_padding_kernel.min > kh.max:
            self.fail(m["same_padding_kernel"], f"{field}.same_padding_kernel",
                      f"min {spec.same_padding_kernel.min} > kernel_height max {kh.max}")
        return spec

    def description(self, path: str) -> NpuDescription:
        top = self.mapping(self.root, "", ("name", "codegen", "memory", "quantization", "ops"),
                           ("summary", "source", "patterns", "vela"))
        name = self.typed(top["name"], "name", str)
        codegen = self.choice(top["codegen"], "codegen", CODEGENS)

        mm = self.mapping(top["memory"], "memory", ("sram_bytes", "clock_hz"),
                          ("internal_buffer_bytes",))
        memory = Memory(self.typed(mm["sram_bytes"], "memory.sram_bytes", int, 1),
                        self.typed(mm["clock_hz"], "memory.clock_hz", int, 1),
                        self.typed(mm["internal_buffer_bytes"], "memory.internal_buffer_bytes",
                                   int, 1) if "internal_buffer_bytes" in mm else None)

        q = self.mapping(top["quantization"], "quantization", ("activations", "weights", "bias"),
                         ())
        qa = self.mapping(q["activations"], "quantization.activations",
                          ("dtype", "granularity", "zero_point"), ())
        qw = self.mapping(q["weights"], "quantization.weights",
                          ("dtype", "granularity", "symmetric"), ())
        qb = self.mapping(q["bias"], "quantization.bias", ("dtype", "bits"), ())
        self.choice(qa["granularity"], "quantization.activations.granularity", ("per-tensor",))
        quant = Quantization(
            activation_dtype=self.choice(qa["dtype"], "quantization.activations.dtype", DTYPES),
            activation_zero_point=self.choice(qa["zero_point"],
                                              "quantization.activations.zero_point",
                                              ("any", "zero")),
            weight_dtype=self.choice(qw["dtype"], "quantization.weights.dtype", ("int8",)),
            weight_granularity=self.choice(qw["granularity"], "quantization.weights.granularity",
                                           ("per-channel", "per-tensor")),
            weight_symmetric=self.typed(qw["symmetric"], "quantization.weights.symmetric", bool),
            bias_dtype=self.choice(qb["dtype"], "quantization.bias.dtype", ("int32", "int64")),
            bias_bits=self.typed(qb["bits"], "quantization.bias.bits", int, 8))
        container = 32 if quant.bias_dtype == "int32" else 64
        if quant.bias_bits > container:
            self.fail(qb["bits"], "quantization.bias.bits", f"contradicts bias dtype "
                      f"{quant.bias_dtype}: {quant.bias_bits} bits do not fit in {container}")

        ops_node = top["ops"]
        self.mapping(ops_node, "ops", (), (), keys_free=True)
        ops = {}
        for k, v in ops_node.value:
            spec = self.op(k, v)
            if spec.name in ops:
                self.fail(k, f"ops.{spec.name}", "given twice")
            if quant.activation_dtype not in spec.dtypes:
                self.fail(v, f"ops.{spec.name}.dtypes",
                          f"contradicts quantization.activations.dtype "
                          f"{quant.activation_dtype}: not in {list(spec.dtypes)}")
            if codegen == "vela" and spec.tflite is None:
                self.fail(k, f"ops.{spec.name}.tflite", "missing (codegen vela compiles TFLite "
                          "builtins; name the one this op is written as)")
            ops[spec.name] = spec
        if not ops:
            self.fail(ops_node, "ops", "no supported ops")

        patterns = []
        if "patterns" in top:
            for i, pn in enumerate(self.seq(top["patterns"], "patterns")):
                f = f"patterns[{i}]"
                pm = self.mapping(pn, f, ("name", "root"), ("fuse",))
                root = self.typed(pm["root"], f"{f}.root", str)
                if root not in ops:
                    self.fail(pm["root"], f"{f}.root", f"op '{root}' is not in ops")
                fuse = []
                for fn in self.seq(pm["fuse"], f"{f}.fuse") if "fuse" in pm else ():
                    item = self.typed(fn, f"{f}.fuse", str)
                    if item != "bias" and (item not in ops or ops[item].kind != "activation"):
                        self.fail(fn, f"{f}.fuse", f"'{item}' is neither 'bias' nor an "
                                  "activation op in ops")
                    if item == "bias" and ops[root].kind != "mac":
                        self.fail(fn, f"{f}.fuse", f"root '{root}' has no bias to fuse")
                    fuse.append(item)
                patterns.append(Pattern(self.typed(pm["name"], f"{f}.name", str), root,
                                        tuple(fuse)))

        vela = None
        if codegen == "vela":
            if "vela" not in top:
                self.fail(self.root, "vela", "missing required field (codegen is vela)")
            vm = self.mapping(top["vela"], "vela",
                              ("accelerator", "system_config", "memory_mode"), ())
            vela = VelaConfig(self.choice(vm["accelerator"], "vela.accelerator",
                                          VELA_ACCELERATORS),
                              self.typed(vm["system_config"], "vela.system_config", str),
                              self.typed(vm["memory_mode"], "vela.memory_mode", str))
        elif "vela" in top:
            self.fail(top["vela"], "vela", f"given but codegen is '{codegen}'")

        return NpuDescription(
            name=name, codegen=codegen, memory=memory, quantization=quant, ops=ops,
            patterns=tuple(patterns), vela=vela,
            summary=self.typed(top["summary"], "summary", str) if "summary" in top else "",
            source=self.typed(top["source"], "source", str) if "source" in top else "",
            path=path)


def load_description_file(path: str | os.PathLike) -> NpuDescription:
    """Load and validate one description file; errors are ``NpuDescriptionError``."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise NpuDescriptionError(path, 0, "<file>", f"cannot read: {e.strerror}") from None
    return _Loader(os.path.basename(path), text).description(path)


def _devices_dir():
    from importlib.resources import files

    return files("edgecc.targets.npu") / "devices"


def list_devices() -> list[str]:
    """Names of the shipped NPU descriptions."""
    return sorted(p.name[:-5] for p in _devices_dir().iterdir() if p.name.endswith(".yaml"))


def load_device(name_or_path: str | os.PathLike) -> NpuDescription:
    """A shipped device by name (``ethos-u55-128``) or a user's description file by path."""
    s = os.fspath(name_or_path)
    if s.endswith((".yaml", ".yml")) or os.sep in s or os.path.exists(s):
        return load_description_file(s)
    known = list_devices()
    if s not in known:
        raise UnknownNameError("NPU device", s, known)
    with _as_file(_devices_dir() / f"{s}.yaml") as p:
        return load_description_file(p)


def _as_file(resource):
    from importlib.resources import as_file

    return as_file(resource)
