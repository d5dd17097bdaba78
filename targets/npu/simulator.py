"""Integer reference simulator of NPU regions (numpy, bit-exact with TFLite's int8 kernels).

This is the arithmetic an Ethos-U performs and what the LiteRT interpreter's reference
kernels compute: int32 accumulation of (x - x_zp) * w, int32 bias, requantization by a Q31
multiplier and shift (``quantize_multiplier``, from Vela's own ``quantise_scale``) through
``SaturatingRoundingDoublingHighMul`` and a rounding right shift, output zero point, clamp.
It differs from float quantize/dequantize rounding by up to one LSB, which is why it exists:
a region compiled for the NPU is checked against this, not against fake-quant.

Element-wise activations (LOGISTIC, TANH, GELU: LiteRT's float32 ``PopulateLookupTable``;
HARD_SWISH: TFLite's int16 fixed point; LEAKY_RELU: two requantizations) are 256-entry
tables (``lut_table``), equal to LiteRT's int8 kernels on every input code; an NPU such as
Ethos-U evaluates them as such a table too. SOFTMAX is TFLite's int8 reference arithmetic
(gemmlowp ``exp_on_negative_values`` in Q5.26, the sum in Q12.19, a Newton-Raphson
reciprocal), bit-exact with LiteRT. What Vela programs for these ops (its own table / softmax
decomposition) is not executed here: no Ethos-U or FVP exists on this machine.

``simulate(region, {name: int8 array})`` returns ``{output name: int8 array}``.

Rounding. TFLite's ``MultiplyByQuantizedMultiplier`` rounds twice (SRDHM, then a rounding
shift); Vela programs the NPU with that mode (``NpuRoundingMode.TFL``) for every int8 conv,
depthwise, fully connected and element-wise op. LiteRT 2.3's reference FULLY_CONNECTED rounds
once instead ((x * m + 2^(30 - shift)) >> (31 - shift)), measured here: 17 of 19,200 outputs of
random per-tensor FCs differ by one LSB under double rounding, none under single rounding. So
``simulate(..., fully_connected_rounding="single")`` reproduces LiteRT; the default ("double")
is what Vela asks the NPU to do.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from edgecc.targets.npu.region import LUT_KINDS, Region, RegionOp, TensorSpec, same_padding

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
INT8_MIN, INT8_MAX = -128, 127


# fixed-point primitives (gemmlowp / TFLite), vectorised over int64 arrays ------------------
def quantize_multiplier(real: float) -> tuple[int, int]:
    """A positive real scale as (Q31 multiplier, TFLite shift): real ~= m * 2^(shift - 31).

    Vela's ``quantise_scale`` gives the right shift the NPU applies (31 - shift here); a
    significand that rounds up to 2^31 is renormalised as TFLite's ``QuantizeMultiplier`` does.
    """
    from ethosu.vela.scaling import quantise_scale

    if real <= 0.0:
        return 0, 0
    multiplier, right_shift = quantise_scale(float(real))
    if multiplier == 0:
        return 0, 0
    shift = 31 - right_shift
    if multiplier == 1 << 31:
        multiplier, shift = multiplier // 2, shift + 1
    return int(multiplier), int(shift)


def _wrap_int32(x: np.ndarray) -> np.ndarray:
    return ((x.astype(np.int64) + (1 << 31)) % (1 << 32)) - (1 << 31)


def saturating_rounding_doubling_high_mul(a: np.ndarray, b: int) -> np.ndarray:
    """(a * b * 2 + 2^31) / 2^32 with C truncating division; saturates INT32_MIN * INT32_MIN."""
    a = np.asarray(a, np.int64)
    ab = a * np.int64(b)
    nudge = np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    s = ab + nudge
    high = np.where(s >= 0, s >> 31, -((-s) >> 31))  # truncating division by 2^31
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    return np.where(overflow, np.int64(INT32_MAX), high)


def rounding_divide_by_pot(x: np.ndarray, exponent: int) -> np.ndarray:
    """x / 2^exponent rounded to nearest, ties away from zero (gemmlowp RoundingDivideByPOT)."""
    x = np.asarray(x, np.int64)
    if exponent == 0:
        return x
    mask = np.int64((1 << exponent) - 1)
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0).astype(np.int64)
    return (x >> exponent) + (remainder > threshold).astype(np.int64)


def multiply_by_quantized_multiplier(x: np.ndarray, multiplier: int, shift: int) -> np.ndarray:
    """TFLite ``MultiplyByQuantizedMultiplier`` (double rounding): left shift, SRDHM, right shift."""
    left, right = max(shift, 0), max(-shift, 0)
    shifted = _wrap_int32(np.asarray(x, np.int64) << left)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, multiplier), right)


def multiply_by_quantized_multiplier_single_round(x: np.ndarray, multiplier: int,
                                                  shift: int) -> np.ndarray:
    """TFLite's single-rounding variant: (x * m + 2^(30 - shift)) >> (31 - shift)."""
    total = 31 - shift
    return (np.asarray(x, np.int64) * np.int64(multiplier) + (np.int64(1) << (total - 1))) >> total


ROUNDINGS = {"double": multiply_by_quantized_multiplier,
             "single": multiply_by_quantized_multiplier_single_round}


def requantize_per_channel(acc: np.ndarray, real_scales: np.ndarray,
                           rounding: str = "double") -> np.ndarray:
    """Requantize an int32 accumulator whose last axis is the channel axis."""
    multiply = ROUNDINGS[rounding]
    out = np.empty_like(acc, dtype=np.int64)
    for c, s in enumerate(real_scales):
        m, sh = quantize_multiplier(float(s))
        out[..., c] = multiply(acc[..., c], m, sh)
    return out


def activation_range(activation: str, scale: float, zero_point: int) -> tuple[int, int]:
    """TFLite ``CalculateActivationRangeQuantized`` for int8 (float32 division, round half away)."""
    def q(v: float) -> int:
        r = np.float32(v) / np.float32(scale)
        return zero_point + int(np.sign(r) * np.floor(np.abs(r) + np.float32(0.5)))

    lo, hi = INT8_MIN, INT8_MAX
    if activation == "RELU":
        lo = max(lo, q(0.0))
    elif activation == "RELU6":
        lo, hi = max(lo, q(0.0)), min(hi, q(6.0))
    elif activation == "RELU_N1_TO_1":
        lo, hi = max(lo, q(-1.0)), min(hi, q(1.0))
    return lo, hi


# ops ----------------------------------------------------------------------------------------
def _windows(x: np.ndarray, kernel, stride, dilation, padding, pad_value) -> tuple[np.ndarray,
                                                                                 np.ndarray]:
    """(N, OH, OW, KH, KW, C) windows of an NHWC array and a mask of in-bounds taps."""
    n, h, w, c = x.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    if padding == "SAME":
        (pt, pb), (pl, pr) = same_padding(h, kh, sh, dh), same_padding(w, kw, sw, dw)
    else:
        pt = pb = pl = pr = 0
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=pad_value)
    valid = np.pad(np.ones((h, w), bool), ((pt, pb), (pl, pr)), constant_values=False)
    eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    oh, ow = (xp.shape[1] - eh) // sh + 1, (xp.shape[2] - ew) // sw + 1
    win = np.lib.stride_tricks.sliding_window_view(xp, (eh, ew), axis=(1, 2))
    win = win[:, : (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw, :, ::dh, ::dw]
    vwin = np.lib.stride_tricks.sliding_window_view(valid, (eh, ew))
    vwin = vwin[: (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw, ::dh, ::dw]
    return win.transpose(0, 1, 2, 4, 5, 3), vwin  # win: N, OH, OW, KH, KW, C


def _finish(acc: np.ndarray, real_scales, out: TensorSpec, activation: str,
            rounding: str = "double") -> np.ndarray:
    zp = out.quant.zero_point[0]
    y = requantize_per_channel(acc, np.broadcast_to(real_scales, (acc.shape[-1],)), rounding) + zp
    lo, hi = activation_range(activation, out.quant.scale[0], zp)
    return np.clip(y, lo, hi).astype(np.int8)


def _conv_scales(x: TensorSpec, w: TensorSpec, y: TensorSpec) -> np.ndarray:
    # TFLite: double(input_scale) * double(filter_scale[c]) / double(output_scale), each a float32
    return (np.float64(np.float32(x.quant.scale[0])) * np.float32(w.quant.scale).astype(np.float64)
            / np.float64(np.float32(y.quant.scale[0])))


def conv2d(x, w, b, xs: TensorSpec, ws: TensorSpec, ys: TensorSpec, attrs) -> np.ndarray:
    xo = x.astype(np.int64) - xs.quant.zero_point[0]  # padding contributes (zp - zp) = 0
    win, _ = _windows(xo, w.shape[1:3], attrs["stride"], attrs["dilation"], attrs["padding"], 0)
    acc = np.einsum("nhwijc,oijc->nhwo", win, w.astype(np.int64), optimize=True)
    return _finish(acc + b.astype(np.int64), _conv_scales(xs, ws, ys), ys, attrs["activation"])


def depthwise_conv2d(x, w, b, xs, ws, ys, attrs) -> np.ndarray:
    m = attrs.get("depth_multiplier", 1)
    xo = x.astype(np.int64) - xs.quant.zero_point[0]
    win, _ = _windows(xo, w.shape[1:3], attrs["stride"], attrs["dilation"], attrs["padding"], 0)
    win = np.repeat(win, m, axis=-1)  # output channel c*m + j reads input channel c
    acc = np.einsum("nhwijc,ijc->nhwc", win, w[0].astype(np.int64), optimize=True)
    return _finish(acc + b.astype(np.int64), _conv_scales(xs, ws, ys), ys, attrs["activation"])


def fully_connected(x, w, b, xs, ws, ys, attrs, rounding: str = "double") -> np.ndarray:
    xo = x.reshape(-1, w.shape[1]).astype(np.int64) - xs.quant.zero_point[0]
    acc = xo @ w.astype(np.int64).T + b.astype(np.int64)
    return _finish(acc, _conv_scales(xs, ws, ys), ys, attrs["activation"], rounding)


def batch_matmul(a, b, as_: TensorSpec, bs: TensorSpec, ys: TensorSpec, attrs) -> np.ndarray:
    """TFLite int8 BATCH_MATMUL: int32 sums of (a - zp_a) * (b - zp_b) over K, requantized by
    s_a * s_b / s_y (one multiplier and shift), + zp_y, clamped."""
    acc = np.matmul(a.astype(np.int64) - as_.quant.zero_point[0],
                    b.astype(np.int64) - bs.quant.zero_point[0])
    real = (np.float64(np.float32(as_.quant.scale[0])) * np.float64(np.float32(bs.quant.scale[0]))
            / np.float64(np.float32(ys.quant.scale[0])))
    m, sh = quantize_multiplier(real)
    y = multiply_by_quantized_multiplier(acc, m, sh) + ys.quant.zero_point[0]
    lo, hi = activation_range(attrs.get("activation", "NONE"), ys.quant.scale[0],
                              ys.quant.zero_point[0])
    return np.clip(y, lo, hi).astype(np.int8)


def add(a, b, as_: TensorSpec, bs: TensorSpec, ys: TensorSpec, attrs) -> np.ndarray:
    """TFLite int8 ADD: both inputs rescaled to a common 2^20-scaled domain, summed, rescaled."""
    left_shift = 20
    sa, sb = (np.float64(np.float32(t.quant.scale[0])) for t in (as_, bs))
    sy = np.float64(np.float32(ys.quant.scale[0]))
    twice_max = 2.0 * max(sa, sb)
    ma, sha = quantize_multiplier(sa / twice_max)
    mb, shb = quantize_multiplier(sb / twice_max)
    my, shy = quantize_multiplier(twice_max / ((1 << left_shift) * sy))
    xa = (a.astype(np.int64) - as_.quant.zero_point[0]) << left_shift
    xb = (b.astype(np.int64) - bs.quant.zero_point[0]) << left_shift
    total = (multiply_by_quantized_multiplier(xa, ma, sha)
             + multiply_by_quantized_multiplier(xb, mb, shb))
    y = multiply_by_quantized_multiplier(total, my, shy) + ys.quant.zero_point[0]
    lo, hi = activation_range(attrs["activation"], ys.quant.scale[0], ys.quant.zero_point[0])
    return np.clip(y, lo, hi).astype(np.int8)


def mul(a, b, as_, bs, ys, attrs) -> np.ndarray:
    real = (np.float64(np.float32(as_.quant.scale[0])) * np.float64(np.float32(bs.quant.scale[0]))
            / np.float64(np.float32(ys.quant.scale[0])))
    m, sh = quantize_multiplier(real)
    prod = ((a.astype(np.int64) - as_.quant.zero_point[0])
            * (b.astype(np.int64) - bs.quant.zero_point[0]))
    y = multiply_by_quantized_multiplier(prod, m, sh) + ys.quant.zero_point[0]
    lo, hi = activation_range(attrs["activation"], ys.quant.scale[0], ys.quant.zero_point[0])
    return np.clip(y, lo, hi).astype(np.int8)


def requantize(x, xs: TensorSpec, ys: TensorSpec) -> np.ndarray:
    """TFLite int8 -> int8 QUANTIZE: (x - zp_x) * (s_x / s_y) by a Q31 multiplier and shift,
    + zp_y, saturated."""
    real = (np.float64(np.float32(xs.quant.scale[0]))
            / np.float64(np.float32(ys.quant.scale[0])))
    m, sh = quantize_multiplier(real)
    y = multiply_by_quantized_multiplier(x.astype(np.int64) - xs.quant.zero_point[0], m, sh)
    return np.clip(y + ys.quant.zero_point[0], INT8_MIN, INT8_MAX).astype(np.int8)


def mean_multiplier(xs: TensorSpec, ys: TensorSpec, count: int) -> tuple[int, int]:
    """TFLite's integer MEAN scaling: the (multiplier, shift) of s_x / s_y, with the division
    by ``count`` folded into the multiplier (shifted left by up to floor(log2 count) bits, then
    integer-divided), as LiteRT's reference kernel does (bit-exact: measured on 3,225 random
    outputs)."""
    real = (np.float64(np.float32(xs.quant.scale[0]))
            / np.float64(np.float32(ys.quant.scale[0])))
    m, sh = quantize_multiplier(real)
    extra = min(count.bit_length() - 1, 32, 31 + sh)
    return (m << extra) // count, sh - extra


def mean(x, xs: TensorSpec, ys: TensorSpec) -> np.ndarray:
    """TFLite int8 MEAN over H and W: sum of (x - zp_x), one requantization by
    ``mean_multiplier``, + zp_y, saturated."""
    n, h, w, c = x.shape
    acc = (x.astype(np.int64) - xs.quant.zero_point[0]).sum(axis=(1, 2))
    m, sh = mean_multiplier(xs, ys, h * w)
    y = multiply_by_quantized_multiplier(acc, m, sh) + ys.quant.zero_point[0]
    return np.clip(y, INT8_MIN, INT8_MAX).astype(np.int8).reshape(ys.shape)


def avg_pool2d(x, xs, ys, attrs) -> np.ndarray:
    """Mean of the in-bounds taps (padding excluded), rounded half away from zero."""
    win, valid = _windows(x.astype(np.int64), attrs["kernel"], attrs["stride"], (1, 1),
                          attrs["padding"], 0)
    total = win.sum(axis=(3, 4))
    count = valid.sum(axis=(2, 3))[None, :, :, None].astype(np.int64)
    half = count // 2
    num = np.where(total > 0, total + half, total - half)
    avg = np.where(num >= 0, num // count, -((-num) // count))  # C truncating division
    lo, hi = activation_range(attrs["activation"], ys.quant.scale[0], ys.quant.zero_point[0])
    return np.clip(avg, lo, hi).astype(np.int8)


def max_pool2d(x, xs, ys, attrs) -> np.ndarray:
    win, _ = _windows(x.astype(np.int64), attrs["kernel"], attrs["stride"], (1, 1),
                      attrs["padding"], np.iinfo(np.int64).min)
    lo, hi = activation_range(attrs["activation"], ys.quant.scale[0], ys.quant.zero_point[0])
    return np.clip(win.max(axis=(3, 4)), lo, hi).astype(np.int8)


# element-wise activations as 256-entry tables -----------------------------------------------
def _round_half_away(v: np.ndarray) -> np.ndarray:
    return np.sign(v) * np.floor(np.abs(v) + np.float32(0.5))


def _float_table(fn, xs: TensorSpec, ys: TensorSpec) -> np.ndarray:
    """LiteRT's ``PopulateLookupTable`` for int8: dequantize each of the 256 codes in float32,
    apply ``fn`` (float32), multiply by 1 / s_y, round half away from zero, + zp_y, clamp."""
    v = np.arange(INT8_MIN, INT8_MAX + 1, dtype=np.int64)
    deq = np.float32(xs.quant.scale[0]) * (v - xs.quant.zero_point[0]).astype(np.float32)
    with np.errstate(over="ignore"):
        t = np.asarray(fn(deq), np.float32) * (np.float32(1.0) / np.float32(ys.quant.scale[0]))
    q = _round_half_away(t).astype(np.int64) + ys.quant.zero_point[0]
    return np.clip(q, INT8_MIN, INT8_MAX).astype(np.int8)


def _erf32(v: np.ndarray) -> np.ndarray:
    import math

    return np.array([math.erf(float(e)) for e in v], np.float64).astype(np.float32)


def _gelu(v: np.ndarray, approximate: bool) -> np.ndarray:
    half, one = np.float32(0.5), np.float32(1.0)
    if approximate:  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        inner = np.float32(0.7978845608028654) * (v + np.float32(0.044715) * v * v * v)
        return half * v * (one + np.tanh(inner.astype(np.float32)))
    return half * v * (one + _erf32(v * np.float32(0.7071067811865476)))


def _srdhm16(a: np.ndarray, b: int) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul on int16."""
    ab = np.asarray(a, np.int64) * np.int64(b)
    nudge = np.where(ab >= 0, 1 << 14, 1 - (1 << 14))
    s = ab + nudge
    high = np.where(s >= 0, s >> 15, -((-s) >> 15))
    return np.where((np.asarray(a) == -32768) & (b == -32768), 32767, high)


def _sat16(v: np.ndarray) -> np.ndarray:
    return np.clip(v, -32768, 32767)


def _int16_multiplier(real: float) -> tuple[int, int]:
    """TFLite ``QuantizeMultiplier`` then ``DownScaleInt32ToInt16Multiplier``."""
    m, shift = quantize_multiplier(real)
    if m >= INT32_MAX - (1 << 15):
        return 32767, shift
    return (m + (1 << 15)) >> 16, shift


def hard_swish_table(xs: TensorSpec, ys: TensorSpec) -> np.ndarray:
    """TFLite's int8 HARD_SWISH (``reference_ops::HardSwish``): int16 fixed point, the input
    on a 2^7 finer scale, a saturating "relu-ish" factor in [0, 1] for x in [-3, 3], a
    (non-rounding) doubling high multiply, a rounding shift to the output scale."""
    hires = np.float32(np.float32(xs.quant.scale[0]) / np.float32(128.0))
    out_m, out_e = _int16_multiplier(float(np.float32(hires / np.float32(ys.quant.scale[0]))))
    relu_m, relu_e = _int16_multiplier(float(np.float32(hires / np.float32(3.0 / 32768.0))))
    v = np.arange(INT8_MIN, INT8_MAX + 1, dtype=np.int64) - xs.quant.zero_point[0]
    hi = _sat16(v * 128)
    pre_out = _srdhm16(hi, out_m)
    r = hi
    if relu_e > 0:
        r = _sat16(r << (relu_e - 1))
    r = _srdhm16(r, relu_m)
    if relu_e > 0:
        r = _sat16(r << 1)
    if relu_e < 0:
        r = rounding_divide_by_pot(r, -relu_e)
    r = (r + (1 << 15)) >> 1
    ab = r * pre_out  # SaturatingDoublingHighMul: truncating division by 2^15
    pre = np.where(ab >= 0, ab >> 15, -((-ab) >> 15))
    pre = np.where((r == -32768) & (pre_out == -32768), 32767, pre)
    out = rounding_divide_by_pot(_sat16(pre), -out_e) + ys.quant.zero_point[0]
    return np.clip(out, INT8_MIN, INT8_MAX).astype(np.int8)


def leaky_relu_table(xs: TensorSpec, ys: TensorSpec, alpha: float) -> np.ndarray:
    """TFLite's int8 LEAKY_RELU: (x - zp_x) requantized by s_x / s_y where x >= zp_x, by
    s_x * alpha / s_y below (float32 products, as LiteRT's Prepare), + zp_y, clamp; alpha
    >= 0 (``RegionBuilder.lut``)."""
    sx, sy = np.float32(xs.quant.scale[0]), np.float32(ys.quant.scale[0])
    mi, shi = quantize_multiplier(float(np.float32(sx / sy)))
    ma, sha = quantize_multiplier(float(np.float32(sx * np.float32(alpha) / sy)))
    v = np.arange(INT8_MIN, INT8_MAX + 1, dtype=np.int64) - xs.quant.zero_point[0]
    pos = multiply_by_quantized_multiplier(v, mi, shi)
    neg = multiply_by_quantized_multiplier(v, ma, sha)
    out = np.where(v >= 0, pos, neg) + ys.quant.zero_point[0]
    return np.clip(out, INT8_MIN, INT8_MAX).astype(np.int8)


def lut_table(op: RegionOp, xs: TensorSpec, ys: TensorSpec) -> np.ndarray:
    """The 256 int8 outputs of an element-wise activation op for inputs -128..127 (index
    x + 128): exactly what LiteRT's int8 kernel computes (``tests`` check all 256 codes)."""
    if op.kind == "logistic":
        return _float_table(lambda v: np.float32(1) / (np.float32(1) + np.exp(-v)), xs, ys)
    if op.kind == "tanh":
        return _float_table(np.tanh, xs, ys)
    if op.kind == "gelu":
        return _float_table(lambda v: _gelu(v, bool(op.attrs.get("approximate"))), xs, ys)
    if op.kind == "hard_swish":
        return hard_swish_table(xs, ys)
    if op.kind == "leaky_relu":
        return leaky_relu_table(xs, ys, op.attrs["alpha"])
    raise ValueError(f"{op.kind} is not a table activation")


# softmax: TFLite's int8 reference kernel (gemmlowp fixed point) ----------------------------
def _srdhm32(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SRDHM of two int32 arrays (element-wise; gemmlowp FixedPoint multiplication)."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    ab = a * b
    s = ab + np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    high = np.where(s >= 0, s >> 31, -((-s) >> 31))
    return np.where((a == INT32_MIN) & (b == INT32_MIN), np.int64(INT32_MAX), high)


def _sat_shift_left(x: np.ndarray, k: int) -> np.ndarray:
    """gemmlowp SaturatingRoundingMultiplyByPOT<k > 0>: x * 2^k saturated to int32."""
    return np.clip(np.asarray(x, np.int64) << k, INT32_MIN, INT32_MAX)


def _exp_on_negative_values(a: np.ndarray) -> np.ndarray:
    """gemmlowp ``exp_on_negative_values`` of a Q5.26 value <= 0, as Q0.31."""
    a = np.asarray(a, np.int64)
    quarter = np.int64(1 << 24)
    mod = (a & (quarter - 1)) - quarter  # a mod 1/4, minus 1/4: in [-1/4, 0)
    # exp on [-1/4, 0): Taylor expansion around -1/8 (Q0.31)
    x = _sat_shift_left(mod, 5) + (1 << 28)
    x2 = _srdhm32(x, x)
    x3 = _srdhm32(x2, x)
    x4 = _srdhm32(x2, x2)
    x4_over_4 = rounding_divide_by_pot(x4, 2)
    poly = rounding_divide_by_pot(_srdhm32(x4_over_4 + x3, 715827883) + x2, 1)
    result = 1895147668 + _srdhm32(1895147668, x + poly)
    remainder = mod - a
    for exponent, multiplier in ((-2, 1672461947), (-1, 1302514674), (0, 790015084),
                                 (1, 290630308), (2, 39332535), (3, 720401), (4, 242)):
        bit = (remainder & (1 << (26 + exponent))) != 0
        result = np.where(bit, _srdhm32(result, multiplier), result)
    return np.where(a == 0, np.int64(INT32_MAX), result)


def _one_over_one_plus_x(a: np.ndarray) -> np.ndarray:
    """gemmlowp ``one_over_one_plus_x_for_x_in_0_1`` (Q0.31 in, Q0.31 out): Newton-Raphson."""
    total = np.asarray(a, np.int64) + INT32_MAX
    half = np.where(total >= 0, (total + 1) // 2, -((-(total - 1)) // 2))  # RoundingHalfSum
    x = 1515870810 + _srdhm32(half, -1010580540)  # Q2.29: 48/17 - 32/17 * d
    for _ in range(3):
        one_minus = (1 << 29) - _srdhm32(half, x)
        x = x + _sat_shift_left(_srdhm32(x, one_minus), 2)
    return _sat_shift_left(x, 1)


def softmax_params(xs: TensorSpec, beta: float) -> tuple[int, int, int]:
    """TFLite's ``PreprocessSoftmaxScaling`` (beta * s_x as a Q5.26 multiplier >= 1, capped
    at 2^31 - 1) and ``CalculateInputRadius``: (multiplier, left shift, diff_min)."""
    real = min(float(beta) * float(np.float32(xs.quant.scale[0])) * float(1 << 26),
               float((1 << 31) - 1))
    m, shift = quantize_multiplier(real)
    radius = int(np.floor(31.0 * (1 << 26) / (1 << shift)))
    return m, shift, -radius


def softmax_exp_table(xs: TensorSpec, beta: float = 1.0) -> np.ndarray:
    """The Q0.31 exp ``softmax`` computes for each int8 difference x - max(x) = -255 .. 0
    (index 0 .. 255; 0 below diff_min): the table Vela's 8-bit softmax loads (checked
    byte for byte in tests/targets/npu/test_vela.py)."""
    m, shift, diff_min = softmax_params(xs, beta)
    diff = np.arange(256, dtype=np.int64) - 255
    exps = _exp_on_negative_values(_srdhm32(_wrap_int32(diff << shift), m))
    return np.where(diff >= diff_min, exps, 0).astype(np.int32)


def softmax(x: np.ndarray, xs: TensorSpec, ys: TensorSpec, beta: float = 1.0) -> np.ndarray:
    """TFLite int8 SOFTMAX over the last axis (``reference_ops::Softmax``, output scale
    1/256, zero point -128): x - max(x) rescaled to Q5.26, gemmlowp's fixed-point exp, the
    sum in Q12.19, its reciprocal by Newton-Raphson, each exp times it, rounded to 8 bits."""
    m, shift, diff_min = softmax_params(xs, beta)
    x = x.astype(np.int64)
    diff = x - x.max(axis=-1, keepdims=True)
    keep = diff >= diff_min
    scaled = _srdhm32(_wrap_int32(diff << shift), m)  # MultiplyByQuantizedMultiplierGT1
    exps = np.where(keep, _exp_on_negative_values(scaled), 0)
    total = rounding_divide_by_pot(exps, 12).sum(axis=-1, keepdims=True)  # Q12.19
    total = _wrap_int32(total)
    u = total.astype(np.uint32).astype(np.int64)
    clz = np.where(u == 0, 32, 31 - np.floor(np.log2(np.maximum(u, 1))).astype(np.int64))
    bits_over_unit = 12 - clz
    shifted = _wrap_int32(((u << clz) & 0xFFFFFFFF) - (1 << 31))
    scale = _one_over_one_plus_x(shifted)
    prod = _srdhm32(scale, exps)
    e = bits_over_unit + 31 - 8  # per row: RoundingDivideByPOT with an array exponent
    mask = (np.int64(1) << e) - 1
    out = (prod >> e) + ((prod & mask) > ((mask >> 1) + (prod < 0))).astype(np.int64)
    out = np.where(keep, out - 128, -128)
    return np.clip(out, INT8_MIN, INT8_MAX).astype(np.int8)


def run_op(op: RegionOp, region: Region, values: Mapping[str, np.ndarray],
           fully_connected_rounding: str = "double") -> np.ndarray:
    t = region.tensors
    args = [values[i] if i in values else t[i].data for i in op.inputs]
    specs = [t[i] for i in op.inputs]
    ys = t[op.outputs[0]]
    if op.kind == "fully_connected":
        return fully_connected(*args, *specs[:2], ys, op.attrs, fully_connected_rounding)
    if op.kind in ("conv2d", "depthwise_conv2d"):
        fn = conv2d if op.kind == "conv2d" else depthwise_conv2d
        return fn(*args, *specs[:2], ys, op.attrs)
    if op.kind == "batch_matmul":
        return batch_matmul(*args, *specs, ys, op.attrs)
    if op.kind in ("add", "mul"):
        return (add if op.kind == "add" else mul)(*args, *specs, ys, op.attrs)
    if op.kind in ("avg_pool2d", "max_pool2d"):
        return (avg_pool2d if op.kind == "avg_pool2d" else max_pool2d)(args[0], specs[0], ys,
                                                                        op.attrs)
    if op.kind == "pad":
        t_, l_, b_, r_ = op.attrs["pads"]
        return np.pad(args[0], ((0, 0), (t_, b_), (l_, r_), (0, 0)),
                      constant_values=ys.quant.zero_point[0]).astype(np.int8)
    if op.kind == "reshape":
        return args[0].reshape(ys.shape)
    if op.kind == "transpose":
        return np.ascontiguousarray(args[0].transpose(op.attrs["perm"]))
    if op.kind == "strided_slice":
        return np.ascontiguousarray(args[0][tuple(slice(b_, e_, s_) for b_, e_, s_ in zip(
            op.attrs["begin"], op.attrs["end"], op.attrs["strides"]))])
    if op.kind == "concat":
        return np.concatenate(args, axis=op.attrs["axis"])
    if op.kind == "quantize":
        return requantize(args[0], specs[0], ys)
    if op.kind == "mean":
        return mean(args[0], specs[0], ys)
    if op.kind == "softmax":
        return softmax(args[0], specs[0], ys, op.attrs.get("beta", 1.0))
    if op.kind in LUT_KINDS:
        return lut_table(op, specs[0], ys)[args[0].astype(np.int64) + 128]
    raise NotImplementedError(f"simulator: no integer kernel for op {op.kind!r}")


def simulate(region: Region, inputs: Mapping[str, np.ndarray],
             fully_connected_rounding: str = "double") -> dict[str, np.ndarray]:
    """Execute ``region`` on int8 inputs; returns the int8 outputs by name.

    ``fully_connected_rounding``: "double" (TFLite's SRDHM + rounding shift, Vela's NPU mode)
    or "single" (LiteRT 2.3's reference FULLY_CONNECTED); see the module docstring.
    """
    if fully_connected_rounding not in ROUNDINGS:
        raise ValueError(f"fully_connected_rounding must be one of {sorted(ROUNDINGS)}")
    values: dict[str, np.ndarray] = {}
    for name in region.inputs:
        spec = region.tensors[name]
        x = np.asarray(inputs[name])
        if x.dtype != np.int8 or tuple(x.shape) != spec.shape:
            raise ValueError(f"region {region.name}: input {name!r} must be int8 {spec.shape}, "
                             f"got {x.dtype} {tuple(x.shape)}")
        values[name] = x
    for op in region.ops:
        values[op.outputs[0]] = run_op(op, region, values, fully_connected_rounding)
    return {name: values[name] for name in region.outputs}
