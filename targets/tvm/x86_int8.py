"""x86 int8 kernels for the integer lowering: quantized linears and (groups = 1)
convolutions as one call each to an AVX2 GEMM with the weights packed at compile time and the
requantization (or the float epilogue) fused into its write-back (``x86_int8_source``).

Before (``integer_lowering`` with the generic GEMM; 7 kernels, int32 and int64 tensors
between them)::

    patches = permute(reshape(stack(strided_slice(pad(xq)) ...)))     # im2col
    acc = int8_gemm(patches, W)  ->  permute  ->  acc - zx·Σw
    y = astype(clip((int64(acc)·m + a) >> s, lo, hi) + zy, int8)

After (one kernel, int8 in, int8 out)::

    yq = call_dps_packed("edgecc_x86_qconv", xq, pack(W), meta, off, m, a, s, ...)

The arithmetic is the generic path's, step for step (int32 accumulator plus ``off = -zx·Σw``
[+ the int32 bias when the 64-bit one would not fit], int64 product, add, arithmetic shift,
clamp, zero point; float: ``float32(acc + off) · scale + bias`` without contraction), so
the integer outputs are identical to it — equal to the simulator except at exact ties.

A float-epilogue convolution whose output goes on through a residual ``add`` / ``relu``
and into the next layer's ``quantize`` does those in its write-back (``Post``; the
integer lowering's ``post_chain`` finds them)::

    Before: y = qconv(...) (float32);  z = relu(y + skip);  zq = quantize(z)   # 3 kernels
    After:  z, zq = qconv(..., post, skip)                                   # 1 kernel

Where the CPU has int8 dot products (AVX-512 VNNI, AVX-VNNI) the same call runs a
``vpdpbusd`` kernel instead, chosen by cpuid at run time (``ISA`` names the floor the
artifact needs, AVX2); the weights are packed for both (``with_dot_layout``) and the
outputs are bit-identical.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edgecc.targets.tvm.x86_int8_source import (  # noqa: F401 - DW_*: tests
    CONV_BANDS, CONV_ROWS, DW_BLOCKED, DW_DIRECT, DW_DIRECT_HI, DW_PERM, DW_SPLIT2, EXPORTED,
    FLIP_COPIES, HI32, HI32_YMM, ISA_QUERY, OC_MAJOR, OC_SPLIT, OFF_FOLDED, PERM_PANELS, POST16,
    POST_ROWS, REQUANT_PROBE, SOURCE, VBMI_INTERLEAVE, SYMBOLS,
)
from edgecc.targets.tvm.x86_int8_direct_source import DIRECT4, DIRECT4_S2, PAD_VBMI  # noqa: F401
from edgecc.targets.tvm.x86_int8_dwrows_source import DW_ROWS  # noqa: F401
from edgecc.targets.tvm.x86_int8_pool_source import CONV_SERIAL  # noqa: F401
from edgecc.targets.tvm.x86_int8_tile_source import (  # noqa: F401
    TILE_NAMED, TILE_POST, TILE_TIED, TILE_WRITE)
from edgecc.targets.tvm.x86_int8_quant_source import QUANTIZE, QUANTIZE_CALLS  # noqa: F401

ISA = "avx2"
LINEAR, CONV, DEPTHWISE = SYMBOLS


def supported(target: Any) -> bool:
    """Whether ``target`` (an LLVM target) is an x86 CPU with AVX2 (the kernels' floor)."""
    from tvm.target import codegen

    triple = str(target.attrs.get("mtriple", "") or codegen.llvm_get_system_triple())
    if not triple.startswith(("x86_64", "i686", "i386")):
        return False
    try:
        return bool(codegen.target_has_features("avx2", target))
    except Exception:  # noqa: BLE001 - an LLVM that cannot say: no
        return False


def external_module(source: str = SOURCE, symbols: tuple[str, ...] = EXPORTED,
                    cache: str = "x86_int8") -> Any:
    """The kernels as a module TVM links into the exported library: the object file compiled
    once per source and compiler (``compiled_object``), or — when that cannot be built —
    the C++ source, which ``export_library`` then compiles on every build. Other C++ kernel
    sets (``x86_wonly``) pass their own ``source``, ``symbols`` and ``cache`` folder."""
    import tvm

    try:
        return tvm.runtime.load_static_library(compiled_object(source=source, cache=cache),
                                               list(symbols))
    except Exception:  # noqa: BLE001 - no compiler here: TVM's own export compiles it
        return tvm.get_global_func("runtime.CSourceModuleCreate")(source, "cc", list(symbols),
                                                                  [])


def compiled_object(root: str | None = None, source: str = SOURCE,
                    cache: str = "x86_int8") -> str:
    """The kernels' object file, compiled on first use into ``~/.cache/edgecc/<cache>``
    (keyed by the source and the compiler), so a build links it instead of compiling C++."""
    import hashlib
    import os
    import subprocess
    import tempfile

    import tvm_ffi.libinfo

    cxx = os.environ.get("CXX", "g++")
    key = hashlib.sha256((source + cxx).encode()).hexdigest()[:16]
    root = root or os.path.join(os.path.expanduser("~"), ".cache", "edgecc", cache)
    path = os.path.join(root, f"kernels-{key}.o")
    if os.path.exists(path):
        return path
    os.makedirs(root, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        src, obj = os.path.join(tmp, "kernels.cc"), os.path.join(tmp, "kernels.o")
        with open(src, "w") as f:
            f.write(source)
        paths = tvm_ffi.libinfo.find_include_path()
        includes = [f"-I{p}" for p in ([paths] if isinstance(paths, str) else paths)]
        subprocess.run([cxx, "-c", "-fPIC", "-O3", "-std=c++17", *includes, src, "-o", obj],
                       check=True, capture_output=True)
        os.replace(obj, path)  # atomic: a concurrent build sees no half-written file
    return path


@dataclass(frozen=True)
class Epilogue:
    """What the write-back does per output channel (arrays of length channels)."""

    off: np.ndarray  # int32, added to the accumulator
    requant: bool
    mult: np.ndarray | None = None  # int64 (requant)
    add: np.ndarray | None = None  # int64
    shift: np.ndarray | None = None  # int64
    lo: int = 0
    hi: int = 0
    zy: int = 0
    scale: np.ndarray | None = None  # float32 (float)
    bias: np.ndarray | None = None  # float32
    hi32: bool = False  # kernel_form's: the AVX-512 write-back may take the high dwords

    def form(self) -> int:
        """meta[1] of the kernel call: 0 float, 1 requantized, 2 requantized by the
        high-dword write-back (``hi32``)."""
        return 2 if self.requant and self.hi32 else int(self.requant)

    def tensors(self, channels: int) -> list[np.ndarray]:
        one64, one32 = np.zeros(1, np.int64), np.zeros(1, np.float32)
        if self.requant:
            return [_c(self.off, np.int32, channels), _c(self.mult, np.int64, channels),
                    _c(self.add, np.int64, channels), _c(self.shift, np.int64, channels),
                    one32, one32]
        return [_c(self.off, np.int32, channels), one64, one64, one64,
                _c(self.scale, np.float32, channels), _c(self.bias, np.float32, channels)]


def kernel_form(e: Epilogue) -> Epilogue:
    """``e`` with the output zero point folded into the 64-bit add and the clamp (requantized,
    when it fits: every shift <= 54, |add + zy·2^shift| < 2^61, and [lo + zy, hi + zy] within
    int8): ``floor((p + add + zy·2^s) / 2^s) = floor((p + add) / 2^s) + zy`` exactly, so the
    outputs are the same; the kernels' AVX-512 write-back then adds no zero point
    (``requant16_sat``). When then zy is 0, the clamp lies in int8, every multiplier fits
    int32 and every shift is in [32, 62], it is marked ``hi32``: the write-back keeps only the
    high dword of the 64-bit sum and shifts it by s - 32 in int32 (``requant16_hi``;
    ``floor(floor(x / 2^32) / 2^(s-32)) = floor(x / 2^s)``, the same outputs). Otherwise
    ``e`` as it is."""
    if not e.requant or e.add is None or e.shift is None:
        return e
    if e.zy == 0:
        return _hi32(e)
    shift = np.asarray(e.shift, np.int64).reshape(-1)
    if shift.size == 0 or shift.max() > 54 or shift.min() < 0 \
            or not (-128 <= e.lo + e.zy and e.hi + e.zy <= 127):
        return e
    add = np.broadcast_to(np.asarray(e.add, np.int64).reshape(-1), shift.shape)
    folded = [int(a) + (int(e.zy) << int(s)) for a, s in zip(add, shift)]  # exact (Python)
    if any(abs(f) >= 1 << 61 for f in folded):
        return e
    return _hi32(Epilogue(off=e.off, requant=True, mult=e.mult,
                          add=np.array(folded, np.int64), shift=e.shift, lo=e.lo + e.zy,
                          hi=e.hi + e.zy, zy=0))


def _hi32(e: Epilogue) -> Epilogue:
    """``e`` marked ``hi32`` where ``requant16_hi`` is exact for it (see kernel_form)."""
    if e.hi32 or e.mult is None:
        return e
    shift = np.asarray(e.shift, np.int64).reshape(-1)
    mult = np.asarray(e.mult, np.int64).reshape(-1)
    if shift.size == 0 or mult.size == 0 or shift.min() < 32 or shift.max() > 62 \
            or mult.min() < -(1 << 31) or mult.max() >= 1 << 31 \
            or not (e.zy == 0 and -128 <= e.lo <= e.hi <= 127):
        return e
    return replace(e, hi32=True)


ACTS = {None: 0, "relu": 1, "relu6": 2}


@dataclass(frozen=True)
class Post:
    """What a convolution's float write-back also does, in place of the kernels TVM ran
    after it (the float round trip between two quantized layers)::

        v = float32(acc + off) · scale + bias        # the float epilogue, as without Post
        v = act(v)                                   # the conv's relu / relu6
        v = v + residual                             # a residual add (float32, same shape)
        v = relu(v)                                  # post_relu: the relu after the add
        out_f32 = v;  out_i8 = clamp(round(v / qs) + qz, qmin, qmax)   # either or both

    The same float32 operations in the same order as the Relax ``add`` / ``relu`` /
    ``quantize`` (divide, round half to even, add, clip), so the values are identical."""

    act: str | None = None
    residual: Any = None  # Relax value or None
    post_relu: bool = False
    float_out: bool = True
    quant: tuple[float, float, int, int] | None = None  # qs, qz, qmin, qmax

    def tensor(self) -> np.ndarray:
        qs, qz, qmin, qmax = self.quant or (1.0, 0.0, 0, 0)
        flags = (1 if self.residual is not None else 0) | (2 if self.float_out else 0) \
            | (4 if self.quant else 0)
        return np.array([flags, ACTS[self.act], int(self.post_relu), qs, qz, qmin, qmax, 0],
                        np.float32)


def _c(values: np.ndarray, dtype: Any, n: int) -> np.ndarray:
    return np.ascontiguousarray(np.broadcast_to(np.asarray(values).reshape(-1), (n,)), dtype)


def _even(k: int) -> int:
    return (k + 1) // 2 * 2


def pack_panels(w: np.ndarray) -> np.ndarray:
    """``W[N, K]`` int8 -> the panel layout ``[ceil(N/16), K/2, 16, 2]`` int16, zero-padded."""
    n, k = w.shape
    n16, kp = -(-n // 16) * 16, _even(k)
    padded = np.zeros((n16, kp), np.int16)
    padded[:n, :k] = w
    return np.ascontiguousarray(padded.reshape(n16 // 16, 16, kp // 2, 2).transpose(0, 2, 1, 3))


def pack_rows(w: np.ndarray) -> np.ndarray:
    """``W[OC, K]`` int8 -> broadcast rows ``[ceil(OC/4)·4, K even]`` int16, zero-padded."""
    n, k = w.shape
    padded = np.zeros((-(-n // 4) * 4, _even(k)), np.int16)
    padded[:n, :k] = w
    return padded


def pack_panels_dot(w: np.ndarray) -> np.ndarray:
    """``W[N, K]`` int8 -> the VNNI panel layout ``[ceil(N/16), ceil(K/4), 16, 4]`` int8."""
    n, k = w.shape
    n16, k4 = -(-n // 16) * 16, -(-k // 4) * 4
    padded = np.zeros((n16, k4), np.int8)
    padded[:n, :k] = w
    return np.ascontiguousarray(padded.reshape(n16 // 16, 16, k4 // 4, 4).transpose(0, 2, 1, 3))


def pack_rows_dot(w: np.ndarray) -> np.ndarray:
    """``W[OC, K]`` int8 -> the VNNI broadcast rows ``[ceil(OC/8)·8, ceil(K/4)·4]`` int8."""
    n, k = w.shape
    padded = np.zeros((-(-n // 8) * 8, -(-k // 4) * 4), np.int8)
    padded[:n, :k] = w
    return padded


def with_dot_layout(avx2: np.ndarray, dot: np.ndarray, w: np.ndarray) -> tuple[np.ndarray,
                                                                                 list[int]]:
    """One int16 constant holding the AVX2 layout, the VNNI layout (byte offset ``at[0]``)
    and the +128 shift's compensation ``128·Σw`` per output channel as int32 (``at[1]``,
    wrapping like the int32 accumulator), each 64-byte aligned; the kernel picks its part
    by cpuid at run time."""
    comp = (w.astype(np.int64).sum(axis=1) * 128).astype(np.uint32).view(np.int32)
    parts, at, size = [], [], 0
    for part in (avx2.view(np.uint8).reshape(-1), dot.view(np.uint8).reshape(-1),
                 comp.view(np.uint8)):
        gap = -size % 64
        parts += [np.zeros(gap, np.uint8), part]
        at.append(size + gap)
        size += gap + part.size
    blob = np.concatenate(parts + [np.zeros(-size % 64, np.uint8)])
    return blob.view(np.int16), at[1:]


def _call(bb: Any, symbol: str, x: Any, packed: np.ndarray, meta: list[int],
          epilogue: Epilogue, channels: int, out_shape: list[int],
          post: Post | None = None, q_shape: list[int] | None = None) -> Any:
    """The kernel call: one output, or with ``post`` a list (float32 if ``post.float_out``,
    then int8 if ``post.quant``); ``q_shape``: the int8 output's shape where it is not
    ``out_shape`` (x86_int8_c4)."""
    q_shape = q_shape or out_shape
    from tvm import relax

    epilogue = kernel_form(epilogue)
    meta = [meta[0], epilogue.form(), int(epilogue.lo), int(epilogue.hi), int(epilogue.zy),
            *meta[5:]]
    consts = [packed, np.array(meta, np.int64), *epilogue.tensors(channels)]
    if post is None:
        dtype = "int8" if epilogue.requant else "float32"
        return bb.emit(relax.call_dps_packed(
            relax.ExternFunc(symbol), [x, *(relax.const(c, str(c.dtype)) for c in consts)],
            relax.TensorType(q_shape if epilogue.requant else out_shape, dtype)))
    if epilogue.requant or not (post.float_out or post.quant):
        raise ValueError("a fused write-back needs the float epilogue and an output")
    args = [x, *(relax.const(c, str(c.dtype)) for c in consts),
            relax.const(post.tensor())]
    if post.residual is not None:
        args.append(post.residual)
    types = ([relax.TensorType(out_shape, "float32")] if post.float_out else []) \
        + ([relax.TensorType(q_shape, "int8")] if post.quant else [])
    if len(types) == 1:
        return [bb.emit(relax.call_dps_packed(relax.ExternFunc(symbol), args, types[0]))]
    out = bb.emit(relax.call_dps_packed(relax.ExternFunc(symbol), args, types))
    return [bb.emit(relax.TupleGetItem(out, i)) for i in range(len(types))]


def _head(epilogue: Epilogue) -> list[int]:
    return [0, int(epilogue.requant), int(epilogue.lo), int(epilogue.hi), int(epilogue.zy)]


def static_shape(x: Any) -> list[int] | None:
    dims = [getattr(d, "value", None) for d in x.ty.shape]
    return [int(d) for d in dims] if all(isinstance(d, int) for d in dims) else None


def emit_linear(bb: Any, x: Any, w: np.ndarray, epilogue: Epilogue) -> Any | None:
    """``x[..., K] · w[N, K]ᵀ`` with ``epilogue``; None when ``x``'s shape is symbolic."""
    from tvm import relax

    shape = static_shape(x)
    if shape is None:
        return None
    n, k = w.shape
    m = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    flat = bb.emit(relax.op.reshape(x, [m, k])) if len(shape) != 2 else x
    packed, at = with_dot_layout(pack_panels(w), pack_panels_dot(w), w)
    meta = _head(epilogue) + [m, k, n, *at]
    meta[0] = 1
    out = _call(bb, LINEAR, flat, packed, meta, epilogue, n, [m, n])
    return out if len(shape) == 2 else bb.emit(relax.op.reshape(out, [*shape[:-1], n]))


# 3-channel convolutions (stems) pack their VNNI rows padded to 4 channels (tap_major 2);
# False: the (c, ky, kx) rows and the im2col as before (a build-time A/B switch)
PAD_STEM = True


def emit_conv(bb: Any, x: Any, w: np.ndarray, zx: int, stride: list[int],
              padding: list[int], dilation: list[int], epilogue: Epilogue,
              post: Post | None = None, c4_in: Any = None, c4_out: Any = None) -> Any | None:
    """NCHW int8 convolution (groups 1, OIHW weights) with ``epilogue`` (and ``post``: a
    list of outputs), padding with ``zx``; None when ``x``'s shape is symbolic.
    ``x86_int8_c4``: ``c4_in`` (a ``C4Source``) reads its c4 tensor in place of ``x``;
    ``c4_out`` (a ``C4Out``) stores the int8 output in the c4 layout of that padding."""
    if c4_in is not None:
        x = c4_in.tensor
    shape = list(c4_in.shape) if c4_in is not None else static_shape(x)
    if shape is None or len(shape) != 4:
        return None
    nb, c, h, wd = shape
    oc, _, kh, kw = w.shape
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (wd + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    flat = w.reshape(oc, -1)
    # the VNNI rows tap-major (k = (ky, kx, c)) where every k quad is 4 channels of one tap:
    # the kernel's im2col follows the order (int32 sums, the same values), and stride-1 maps
    # of 16-column rows read their panels straight from a channel-quad copy (x86_int8_direct;
    # stride 2 from its column phases: 1x1 too, whose one tap makes either order the same)
    # (a 3-channel stem: the rows' channels zero-padded to 4, tap_major 2: conv_direct4 reads
    # a channel-quad copy whose 4th channel is padding, not 27 taps gathered per panel)
    tap_major = 1 if c % 4 == 0 else 2 if c == 3 and PAD_STEM else 0
    if tap_major == 2:
        w4 = np.zeros((oc, 4, kh, kw), w.dtype)
        w4[:, :c] = w
        dot = w4.transpose(0, 2, 3, 1).reshape(oc, -1)
    else:
        dot = w.transpose(0, 2, 3, 1).reshape(oc, -1) if tap_major else flat
    packed, at = with_dot_layout(pack_rows(flat), pack_rows_dot(dot), flat)
    meta = _head(epilogue) + [nb, c, h, wd, oc, kh, kw, *stride, *padding, *dilation,
                              oh, ow, zx, *at, tap_major]
    meta[0] = 2
    q_shape = None
    if c4_in is not None or c4_out is not None:  # x86_int8_c4: meta[24..28]
        meta += [int(c4_in is not None), int(c4_out is not None),
                 *((c4_out.ph, c4_out.pw, c4_out.zx) if c4_out is not None else (0, 0, 0))]
        if c4_out is not None:
            q_shape = [oc // 4, oh + 2 * c4_out.ph, ow + 2 * c4_out.pw, 4]
    return _call(bb, CONV, x, packed, meta, epilogue, oc, [nb, oc, oh, ow], post, q_shape)


def emit_depthwise(bb: Any, x: Any, w: np.ndarray, zx: int, stride: list[int],
                   padding: list[int], dilation: list[int], epilogue: Epilogue,
                   post: Post | None = None) -> Any | None:
    """NCHW int8 depthwise convolution (``w[C, 1, KH, KW]``, one output per input channel)
    with ``epilogue`` (and ``post``); None when ``x``'s shape is symbolic or not
    depthwise."""
    shape = static_shape(x)
    if shape is None or len(shape) != 4 or w.shape[0] != shape[1] or w.shape[1] != 1:
        return None
    nb, c, h, wd = shape
    _, _, kh, kw = w.shape
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (wd + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    meta = _head(epilogue) + [nb, c, h, wd, kh, kw, *stride, *padding, *dilation, oh, ow, zx]
    meta[0] = 3
    return _call(bb, DEPTHWISE, x, pack_depthwise(w), meta, epilogue, c, [nb, c, oh, ow],
                 post)


def emit_quantize(bb: Any, x: Any, quant: tuple[float, float, int, int], cols: int,
                  out_shape: list[int]) -> Any | None:
    """The per-tensor int8 ``quantize`` of float32 ``x`` (``quant``: scale, zero point, qmin,
    qmax as ``IntegerKernels.quantize_params`` gives them) in one ``edgecc_x86_quantize``
    call; ``cols`` > 1: of the mean of each ``cols`` consecutive values (a global mean over
    the trailing axes) — ``x86_int8_quant_source``. None when ``x``'s shape is symbolic."""
    from tvm import relax

    shape = static_shape(x)
    if shape is None or int(np.prod(shape)) % cols:
        return None
    rows = int(np.prod(shape)) // cols
    if int(np.prod(out_shape)) != rows:
        return None
    qs, qz, qmin, qmax = quant
    consts = [np.array([rows, cols], np.int64), np.array([qs, qz, qmin, qmax], np.float32)]
    return bb.emit(relax.call_dps_packed(
        relax.ExternFunc(QUANTIZE), [x, *(relax.const(c, str(c.dtype)) for c in consts)],
        relax.TensorType(out_shape, "int8")))


def pack_depthwise(w: np.ndarray) -> np.ndarray:
    """The depthwise kernel's weight constant (int32): the ``C·KH·KW`` taps, then per channel
    its kernel rows as 4 int8 dwords (byte j of row ky = tap (ky, j); zero where KH or KW > 4:
    those take no ``dw_direct``), then ``-128·Σw`` per channel (the +128 shift's
    compensation) — what ``dw_direct`` would otherwise build per channel on every call."""
    c, _, kh, kw = w.shape
    taps = np.ascontiguousarray(w.reshape(c, -1), np.int32)
    rows = np.zeros((c, 4, 4), np.uint8)
    if kh <= 4 and kw <= 4:
        rows[:, :kh, :kw] = w.reshape(c, kh, kw).astype(np.int8).view(np.uint8)
    comp = (-128 * taps.astype(np.int64).sum(axis=1)).astype(np.int32)
    return np.concatenate([taps.ravel(), rows.view("<i4").ravel(), comp])
