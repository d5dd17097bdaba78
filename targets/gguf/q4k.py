"""Q4_K blocks (llama.cpp's 4-bit K-quant) for ``-t gguf``: packing, unpacking, and reading
the Q4_K grid back out of an edgecc int4 weight.

Layout of 256 weights along a row (144 bytes, 4.5 bits per weight)::

    d: fp16, dmin: fp16, scales: uint8[12], qs: uint8[128]
    x = d·sc[j]·q - dmin·m[j]     sub-block j = 0..7 of 32 weights, q in 0..15
    scales[j]   = sc[j] | (sc[j+4] >> 4) << 6          j = 0..3
    scales[j+4] = m[j]  | (m[j+4]  >> 4) << 6
    scales[j+8] = (sc[j+4] & 15) | (m[j+4] & 15) << 4
    qs[32g + l] = q[64g + l] | q[64g + 32 + l] << 4     g = 0..3 (sub-blocks 2g, 2g+1)

edgecc holds a Q4_K weight in one of two ways (``passes/quantize/q4k_grid``), both exact
in float32, so the file decodes to the program's weights bit for bit:

* symmetric int4 in groups of 32 whose scales are ``d·sc[j]``: ``q = c + 8``,
  ``dmin = 8·d``, ``m[j] = sc[j]`` (``encode_int4``);
* Q4_K's real grid, ``edgecc.dequantize_offset`` with ``q = c - zero_point`` in 0..15,
  scales ``d·sc[j]`` and offsets ``-dmin·m[j]`` (``encode_offset``).
"""

from __future__ import annotations

import numpy as np

SUPER = 256
BYTES = 144
SUB = 8


def pack_q4_k(q: np.ndarray, d: np.ndarray, dmin: np.ndarray, sc: np.ndarray, m: np.ndarray
              ) -> np.ndarray:
    """``q`` 0..15 ``[rows, cols]``, fp16 ``d`` / ``dmin`` ``[rows, cols/256]``, 6-bit ``sc`` /
    ``m`` ``[rows, cols/256, 8]`` -> Q4_K bytes ``[rows, cols/256 * 144]``."""
    rows, cols = q.shape
    if cols % SUPER:
        raise ValueError(f"a row of {cols} values is not a whole number of {SUPER}-blocks")
    nb = cols // SUPER
    sc, m = sc.astype(np.uint8), m.astype(np.uint8)
    if int(sc.max(initial=0)) > 63 or int(m.max(initial=0)) > 63:
        raise ValueError("Q4_K scale and min codes are 6-bit (0..63)")
    scales = np.empty((rows, nb, 12), np.uint8)
    scales[..., 0:4] = sc[..., :4] | ((sc[..., 4:] >> 4) << 6)
    scales[..., 4:8] = m[..., :4] | ((m[..., 4:] >> 4) << 6)
    scales[..., 8:12] = (sc[..., 4:] & 15) | ((m[..., 4:] & 15) << 4)
    sub = q.astype(np.uint8).reshape(rows, nb, 4, 2, 32)
    qs = (sub[:, :, :, 0] | (sub[:, :, :, 1] << 4)).reshape(rows, nb, 128)
    halves = np.stack([d, dmin], -1).astype("<f2").view(np.uint8).reshape(rows, nb, 4)
    return np.concatenate([halves, scales, qs], -1).reshape(rows, nb * BYTES)


def unpack_q4_k(raw: np.ndarray) -> tuple[np.ndarray, ...]:
    """Q4_K bytes ``[rows, bytes]`` -> ``(q, d, dmin, sc, m)`` (the inverse of ``pack_q4_k``)."""
    rows = raw.shape[0]
    b = raw.reshape(rows, -1, BYTES)
    nb = b.shape[1]
    dm = np.ascontiguousarray(b[..., :4]).view("<f2")
    scales = b[..., 4:16]
    sc = np.concatenate([scales[..., 0:4] & 63,
                         (scales[..., 8:12] & 15) | ((scales[..., 0:4] >> 6) << 4)], -1)
    m = np.concatenate([scales[..., 4:8] & 63,
                        (scales[..., 8:12] >> 4) | ((scales[..., 4:8] >> 6) << 4)], -1)
    qs = b[..., 16:].reshape(rows, nb, 4, 32)
    q = np.stack([qs & 15, qs >> 4], 3).reshape(rows, nb * SUPER)
    return q, dm[..., 0], dm[..., 1], sc, m


def dequantize_q4_k(raw: np.ndarray) -> np.ndarray:
    """float32 values of Q4_K bytes, computed as ggml does (``d·sc·q - dmin·m``)."""
    q, d, dmin, sc, m = unpack_q4_k(raw)
    rows, nb = d.shape
    scale = d.astype(np.float32)[..., None] * sc.astype(np.float32)
    mins = dmin.astype(np.float32)[..., None] * m.astype(np.float32)
    qb = q.reshape(rows, nb, SUB, 32).astype(np.float32)
    return (scale[..., None] * qb - mins[..., None]).reshape(rows, nb * SUPER)


def grid_of(scales: np.ndarray, lowest: int = 1) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-32 float32 scales ``[rows, cols/32]`` as ``d·sc`` (fp16 ``d`` per 256, ``sc`` in
    1..63): ``(d [rows, cols/256], sc [rows, cols/256, 8])``, or None when they are not on
    the Q4_K grid. ``d`` is taken as ``max(s) / k`` for the largest ``k <= 63`` that
    makes every scale of the block a whole multiple of an fp16 value. ``lowest=0`` (the
    mins): codes 0..63, and an all-zero block is ``d = 0``."""
    rows, groups = scales.shape
    if groups % SUB:
        return None
    s = scales.astype(np.float32).reshape(rows, groups // SUB, SUB)
    top = s.max(-1)
    d = np.zeros_like(top)
    sc = np.zeros(s.shape, np.float32)
    todo = np.ones(top.shape, bool)
    if lowest == 0:
        if s.min(initial=0.0) < 0:
            return None
        todo = top != 0  # all zero: d = 0, codes 0
    for k in range(63, 0, -1):
        if not todo.any():
            break
        cand = (top / np.float32(k)).astype(np.float16).astype(np.float32)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            codes = np.round(s / cand[..., None])
            ok = todo & (cand > 0) & np.all((codes >= lowest) & (codes <= 63)
                                            & (cand[..., None] * codes == s), axis=-1)
        d[ok], sc[ok] = cand[ok], codes[ok]
        todo &= ~ok
        if not todo.any():
            break
    return None if todo.any() else (d, sc.astype(np.uint8))


def encode_int4(centered: np.ndarray, scales: np.ndarray) -> np.ndarray | None:
    """Symmetric int4 codes ``c`` (-8..7, ``[rows, cols]``) with per-32 scales on the Q4_K
    grid -> Q4_K bytes; None when the scales are not on the grid or ``cols % 256``."""
    if centered.shape[1] % SUPER or centered.min() < -8 or centered.max() > 7:
        return None
    grid = grid_of(scales)
    if grid is None:
        return None
    d, sc = grid
    d16 = d.astype(np.float16)
    return pack_q4_k((centered + 8).astype(np.uint8), d16, (d16.astype(np.float32) * 8)
                     .astype(np.float16), sc, sc)


def encode_offset(nibbles: np.ndarray, scales: np.ndarray, offsets: np.ndarray
                  ) -> np.ndarray | None:
    """Q4_K's own grid: values ``q`` 0..15 ``[rows, cols]``, per-32 float32 ``scales``
    ``d·sc[j]`` and ``offsets`` ``-dmin·m[j]`` -> Q4_K bytes that ggml decodes to
    ``q·scale + offset`` bit for bit; None when the scales or offsets are not on the grid
    (fp16 ``d`` / ``dmin`` per 256 times 6-bit codes) or ``cols % 256``."""
    if nibbles.shape[1] % SUPER or nibbles.min() < 0 or nibbles.max() > 15:
        return None
    grid = grid_of(scales)
    mins = grid_of(-offsets.astype(np.float32), lowest=0)
    if grid is None or mins is None:
        return None
    (d, sc), (dmin, m) = grid, mins
    return pack_q4_k(nibbles.astype(np.uint8), d.astype(np.float16), dmin.astype(np.float16),
                     sc, m)
