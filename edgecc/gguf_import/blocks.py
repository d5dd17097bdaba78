"""ggml's legacy 32-element weight blocks, packed from and unpacked to integer codes.

These are the GGUF types edgecc's quantization maps onto exactly (``x`` is one weight;
``d``, ``m`` are little-endian fp16; rows are split into blocks of 32 along the input
dimension, which is GGUF's ``ne0``)::

    Q8_0  34 bytes: d, int8 q[32]               x = d * q
    Q4_0  18 bytes: d, uint8 qs[16]             x = d * (nib - 8)
    Q4_1  20 bytes: d, m, uint8 qs[16]          x = d * nib + m

A 4-bit block stores weight ``j`` in the low nibble of ``qs[j]`` and weight ``j + 16`` in
the high nibble (not ONNX's / edgecc's adjacent-pair order). Everything here is numpy on
whole ``[rows, cols]`` matrices; ``cols`` must be a multiple of 32.
"""

from __future__ import annotations

import numpy as np

BLOCK = 32
BLOCK_BYTES = {"Q8_0": 34, "Q4_0": 18, "Q4_1": 20}


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


def unpack_q4_0(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_0 bytes -> (nibbles 0..15 ``[rows, cols]``, fp16 scales)."""
    b = _raw_blocks(raw, "Q4_0")
    return _from_nibbles(b[..., 2:]), _halves(b, 0)


def unpack_q4_1(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q4_1 bytes -> (nibbles, fp16 scales, fp16 mins)."""
    b = _raw_blocks(raw, "Q4_1")
    return _from_nibbles(b[..., 4:]), _halves(b, 0), _halves(b, 2)
