"""x86 weight-only kernels: a linear whose weight is ``edgecc.dequantize`` /
``edgecc.dequantize_offset`` of a constant 4-bit or 8-bit tensor (w4a16, w8a16, GGUF
Q4_0 / Q4_1 / Q8_0 imports) becomes one call to a C++ kernel that reads the packed codes
and dequantizes them in registers (``x86_wonly_source``), instead of float32 weights folded
at compile time.

Before (what the host build did: TVM folds the dequantize of a constant)::

    %w = edgecc.dequantize(@q:uint8[N, K/2], @s[N, K/G], @z[N, K/G], 1, G, 'int4', f32)
    %y = aten.linear(%x, %w, @b)            ->  matmul(x, W_f32ᵀ): 4·N·K bytes read

After::

    %y = call_dps_packed("edgecc_x86_wlinear", x, @codes, @s, @z, @o, @b, @meta)
                                            ->  N·K/2 + 4·N·K/G (+ zero / offset) bytes

Formats: ``int4`` / ``uint4`` / ``int8`` / ``uint8`` codes, per-tensor, per output channel
or in groups along the input dimension (any group size; a last partial group is fine),
any zero point, an optional float offset per group (``dequantize_offset``: ggml's Q4_1 and
Q4_K grids). Anything else returns a reason and stays a float linear.

Numerics: each weight is computed exactly as ``edgecc.dequantize(_offset)`` computes it
(bit-identical), so the output differs from ``x @ dequant(W).T + b`` only by float32
summation order: ``|y - ref| <= ERROR_BOUND(K) · (|x| @ |W|ᵀ + |b|)`` (``error_bound``).

Activations (what "a16" means here): float32 on every CPU, except the prefill (more than 4
rows) of weights edgecc's Quantize pass wrote (``emit_linear(bf16_activations=True)``,
``edgecc.quant.quantized_by_edgecc``) on a CPU with AVX512_BF16 (AMD Zen 4+,
Intel Cooper Lake / Sapphire Rapids+): there x is rounded to bfloat16 (round to nearest even) once per
call and ``vdpbf16ps`` multiplies it with the exact bf16 q - z, summing in float32 (as
torchao's int4 weight-only runs bfloat16 activations; llama.cpp's Q4 rounds them to 8 bits).
``vdpbf16ps`` does 32 multiply-adds an instruction at an FMA's rate on Zen 4 (measured: 58.6
vs 29.3 GMAC/s, 12 independent zmm chains), so the prefill GEMMs run at 2x the float32
kernel's speed. Its error is ``bf16_error_bound`` (2^-8 relative per x, plus float32
summation); on MiniLM's linears max|bf16 - float32 path| / max|ref| = 1.4-1.8e-3 and the
held-out embedding cosine is 0.98437 vs 0.98438. Imported quantized weights (GGUF, ONNX)
keep float32 activations: their builds are verified against the imported model at float32
tolerance. ``edgecc_x86_wonly_bf16 = 0`` (a weak global, at run time) turns the path off;
``edgecc_x86_wonly_bf16_calls`` counts the calls that took it; ``isa="avx512bf16"`` pins it.

On CPUs with AMX-BF16 (Intel Sapphire Rapids+; the OS granting the tile state) the same
builds' prefill (16+ rows, K a multiple of 32) runs on AMX tiles instead: each weight is
dequantized in float32 as above and split into two bfloat16s, hi = bf16(w) and
lo = bf16(w - hi) (|hi + lo - w| <= 2^-16 |w|, so x's rounding stays the only bf16 error
that counts), and ``tdpbf16ps`` multiplies the bf16 x with both into float32 tiles. Its error
is ``amx_error_bound``. Why: on an Intel Xeon (two 512-bit FMA ports) ``vdpbf16ps`` is no
faster than the float32 FMAs, and MiniLM w4a16 read 1.6-1.7x of fp32 on that path; on the
tiles 0.62x (``bench/x86_wonly.py``, 2 threads, s25). ``edgecc_x86_wonly_amx = 0`` turns
the tiles off (the vdpbf16ps path runs), ``edgecc_x86_wonly_amx_calls`` counts the calls that
took them, ``isa="amx"`` pins them (else as ``avx512bf16``).
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgecc.targets.tvm.x86_wonly_source import SOURCE, SYMBOLS

LINEAR = SYMBOLS[0]
CACHE = "x86_wonly"
PANEL = 32  # output channels per panel (the kernel's layout)
ISAS = {"auto": 0, "scalar": 1, "avx2": 2, "avx512": 3, "avx512bf16": 4, "amx": 5}


def supported() -> bool:
    """Whether this machine is x86-64 (the kernel picks AVX-512 / AVX2 / plain C at run
    time, so the library runs on any x86-64 CPU)."""
    return platform.machine().lower() in ("x86_64", "amd64")


def error_bound(k: int) -> float:
    """The factor of ``|x| @ |W|ᵀ + |b|`` that bounds ``|y - ref|``: both the kernel and a
    float32 reference sum K products and a bias in some order, each within γ_{K+1} of the
    exact sum (Higham, Accuracy and Stability, 3.1), so they differ by at most 2 γ_{K+1}."""
    u = 2.0 ** -24
    n = k + 1
    return 2 * n * u / (1 - n * u)


# unit roundoff of bfloat16's 8-bit significand (round to nearest even): 2^-8 (x = 1 + 2^-8
# rounds to 1; before s25 this read 2^-9, which understated bf16_error_bound by up to half)
BF16_U = 2.0 ** -8


def bf16_error_bound(k: int, groups: int) -> float:
    """The factor of ``|x| @ |W|ᵀ + |b|`` that bounds ``|y - ref|`` on the bf16 prefill:
    each x becomes x(1 + δ), |δ| <= 2^-8 (bfloat16, RNE); the products with the exact
    q - z are exact in float32 and each reaches y through at most K + 2·groups + 1 float32
    roundings (pair and group sums, the group scale, the sum of groups, the bias), so
    |y - ref| <= (2^-8 + (1 + 2^-8) · 2 γ_{K+2G+1}) (|x| @ |W|ᵀ + |b|). (x under 2^-126
    in magnitude reads as 0 in vdpbf16ps: an absolute error below float32's resolution of
    any sum with a normal term.)"""
    return BF16_U + (1 + BF16_U) * error_bound(k + 2 * groups)


SPLIT_U = 2.0 ** -16  # |hi + lo - w| <= 2^-16 |w| for the AMX path's two-bf16 weights


def amx_error_bound(k: int) -> float:
    """The factor of ``|x| @ |W|ᵀ + |b|`` that bounds ``|y - ref|`` on the AMX-BF16
    prefill: each x becomes x(1 + δ), |δ| <= 2^-8 (bfloat16, RNE); each weight w becomes
    hi + lo = w(1 + ε), |ε| <= 2^-16 (hi = bf16(w), w - hi exact in float32, lo = its bf16);
    the 2K bf16 products are exact in float32 and ``tdpbf16ps`` sums them into float32 in an
    order and with intermediate roundings the ISA leaves open, so the 2K + 1 sums (the bias
    last) are taken within γ_{2K+1} at u = 2^-23 (any faithful rounding, truncation too);
    the float32 reference adds its own γ_{K+1} (u = 2^-24). (x or lo under 2^-126 in
    magnitude reads as 0 in the tiles: an absolute error below float32's resolution of any
    sum with a normal term.)"""
    n, u = 2 * k + 1, 2.0 ** -23
    e = (1 + BF16_U) * (1 + SPLIT_U) - 1
    return e + (1 + e) * n * u / (1 - n * u) + error_bound(k) / 2


def external_module() -> Any:
    """The kernel as a static library TVM links into the exported library (compiled once
    into ``~/.cache/edgecc/x86_wonly``, through ``x86_int8``'s machinery)."""
    from edgecc.targets.tvm import x86_int8

    return x86_int8.external_module(SOURCE, SYMBOLS, CACHE)


def shared_library() -> str:
    """The kernel as a shared library (for tests and benches that call it without a TVM
    build): linked once from the cached object."""
    import subprocess

    from edgecc.targets.tvm import x86_int8

    obj = x86_int8.compiled_object(source=SOURCE, cache=CACHE)
    path = obj[:-2] + ".so"
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}"
        subprocess.run([os.environ.get("CXX", "g++"), "-shared", obj, "-o", tmp], check=True,
                       capture_output=True)
        os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class PackedWeight:
    """A weight ``[N, K]`` in the kernel's layout (module docstring of ``x86_wonly_source``)."""

    n: int
    k: int
    group: int
    bits: int
    codes: np.ndarray  # uint8 [P, K, 16] (4-bit) / int8 [P, K, 32]
    scale: np.ndarray  # float32 or float16 (where exact) [P, K/G, 32]
    zero: np.ndarray  # int8 [P, K/G, 32], or float32 [1] (uniform)
    offset: np.ndarray | None  # float32 or float16 [P, K/G, 32]; None: no offset

    @property
    def nbytes(self) -> int:
        """Bytes the kernel reads per call (codes and group parameters)."""
        return sum(int(a.nbytes) for a in (self.codes, self.scale, self.zero,
                                           *(() if self.offset is None else (self.offset,))))

    def meta(self, m: int, has_bias: bool, isa: str = "auto",
             bf16_activations: bool = False) -> np.ndarray:
        """The kernel's int64 meta; ``bf16_activations``: with ``isa="auto"``, prefill may
        round x to bfloat16 on AVX512_BF16 CPUs (``edgecc_x86_wonly_bf16``)."""
        return np.array([m, self.k, self.n, self.group, self.bits, int(self.zero.size > 1),
                         int(self.offset is not None), int(has_bias), ISAS[isa],
                         int(self.scale.dtype == np.float16),
                         int(self.offset is not None and self.offset.dtype == np.float16),
                         int(bf16_activations)], np.int64)

    def dequantized(self) -> np.ndarray:
        """The float32 weight ``[N, K]`` the kernel computes with (for tests)."""
        p = self.codes.shape[0]
        if self.bits == 4:
            c = self.codes.astype(np.int32)
            q = np.concatenate([c & 15, c >> 4], axis=2)  # [P, K, 32]
        else:
            q = self.codes.astype(np.int32)
        q = q.transpose(0, 2, 1).reshape(p * PANEL, self.k)[: self.n].astype(np.float32)

        def full(a: np.ndarray) -> np.ndarray:
            a = a.astype(np.float32).transpose(0, 2, 1).reshape(p * PANEL, -1)[: self.n]
            return np.repeat(a, self.group, axis=1)[:, : self.k]

        z = full(self.zero) if self.zero.size > 1 else self.zero.astype(np.float32).reshape(())
        w = (q - z) * full(self.scale)
        return w + full(self.offset) if self.offset is not None else w


def _panels(a: np.ndarray, dtype: Any) -> np.ndarray:
    """``[N, X]`` -> ``[ceil(N/32), X, 32]`` zero-padded."""
    n = a.shape[0]
    p = -(-n // PANEL)
    padded = np.zeros((p * PANEL, a.shape[1]), dtype)
    padded[:n] = a
    return np.ascontiguousarray(padded.reshape(p, PANEL, -1).transpose(0, 2, 1))


def pack(q: np.ndarray, dtype: str, scale: np.ndarray, zero: np.ndarray,
         offset: np.ndarray | None, group: int) -> PackedWeight:
    """Pack integer codes ``q[N, K]`` (unpacked, ``dtype`` one of int4 / uint4 / int8 /
    uint8) with per-group parameters ``[N, ceil(K/group)]`` (``zero`` may be 0-d)."""
    n, k = q.shape
    bits = 4 if dtype in ("int4", "uint4") else 8
    # unsigned nibbles / signed bytes: shift codes and zero points alike (q - z unchanged)
    shift = {"int4": 8, "uint4": 0, "int8": 0, "uint8": -128}[dtype]
    u = q.astype(np.int32) + shift
    z = np.asarray(zero, np.float64) + shift
    if bits == 4:
        panels = _panels(u, np.uint8)  # [P, K, 32]
        codes = np.ascontiguousarray(panels[:, :, :16] | (panels[:, :, 16:] << 4))
    else:
        codes = _panels(u, np.int8)
    uniform = z.size == 1 or bool(np.all(z == z.reshape(-1)[0]))
    if not uniform and (z.min() < -128 or z.max() > 127):
        raise ValueError(f"zero points {z.min():g}..{z.max():g} do not fit the kernel's int8")
    return PackedWeight(
        n=n, k=k, group=group, bits=bits, codes=codes, scale=_params(scale),
        zero=(np.array([z.reshape(-1)[0]], np.float32) if uniform
              else _panels(np.broadcast_to(z, scale.shape).astype(np.int8), np.int8)),
        offset=None if offset is None else _params(offset))


def _params(values: np.ndarray) -> np.ndarray:
    """Scales / offsets in panels: float16 where every value is a float16 exactly (GGUF's
    fp16 d and m: half the bytes, widened exactly by the kernel), else float32."""
    v = np.asarray(values, np.float32)
    with np.errstate(over="ignore"):
        half = v.astype(np.float16)
    exact = bool(np.all(np.isfinite(half)) and np.array_equal(half.astype(np.float32), v))
    return _panels(half, np.float16) if exact else _panels(v, np.float32)


def plan(values: list[np.ndarray | None], axis: int, block: int, dtype: str
         ) -> tuple[PackedWeight | None, str]:
    """The packed weight of ``dequantize(q, scale, zero[, offset], axis, block, dtype)``
    (``values``: the constant q, scale, zero and offset, offset None for ``dequantize``)
    of a linear weight, or None and why not."""
    import torch

    from edgecc.quant import broadcast_param, qformat, stored_packed_dim, unpack_int4

    q, scale, zero, offset = values
    if dtype not in ("int4", "uint4", "int8", "uint8"):
        return None, f"weights are {dtype}"
    if q is None or scale is None or zero is None:
        return None, "weights or scales are not constants"
    fmt = qformat(dtype)
    if fmt.packed:
        dim = stored_packed_dim(q.shape, scale.shape, axis, block)
        codes = unpack_int4(torch.from_numpy(np.ascontiguousarray(q)), fmt.signed, dim).numpy()
    else:
        codes = q
    if codes.ndim != 2:
        return None, f"a {codes.ndim}-D weight"
    n, k = codes.shape
    axis %= 2
    if block > 0 and axis == 1:
        group = block
    elif scale.size == 1 or (axis == 0 and block == 0):
        group = k
    else:
        return None, f"blocks of {block} along the output axis" if block else \
            "per-input-channel scales"

    def grouped(p: np.ndarray) -> np.ndarray:
        full = broadcast_param(torch.from_numpy(np.asarray(p, np.float32)), (n, k), axis,
                               block).numpy()
        return np.broadcast_to(full, (n, k))[:, ::group]

    z = np.asarray(zero)
    zero_g = z.reshape(()) if z.size == 1 else grouped(z)
    try:
        return pack(codes, dtype, grouped(scale), zero_g,
                    None if offset is None else grouped(offset), group), ""
    except ValueError as exc:
        return None, str(exc)


def emit_linear(bb: Any, x: Any, weight: PackedWeight, bias: np.ndarray | None,
                bf16_activations: bool = False) -> Any | None:
    """``x[..., K] · dequant(W)ᵀ (+ bias)`` as one kernel call (the leading dimensions may
    be symbolic: the kernel reads the rows from ``x``); None when ``x`` is not a float32
    tensor ending in ``K``. ``bf16_activations``: the weight is edgecc's own quantization
    (its verification is the quantized one), so prefill may round x to bfloat16 on CPUs
    with AVX512_BF16 (module docstring, "Activations")."""
    from tvm import relax, tirx

    shape = getattr(x.ty, "shape", None)
    if shape is None or str(x.ty.dtype) != "float32" or not len(shape):
        return None
    dims = list(shape)
    if getattr(dims[-1], "value", None) != weight.k:
        return None
    m: Any = tirx.IntImm("int64", 1)
    for d in dims[:-1]:
        m = m * d
    static = isinstance(getattr(m, "value", None), int)
    flat = x if len(dims) == 2 else bb.emit(relax.op.reshape(x, [m, weight.k]))
    p = weight.codes.shape[0]
    b = np.zeros(p * PANEL if bias is not None else 1, np.float32)
    if bias is not None:
        b[: weight.n] = np.asarray(bias, np.float32).reshape(-1)
    offset = weight.offset if weight.offset is not None else np.zeros(1, np.float32)
    consts = [weight.codes, weight.scale, weight.zero, offset, b,
              weight.meta(int(m.value) if static else -1, bias is not None,
                          bf16_activations=bf16_activations)]
    rows = dims[0] if len(dims) == 2 else m
    out = bb.emit(relax.call_dps_packed(
        relax.ExternFunc(LINEAR), [flat, *(relax.const(c, str(c.dtype)) for c in consts)],
        relax.TensorType([rows, weight.n], "float32")))
    return out if len(dims) == 2 else bb.emit(relax.op.reshape(out, [*dims[:-1], weight.n]))
