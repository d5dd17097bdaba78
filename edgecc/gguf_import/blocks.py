"""ggml's legacy 32-element weight blocks, packed from and unpacked to integer codes.

These are the GGUF types edgecc's quantization maps onto exactly (``x`` is one weight;
``d``, ``m`` are little-endian fp16; rows are split into blocks of 32 along the input
dimension, which is GGUF's ``ne0``)::

    Q8_0  34 bytes: d, int8 q[32]               x = d * q
    Q5_0  22 bytes: d, uint32 qh, uint8 qs[16]  x = d * (q - 16), q = nib | bit << 4
    Q4_0  18 bytes: d, uint8 qs[16]             x = d * (nib - 8)
    Q4_1  20 bytes: d, m, uint8 qs[16]          x = d * nib + m

Q6_K (llama.cpp's 6-bit K-quant, 256 weights, 210 bytes) is here too: ``ql[128]``,
``qh[64]``, int8 ``scales[16]``, fp16 ``d``; 16 sub-blocks of 16 weights with
``x = d * scales[j] * (q - 32)``, ``q`` 6-bit. edgecc holds it as int8 codes ``q - 32``
(-32..31) in groups of 16 with float32 scales ``d * scales[j]`` (exact: an fp16 value
times an 8-bit integer). Within each 128 weights (``h``), for ``l`` in 0..31 and quarter
``k`` in 0..3 (weight ``128h + 32k + l``): the low nibble in ``ql[64h + l + 32(k % 2)]``
(bits ``4(k // 2)``), the top two bits in ``qh[32h + l]`` (bits ``2k``).

Q5_0 keeps the low 4 bits of weight ``j`` as Q4_0 does and its fifth bit in bit ``j`` of the
little-endian ``qh`` (what llama.cpp's Q4_K falls back to for rows that are not a multiple
of 256); edgecc holds it as int8 codes ``q - 16`` in -16..15 with the fp16 scale ``d``.

A 4-bit block stores weight ``j`` in the low nibble of ``qs[j]`` and weight ``j + 16`` in
the high nibble (not ONNX's / edgecc's adjacent-pair order). Everything here is numpy on
whole ``[rows, cols]`` matrices; ``cols`` must be a multiple of 32.
"""

from __future__ import annotations

import numpy as np

BLOCK = 32
BLOCK_BYTES = {"Q8_0": 34, "Q5_0": 22, "Q4_0": 18, "Q4_1": 20}
Q6_K_SUPER, Q6_K_BYTES, Q6_K_GROUP = 256, 210, 16


def _blocks(x: np.ndarray) -> np.ndarray:
    rows, cols = x.shape
    if cols % BLOCK:
        raise ValueError(f"a row of {cols} values is not a whole number of {BLOCK}-blocks")
    return x.reshape(rows, cols // BLOCK, BLOCK)


def _half_bytes(v: np.ndarray) -> np.ndarray:
    """fp16 values ``[rows, blocks]`` as their two little-endian bytes ``[rows, blocks, 2]``."""
    return np.ascontiguousarray(v.astype("<f2")).view(np.uint8).reshape(*v.shape, 2)


def _halves(raw: np.ndarray, at: int) -> np.ndarray:
    return np.ascontiguousarray(raw[..., at:at + 2]).view("<f2")[..., 0].astype(np.float16)


def _nibbles(nib: np.ndarray) -> np.ndarray:
    b = _blocks(nib.astype(np.uint8))
    return b[..., :16] | (b[..., 16:] << 4)


def _from_nibbles(qs: np.ndarray) -> np.ndarray:
    rows = qs.shape[0]
    return np.concatenate((qs & 0xF, qs >> 4), axis=-1).reshape(rows, -1)


def pack_q8_0(q: np.ndarray, d: np.ndarray) -> np.ndarray:
    """int8 codes ``[rows, cols]`` and fp16 scales ``[rows, cols/32]`` -> Q8_0 bytes."""
    body = _blocks(q.astype(np.int8)).view(np.uint8)
    return np.concatenate((_half_bytes(d), body), axis=-1).reshape(q.shape[0], -1)


def pack_q4_0(nib: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Nibbles 0..15 ``[rows, cols]`` (``x = d * (nib - 8)``) and fp16 scales -> Q4_0."""
    return np.concatenate((_half_bytes(d), _nibbles(nib)), axis=-1).reshape(nib.shape[0], -1)


def pack_q4_1(nib: np.ndarray, d: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Nibbles 0..15 (``x = d * nib + m``), fp16 scales and fp16 mins -> Q4_1."""
    return np.concatenate((_half_bytes(d), _half_bytes(m), _nibbles(nib)),
                          axis=-1).reshape(nib.shape[0], -1)


def pack_q5_0(q: np.ndarray, d: np.ndarray) -> np.ndarray:
    """5-bit values 0..31 ``[rows, cols]`` (``x = d * (q - 16)``) and fp16 scales -> Q5_0."""
    q = _blocks(q.astype(np.uint32))
    if int(q.max(initial=0)) > 31:
        raise ValueError("Q5_0 values are 5-bit (0..31)")
    qh = ((q >> 4) << np.arange(BLOCK, dtype=np.uint32)).sum(-1, dtype=np.uint32)
    qh_bytes = np.ascontiguousarray(qh.astype("<u4")).view(np.uint8).reshape(*qh.shape, 4)
    low = (q & 0xF).astype(np.uint8)
    return np.concatenate((_half_bytes(d), qh_bytes, low[..., :16] | (low[..., 16:] << 4)),
                          axis=-1).reshape(q.shape[0], -1)


def _raw_blocks(raw: np.ndarray, kind: str) -> np.ndarray:
    size = BLOCK_BYTES[kind]
    rows = raw.shape[0]
    if raw.shape[-1] % size:
        raise ValueError(f"{kind} rows of {raw.shape[-1]} bytes are not whole {size}-byte blocks")
    return raw.reshape(rows, -1, size)


def unpack_q8_0(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q8_0 bytes ``[rows, bytes]`` -> (int8 codes ``[rows, cols]``, fp16 scales)."""
    b = _raw_blocks(raw, "Q8_0")
    return np.ascontiguousarray(b[..., 2:]).view(np.int8).reshape(b.shape[0], -1), _halves(b, 0)


def unpack_q5_0(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q5_0 bytes -> (5-bit values 0..31 ``[rows, cols]``, fp16 scales)."""
    b = _raw_blocks(raw, "Q5_0")
    qh = np.ascontiguousarray(b[..., 2:6]).view("<u4")[..., 0]
    high = (qh[..., None] >> np.arange(BLOCK, dtype=np.uint32)) & 1
    low = np.concatenate((b[..., 6:] & 0xF, b[..., 6:] >> 4), axis=-1)
    q = (low | (high << 4).astype(np.uint8)).astype(np.uint8)
    return q.reshape(b.shape[0], -1), _halves(b, 0)


def unpack_q4_0(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_0 bytes -> (nibbles 0..15 ``[rows, cols]``, fp16 scales)."""
    b = _raw_blocks(raw, "Q4_0")
    return _from_nibbles(b[..., 2:]), _halves(b, 0)


def unpack_q4_1(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q4_1 bytes -> (nibbles, fp16 scales, fp16 mins)."""
    b = _raw_blocks(raw, "Q4_1")
    return _from_nibbles(b[..., 4:]), _halves(b, 0), _halves(b, 2)


def pack_q6_k(q: np.ndarray, d: np.ndarray, sc: np.ndarray) -> np.ndarray:
    """6-bit values 0..63 ``[rows, cols]`` (``x = d * sc[j] * (q - 32)``), fp16 ``d``
    ``[rows, cols/256]`` and int8 ``sc`` ``[rows, cols/256, 16]`` -> Q6_K bytes."""
    rows, cols = q.shape
    if cols % Q6_K_SUPER:
        raise ValueError(f"a row of {cols} values is not a whole number of "
                         f"{Q6_K_SUPER}-blocks")
    if int(q.max(initial=0)) > 63 or int(q.min(initial=0)) < 0:
        raise ValueError("Q6_K values are 6-bit (0..63)")
    nb = cols // Q6_K_SUPER
    v = q.astype(np.uint8).reshape(rows, nb, 2, 4, 32)  # [.., half h, quarter k, l]
    lo, hi = v & 0xF, v >> 4
    ql = np.concatenate((lo[:, :, :, 0] | (lo[:, :, :, 2] << 4),
                         lo[:, :, :, 1] | (lo[:, :, :, 3] << 4)), axis=-1)  # [.., 2, 64]
    qh = hi[:, :, :, 0] | (hi[:, :, :, 1] << 2) | (hi[:, :, :, 2] << 4) | (hi[:, :, :, 3] << 6)
    scales = np.ascontiguousarray(sc.astype(np.int8)).view(np.uint8)
    return np.concatenate((ql.reshape(rows, nb, 128), qh.reshape(rows, nb, 64), scales,
                           _half_bytes(d)), axis=-1).reshape(rows, nb * Q6_K_BYTES)


def unpack_q6_k(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q6_K bytes ``[rows, bytes]`` -> (6-bit values 0..63, fp16 ``d`` ``[rows, blocks]``,
    int8 ``sc`` ``[rows, blocks, 16]``) (the inverse of ``pack_q6_k``)."""
    rows = raw.shape[0]
    if raw.shape[-1] % Q6_K_BYTES:
        raise ValueError(f"Q6_K rows of {raw.shape[-1]} bytes are not whole "
                         f"{Q6_K_BYTES}-byte blocks")
    b = raw.reshape(rows, -1, Q6_K_BYTES)
    nb = b.shape[1]
    ql = b[..., :128].reshape(rows, nb, 2, 2, 32)  # [.., half, k % 2, l]
    qh = b[..., 128:192].reshape(rows, nb, 2, 1, 32)
    lo = np.stack((ql[:, :, :, 0] & 0xF, ql[:, :, :, 1] & 0xF, ql[:, :, :, 0] >> 4,
                   ql[:, :, :, 1] >> 4), axis=3)  # [.., half, k, l]
    hi = (qh >> (2 * np.arange(4, dtype=np.uint8))[:, None]) & 3
    q = (lo | (hi << 4)).reshape(rows, nb * Q6_K_SUPER)
    sc = np.ascontiguousarray(b[..., 192:208]).view(np.int8)
    return q, _halves(b, 208), sc


def q6_k_grid(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """float32 scales per 16 weights ``[rows, cols/16]`` as ``d * sc`` (fp16 ``d`` per 256,
    int8 ``sc``): ``(d [rows, cols/256], sc [rows, cols/256, 16])``, or None when they are
    not on Q6_K's grid. ``d`` is tried as ``±max|s| / k`` for ``k`` = 128 .. 1 (ggml's
    quantizer makes the largest sub-scale ``-128``, so ``d`` may be negative)."""
    rows, groups = scales.shape
    per = Q6_K_SUPER // Q6_K_GROUP
    if groups % per:
        return None
    s = scales.astype(np.float32).reshape(rows, groups // per, per)
    top = np.abs(s).max(-1)
    d = np.zeros_like(top)
    sc = np.zeros(s.shape, np.float32)
    todo = top > 0
    d[~todo] = 1.0  # an all-zero block: any d, codes 0
    for k in range(128, 0, -1):
        for sign in (-1.0, 1.0):
            cand = (sign * top / np.float32(k)).astype(np.float16).astype(np.float32)
            with np.errstate(divide="ignore", invalid="ignore"):
                codes = np.round(s / cand[..., None])
            ok = todo & (cand != 0) & np.all((codes >= -128) & (codes <= 127)
                                             & (cand[..., None] * codes == s), axis=-1)
            d[ok], sc[ok] = cand[ok], codes[ok]
            todo &= ~ok
        if not todo.any():
            return d.astype(np.float16), sc.astype(np.int8)
    return None
