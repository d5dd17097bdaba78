"""x86 int8 activations handed between stride-1 convolutions in the consumer's padded
channel-quad layout (``c4``), so the consumer's ``conv_direct4`` reads its panels in place.

Every stride-1 3x3 ``conv_direct4`` band first copies its input rows (int8 NCHW, written by
the previous conv's requantized write-back) into ``[C/4][hp][wp][4]`` bytes of x + 128 with
the zero point in the borders (``x86_int8_direct_source``: direct4_pad / pad_rows_c4v):
~7% of ResNet-20's 1-thread conv work. Here the PRODUCER's int8 write-back (``tile_write`` /
``tile_post``, ``x86_int8_tile_source.c4_store8``: 8 channels x 16 pixels a tile, two channel
quads interleaved by byte / word unpacks) stores its int8 output in that layout directly,
borders (the consumer's zero point + 128) written by the producer each call (Relax's memory
planner reuses buffers), and the consumer reads it with no copy::

    Before: y = qconv(x, ...)            (1, C, H, W) int8     # tiles -> NCHW
            z = qconv(y, ...)            pad_rows_c4v(y) -> its bands' copies -> tiles
    After:  y4 = qconv(x, ..., meta[25..28])  (C/4, H+2p, W+2p, 4) int8 (x + 128)
            z = qconv(y4, ..., meta[24])      tiles read y4 in place

The same bytes reach the same tiles (the copy's bytes, written by the producer instead), so
the outputs are bit-identical. Where (``plan_output``, from ``integer_lowering._x86_conv``
before a conv is emitted): a stride-1 groups-1 conv of one batch item whose int8 output (its
``quantize``: requantized, or a fused write-back's int8) is read only by stride-1 groups-1
padded convolutions of the same padding whose input channels are quads (tap-major rows) and
whose output rows are whole 16-pixel panels (or 8 columns, an even number of rows): the
conv_direct4 path. The int8 value other lowerings see is ``nchw_view`` of the c4 tensor (Relax
ops: permute, reshape, slice, xor 0x80) — a consumer lowered by ``x86_int8.emit_conv`` takes
the c4 tensor itself (``source``) and the view stays unused (dead-code elimination drops it);
any other consumer reads the view: correct either way. ResNet-20: the stem, every stride-1
conv1 and the conv2s whose int8 goes to a stride-1 conv1 (the stride-2 pair's input stays NCHW).

The C side (``x86_int8_direct_source``): meta[24] 1 = x is c4, meta[25] 1 = the int8 output
is c4 with the consumer's padding meta[26] / meta[27] and zero point meta[28]. Where the fast
path does not apply at run time (no AVX-512 VNNI, a knob off, tiles not written by tile_write /
tile_post) the call runs on NCHW copies (``c4_fallback``): the same values.
``edgecc_x86_int8_c4`` 0 forces that fallback (A/B); ``edgecc_x86_int8_c4_in_calls`` /
``_c4_out_calls`` count the fast calls (the tests' proof it ran); the lowering's statistics
``x86_c4_out`` / ``x86_c4_inplace`` count the marked producers / consumers. ``ENABLED`` False:
no call is marked (the build-time A/B switch; the default: no gain measured).

Measured (s19, Zen 4 2-vCPU KVM, bench/x86_int8_c4.py, ResNet-20 w8a8, 14 producers / 14
in-place consumers, the two builds interleaved, the other helper's jobs on the other vCPU):
1 thread CPU time c4 / NCHW 0.978x (p10-p90 0.956-1.000, load 1.3) and 0.986x (0.920-1.056,
load 0.5); 2 threads wall 1.030x / 1.082x (p10-p90 ~0.7-1.5: not conclusive, but no run
showed a gain) — hence off. The profile moves as planned (pad_rows_c4v 5-6% of a 1-thread
run -> under 1%: the stem's input only), but the producer's c4 write-back costs most of it
back: kernel-level chains of 6 convolutions 16 @32x32 (tile_write) 1.00x, fused residual
(tile_post) 1.03-1.05x before its rows skipped the redundant int32 saturation, 0.98-1.00x
after, 64 @8x8 0.96x. Ruled out as the residual cost: the c4 stores' addresses (stores sunk
to a fixed line: the same), the in-place reads (copied to the thread's scratch first: the
same), the buffers' offsets modulo 4 KB. The first packing form (byte / word unpacks per
quad: ~2% of a run more) and the borders by two memset calls a row (~2%) were replaced.
At 2 threads a likely cost: the worker's tiles read the halo / rows the other core wrote
inside the VNNI loop, where the copy streamed them first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgecc.targets.tvm.x86_int8_direct_source import C4_IN, C4_OUT  # noqa: F401

ENABLED = False  # build-time switch: False = every int8 activation NCHW (as before)
KNOB = "edgecc_x86_int8_c4"  # C global: 0 = every marked call through c4_fallback


@dataclass(frozen=True)
class C4Out:
    """A producer's int8 output in its consumers' padded channel-quad layout."""

    ph: int  # the consumers' padding (rows, columns)
    pw: int
    zx: int  # the consumers' input zero point: the border value (before the +128 flip)


@dataclass(frozen=True)
class C4Source:
    """A c4 tensor and the NCHW int8 value it stands for."""

    tensor: Any  # Relax value, int8 (C/4, H + 2ph, W + 2pw, 4)
    view: Any  # Relax value: nchw_view of it (what other lowerings read)
    shape: tuple[int, int, int, int]  # (1, C, H, W)
    ph: int
    pw: int


def shape_c4(shape: tuple[int, ...] | list[int], ph: int, pw: int) -> list[int]:
    """The c4 tensor's shape for NCHW ``shape`` (one batch item) padded by ``ph`` / ``pw``."""
    _, c, h, w = shape
    return [c // 4, h + 2 * ph, w + 2 * pw, 4]


def direct4_output(oh: int, ow: int) -> bool:
    """conv_direct4's stride-1 panels: whole 16-pixel rows, or 8 columns and even rows."""
    return ow % 16 == 0 or (ow == 8 and oh % 2 == 0)


def plan_output(q: Any, const: Any, conv_geometry: Any, out_shape: list[int] | None
                ) -> C4Out | None:
    """The c4 form of the int8 output that fx ``quantize`` ``q`` holds (shape ``out_shape``,
    NCHW), when every reader of ``q`` is a dequantize read only by stride-1 padded
    convolutions of one padding with quad input channels and conv_direct4 outputs; else None.
    ``const``: fx node -> constant; ``conv_geometry(node, const)``: x86_int8_pair's."""
    from edgecc.quant import is_dequantize

    if not ENABLED or q is None or out_shape is None or len(out_shape) != 4 \
            or out_shape[0] != 1 or out_shape[1] % 4:
        return None
    _, c, h, w = out_shape
    pads, zxs = set(), set()
    users = list(getattr(q, "users", ()))
    if not users:
        return None
    for d in users:
        if not is_dequantize(d) or not d.users:
            return None
        zx = const(d.args[2])
        if zx is None or zx.size != 1:
            return None
        zxs.add(int(zx.reshape(-1)[0]))
        for u in d.users:
            g = conv_geometry(u, const) if u.args and u.args[0] is d else None
            if g is None:
                return None
            wshape, stride, padding, dilation, groups = g
            if groups != 1 or stride != [1, 1] or dilation != [1, 1] or wshape[1] != c \
                    or not any(padding):
                return None
            oh, ow = h + 2 * padding[0] - wshape[2] + 1, w + 2 * padding[1] - wshape[3] + 1
            if oh <= 0 or not direct4_output(oh, ow):
                return None
            pads.add(tuple(padding))
    if len(pads) != 1 or len(zxs) != 1:
        return None
    (ph, pw), = pads
    return C4Out(ph=int(ph), pw=int(pw), zx=zxs.pop())


def producer_fits(epilogue: Any, oc: int, stride: list[int], dilation: list[int],
                  groups: int, oh: int, ow: int, padding: list[int]) -> bool:
    """Whether a conv can store its int8 output as c4 on the fast path: conv_direct4 stride 1
    (padded, conv_direct4 outputs), 8-channel tiles, and a requantized write-back of the
    ``hi32`` form (tile_write) or the fused float one (tile_post)."""
    from edgecc.targets.tvm.x86_int8 import kernel_form

    return groups == 1 and stride == [1, 1] and dilation == [1, 1] and any(padding) \
        and oc % 8 == 0 and direct4_output(oh, ow) \
        and (not epilogue.requant or kernel_form(epilogue).hi32)


def nchw_view(bb: Any, tensor: Any, shape: tuple[int, int, int, int], ph: int,
              pw: int) -> Any:
    """The NCHW int8 value a c4 tensor holds, as Relax ops (for a reader that is not a c4
    consumer; unused otherwise, and then dropped by dead-code elimination)."""
    from tvm import relax

    op = relax.op
    _, c, h, w = shape
    hp, wp = h + 2 * ph, w + 2 * pw
    t = bb.emit(op.permute_dims(tensor, [0, 3, 1, 2]))
    t = bb.emit(op.reshape(t, [1, c, hp, wp]))
    t = bb.emit(op.strided_slice(t, [2, 3], [ph, pw], [ph + h, pw + w]))
    return bb.emit(op.bitwise_xor(t, relax.const(np.int8(-128), "int8")))


def source(registry: list[C4Source], x: Any) -> C4Source | None:
    """The c4 tensor whose NCHW view is ``x`` (``registry``: the lowering's), else None."""
    for s in registry:
        if s.view.same_as(x):
            return s
    return None


def output_for(node: Any, q: Any, epilogue: Any, stride: list[int], padding: list[int],
               dilation: list[int], groups: int, const: Any) -> C4Out | None:
    """``integer_lowering``'s question before emitting fx conv ``node`` whose int8 output is
    the fx ``quantize`` ``q`` (None: no int8 output): its ``C4Out``, or None (NCHW)."""
    from edgecc.targets.tvm.x86_int8_pair import _conv_geometry

    val = getattr(node, "meta", {}).get("val")
    if q is None or val is None:
        return None
    shape = [int(d) for d in val.shape]
    out = plan_output(q, const, _conv_geometry, shape)
    if out is None or not producer_fits(epilogue, shape[1], stride, dilation, groups,
                                        shape[2], shape[3], padding):
        return None
    return out


def emitted(bb: Any, registry: list[C4Source], stats: dict[str, int], outs: list[Any],
            node: Any, c4_in: C4Source | None = None, c4_out: C4Out | None = None) -> list[Any]:
    """After fx conv ``node``'s call (``outs``: its outputs, the int8 one last) was emitted
    with ``c4_in`` / ``c4_out``: counted in ``stats``; a c4 output entered in ``registry``
    with its NCHW view, which replaces it in the list returned (the value the lowering's
    other readers see)."""
    if c4_in is not None:
        stats["x86_c4_inplace"] = stats.get("x86_c4_inplace", 0) + 1
    if c4_out is None:
        return outs
    shape = tuple(int(d) for d in node.meta["val"].shape)
    view = nchw_view(bb, outs[-1], shape, c4_out.ph, c4_out.pw)
    registry.append(C4Source(outs[-1], view, shape, c4_out.ph, c4_out.pw))
    stats["x86_c4_out"] = stats.get("x86_c4_out", 0) + 1
    return [*outs[:-1], view]
