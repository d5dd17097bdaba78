"""ggml's legacy 32-element weight blocks, packed from and unpacked to integer codes.

These are the GGUF types edgecc's quantization maps onto exactly (``x`` is one weight;
``d``, ``m`` are little-endian fp16; rows are split into blocks of 32 along the input
dimension, which is GGUF's ``ne0``)::

    Q8_0  34 bytes: d, int8 q[32]               x = d * q
    Q5_0  22 bytes: d, uint32 qh, uint8 qs[16]  x = d * (q - 16), q = nib | bit << 4
    Q4_0  18 bytes: d, uint8 qs[16]             x = d * (nib - 8)
    Q4_1  20 bytes: d, m, uint8 qs[16]          x = d * nib + m

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
