"""Each MIL op of the interpreter against PyTorch, on MIL programs built with coremltools' builder.

Programs are built in memory with ``mb`` (milliseconds each, so Hypothesis can draw shapes and
attributes: strides, pads, pad types, dilations, groups, ceil_mode); coremltools' own type
inference checks every result's shape (the interpreter raises on a mismatch).
``test_mil_convert.py`` runs whole converted ``.mlpackage`` files.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

ct = pytest.importorskip("coremltools")
from coremltools.converters.mil import Builder as mb  # noqa: E402
from coremltools.converters.mil.mil import types  # noqa: E402

from edgecc.targets.apple.mil.interpreter import (  # noqa: E402
    MILExecutionError, UnsupportedMILOpError, run_program)

EXAMPLES = settings(max_examples=settings.default.max_examples * 2)
IOS18 = ct.target.iOS18


def mil(build, *arrays, opset=IOS18):
    """Run ``build(*input vars)`` as a one-function MIL program on ``arrays``; list of outputs."""
    def spec(a):
        dtype = {np.float32: types.fp32, np.float16: types.fp16, np.int32: types.int32,
                 np.bool_: types.bool}[a.dtype.type]
        return mb.TensorSpec(shape=a.shape, dtype=dtype)

    specs = [spec(a) for a in arrays]
    if len(arrays) == 1:
        @mb.program(input_specs=specs, opset_version=opset)
        def prog(x):
            return build(x)
    elif len(arrays) == 2:
        @mb.program(input_specs=specs, opset_version=opset)
        def prog(x, y):
            return build(x, y)
    else:
        @mb.program(input_specs=specs, opset_version=opset)
        def prog(x, y, z):
            return build(x, y, z)
    names = ["x", "y", "z"][:len(arrays)]
    return list(run_program(prog, dict(zip(names, arrays))).values())


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def close(got, ref, tol=1e-5):
    ref = ref.detach().numpy() if isinstance(ref, torch.Tensor) else np.asarray(ref)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    scale = max(float(np.abs(ref).max()), 1.0)
    err = float(np.abs(got.astype(np.float64) - ref).max()) / scale
    assert err <= tol, err


# -- convolution ----------------------------------------------------------------------------

@st.composite
def conv_cases(draw):
    nsp = draw(st.sampled_from([1, 2, 2, 3]))
    groups = draw(st.sampled_from([1, 2, 3]))
    depthwise = draw(st.booleans())
    cin_g = 1 if depthwise else draw(st.integers(1, 3))
    cout_g = draw(st.integers(1, 3))
    kernel = [draw(st.integers(1, 4)) for _ in range(nsp)]
    strides = [draw(st.integers(1, 3)) for _ in range(nsp)]
    dilations = [draw(st.integers(1, 2)) for _ in range(nsp)]
    pad_type = draw(st.sampled_from(["valid", "custom", "same", "same_lower"]))
    pads = [draw(st.integers(0, 2)) for _ in range(2 * nsp)]
    top = 9 if nsp < 3 else 6
    size = [draw(st.integers((k - 1) * d + 1, max(top, (k - 1) * d + 1)))
            for k, d in zip(kernel, dilations)]
    return dict(nsp=nsp, groups=groups, cin=cin_g * groups, cout=cout_g * groups,
                kernel=kernel, strides=strides, dilations=dilations, pad_type=pad_type,
                pads=pads, size=size, bias=draw(st.booleans()), batch=draw(st.integers(1, 2)))


def _torch_pads(case, size):
    """Begin/end pads per spatial dim as Core ML defines pad_type."""
    if case["pad_type"] == "valid":
        return [0] * (2 * case["nsp"])
    if case["pad_type"] == "custom":
        return case["pads"]
    pads = []
    for n, k, s, d in zip(size, case["kernel"], case["strides"], case["dilations"]):
        total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
        lo = total // 2
        pads += [total - lo, lo] if case["pad_type"] == "same_lower" else [lo, total - lo]
    return pads


def _f_pad(pads):
    """MIL [b0, e0, b1, e1] (outer dim first) -> F.pad's (last dim first)."""
    pairs = [pads[i:i + 2] for i in range(0, len(pads), 2)]
    return [p for pair in reversed(pairs) for p in pair]


@EXAMPLES
@given(conv_cases())
def test_conv_matches_torch(case):
    nsp = case["nsp"]
    x = randn(case["batch"], case["cin"], *case["size"])
    w = randn(case["cout"], case["cin"] // case["groups"], *case["kernel"], seed=1)
    b = randn(case["cout"], seed=2) if case["bias"] else None
    kwargs = dict(weight=w, strides=case["strides"], dilations=case["dilations"],
                  groups=case["groups"], pad_type=case["pad_type"])
    if case["pad_type"] == "custom":
        kwargs["pad"] = case["pads"]
    if b is not None:
        kwargs["bias"] = b
    got, = mil(lambda v: mb.conv(x=v, **kwargs), x)
    xt = F.pad(torch.from_numpy(x), _f_pad(_torch_pads(case, case["size"])))
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nsp]
    ref = fn(xt, torch.from_numpy(w), None if b is None else torch.from_numpy(b),
             stride=case["strides"], dilation=case["dilations"], groups=case["groups"])
    close(got, ref)


@EXAMPLES
@given(groups=st.sampled_from([1, 2]), k=st.integers(1, 4), stride=st.integers(1, 3),
       pad=st.integers(0, 2), dilation=st.integers(1, 2), size=st.integers(2, 6),
       output_padding=st.integers(0, 2))
def test_conv_transpose_matches_torch(groups, k, stride, pad, dilation, size, output_padding):
    output_padding = min(output_padding, max(stride, dilation) - 1)
    pad = min(pad, (k - 1) * dilation // 2)  # a non-empty output
    x = randn(1, 2 * groups, size, size + 1)
    w = randn(2 * groups, 3, k, k, seed=1)
    b = randn(3 * groups, seed=2)
    ref = F.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                             stride=stride, padding=pad, output_padding=output_padding,
                             groups=groups, dilation=dilation)
    kwargs = dict(weight=w, bias=b, strides=[stride] * 2, dilations=[dilation] * 2,
                  groups=groups, pad_type="custom", pad=[pad] * 4)
    if output_padding:
        kwargs["output_shape"] = np.array(ref.shape, dtype=np.int32)
    got, = mil(lambda v: mb.conv_transpose(x=v, **kwargs), x)
    close(got, ref)


# -- pooling --------------------------------------------------------------------------------

@st.composite
def pool_cases(draw):
    k = [draw(st.integers(1, 4)) for _ in range(2)]
    s = [draw(st.integers(1, 3)) for _ in range(2)]
    p = [draw(st.integers(0, kk // 2)) for kk in k]  # torch: pad <= kernel / 2
    size = [draw(st.integers(kk, 9)) for kk in k]
    ceil_mode = draw(st.booleans())
    if ceil_mode:
        # Core ML keeps a last window that starts past the end of an unpadded input (an empty
        # window), PyTorch drops it: the two agree everywhere else
        for n, kk, ss, pp in zip(size, k, s, p):
            out = -(-(n + 2 * pp - kk) // ss) + 1
            assume(pp > 0 or (out - 1) * ss < n)
    return dict(kernel=k, strides=s, pads=p, size=size, ceil_mode=ceil_mode,
                exclude=draw(st.booleans()))


@EXAMPLES
@given(pool_cases())
def test_max_pool_matches_torch(case):
    x = randn(2, 3, *case["size"])
    pad = [case["pads"][0]] * 2 + [case["pads"][1]] * 2
    got, = mil(lambda v: mb.max_pool(x=v, kernel_sizes=case["kernel"], strides=case["strides"],
                                     pad_type="custom", pad=pad, ceil_mode=case["ceil_mode"]), x)
    ref = F.max_pool2d(torch.from_numpy(x), case["kernel"], case["strides"], case["pads"],
                       ceil_mode=case["ceil_mode"])
    close(got, ref)


@EXAMPLES
@given(pool_cases())
def test_avg_pool_matches_torch(case):
    x = randn(2, 3, *case["size"])
    pad = [case["pads"][0]] * 2 + [case["pads"][1]] * 2
    got, = mil(lambda v: mb.avg_pool(x=v, kernel_sizes=case["kernel"], strides=case["strides"],
                                     pad_type="custom", pad=pad, ceil_mode=case["ceil_mode"],
                                     exclude_padding_from_average=case["exclude"]), x)
    ref = F.avg_pool2d(torch.from_numpy(x), case["kernel"], case["strides"], case["pads"],
                       ceil_mode=case["ceil_mode"], count_include_pad=not case["exclude"])
    close(got, ref)


@pytest.mark.parametrize("nsp", [1, 3])
def test_pools_1d_3d(nsp):
    x = randn(2, 3, *([7] * nsp))
    k, s = [3] * nsp, [2] * nsp
    got_max, got_avg, got_l2 = mil(lambda v: (
        mb.max_pool(x=v, kernel_sizes=k, strides=s, pad_type="custom", pad=[1] * (2 * nsp)),
        mb.avg_pool(x=v, kernel_sizes=k, strides=s, pad_type="custom", pad=[1] * (2 * nsp),
                    exclude_padding_from_average=False),
        mb.l2_pool(x=v if nsp == 1 else mb.reshape(x=v, shape=[2, 3, 49, 7]),  # 1-D or 2-D
                   kernel_sizes=[3] * min(nsp, 2), strides=[2] * min(nsp, 2),
                   pad_type="valid")), x)
    t = torch.from_numpy(x)
    max_fn = F.max_pool1d if nsp == 1 else F.max_pool3d
    avg_fn = F.avg_pool1d if nsp == 1 else F.avg_pool3d
    close(got_max, max_fn(t, 3, 2, 1))
    close(got_avg, avg_fn(t, 3, 2, 1, count_include_pad=True))
    t2 = t if nsp == 1 else t.reshape(2, 3, 49, 7)
    l2_fn = F.avg_pool1d if nsp == 1 else F.avg_pool2d
    close(got_l2, l2_fn(t2 * t2, 3, 2).mul(3 ** min(nsp, 2)).sqrt())


@pytest.mark.parametrize("pad_type", ["valid", "same"])
def test_pools_with_pad_types(pad_type):
    x = randn(1, 2, 7, 8)
    got_max, got_avg = mil(lambda v: (
        mb.max_pool(x=v, kernel_sizes=[3, 2], strides=[2, 2], pad_type=pad_type),
        mb.avg_pool(x=v, kernel_sizes=[3, 2], strides=[2, 2], pad_type=pad_type,
                    exclude_padding_from_average=True)), x)
    xt = torch.from_numpy(x)
    if pad_type == "same":  # out = ceil(in / stride): total pad H 2 -> (1, 1), W 0
        xt_max = F.pad(xt, [0, 0, 1, 1], value=-math.inf)
        ones = F.pad(torch.ones_like(xt), [0, 0, 1, 1])
        ref_avg = (F.avg_pool2d(F.pad(xt, [0, 0, 1, 1]), [3, 2], 2)
                   / F.avg_pool2d(ones, [3, 2], 2))
    else:
        xt_max, ref_avg = xt, F.avg_pool2d(xt, [3, 2], 2)
    close(got_max, F.max_pool2d(xt_max, [3, 2], 2))
    close(got_avg, ref_avg)


@pytest.mark.parametrize("align_corners", [False, True])
def test_bilinear_resizing_matches_torch(align_corners):
    x = randn(2, 3, 5, 7)
    t = torch.from_numpy(x)
    mode = "ALIGN_CORNERS" if align_corners else "UNALIGN_CORNERS"
    up, rs, nn_up = mil(lambda v: (
        mb.upsample_bilinear(x=v, scale_factor_height=2.0, scale_factor_width=3.0,
                             align_corners=align_corners),
        mb.resize_bilinear(x=v, target_size_height=8, target_size_width=4, sampling_mode=mode),
        mb.upsample_nearest_neighbor(x=v, scale_factor_height=2.0, scale_factor_width=3.0)), x)
    close(up, F.interpolate(t, scale_factor=(2, 3), mode="bilinear",
                            align_corners=align_corners))
    close(rs, F.interpolate(t, size=(8, 4), mode="bilinear", align_corners=align_corners))
    close(nn_up, F.interpolate(t, scale_factor=(2, 3), mode="nearest"))


# -- matmul, linear, normalization, attention ----------------------------------------------

@pytest.mark.parametrize("tx,ty", [(False, False), (True, False), (False, True), (True, True)])
def test_matmul_transposes_and_broadcast(tx, ty):
    a, b = randn(2, 1, 4, 5), randn(3, 5, 6, seed=1)
    a_in = np.swapaxes(a, -1, -2).copy() if tx else a
    b_in = np.swapaxes(b, -1, -2).copy() if ty else b
    got, = mil(lambda x, y: mb.matmul(x=x, y=y, transpose_x=tx, transpose_y=ty), a_in, b_in)
    close(got, torch.from_numpy(a) @ torch.from_numpy(b))


def test_linear_and_norms():
    x = randn(2, 3, 6, 5)
    w, b = randn(4, 5, seed=1), randn(4, seed=2)
    g, beta = randn(6, 5, seed=3), randn(6, 5, seed=4)
    ch = [randn(3, seed=s) for s in range(5, 9)]
    var = np.abs(ch[1]) + 0.5
    outs = mil(lambda v: (
        mb.linear(x=v, weight=w, bias=b),
        mb.layer_norm(x=v, axes=[-2, -1], gamma=g, beta=beta, epsilon=1e-5),
        mb.batch_norm(x=v, mean=ch[0], variance=var, gamma=ch[2], beta=ch[3], epsilon=1e-3),
        mb.instance_norm(x=v, gamma=ch[2], beta=ch[3], epsilon=1e-5),
        mb.l2_norm(x=v, epsilon=1e-6)), x)
    xt = torch.from_numpy(x)
    t = torch.from_numpy
    close(outs[0], F.linear(xt, t(w), t(b)))
    close(outs[1], F.layer_norm(xt, [6, 5], t(g), t(beta), 1e-5))
    close(outs[2], F.batch_norm(xt, t(ch[0]), t(var), t(ch[2]), t(ch[3]), False, 0.0, 1e-3))
    close(outs[3], F.instance_norm(xt, weight=t(ch[2]), bias=t(ch[3]), eps=1e-5))
    close(outs[4], xt / xt.flatten(1).norm(dim=1).reshape(2, 1, 1, 1))


@pytest.mark.parametrize("mask", [None, "bool", "float"])
def test_scaled_dot_product_attention(mask):
    q, k, v = randn(2, 3, 5, 8), randn(2, 3, 7, 8, seed=1), randn(2, 3, 7, 4, seed=2)
    m = None
    if mask == "bool":
        m = np.random.default_rng(3).random((5, 7)) > 0.3
        m[:, 0] = True  # no fully masked row
    elif mask == "float":
        m = randn(2, 1, 5, 7, seed=4)
    kwargs = {} if m is None else {"attn_mask": m}
    got, = mil(lambda a, b, c: mb.scaled_dot_product_attention(query=a, key=b, value=c,
                                                               **kwargs), q, k, v)
    t = torch.from_numpy
    ref = F.scaled_dot_product_attention(t(q), t(k), t(v), None if m is None else t(m))
    close(got, ref)


# -- elementwise and activations -----------------------------------------------------------

UNARY = {
    "relu": F.relu, "relu6": F.relu6, "sigmoid": torch.sigmoid, "silu": F.silu,
    "softplus": F.softplus, "tanh": torch.tanh, "exp": torch.exp, "erf": torch.erf,
    "abs": torch.abs, "floor": torch.floor, "ceil": torch.ceil, "sign": torch.sign,
    "sin": torch.sin, "cos": torch.cos, "square": torch.square, "softsign": F.softsign,
}


def test_unary_ops():
    x = randn(3, 4, 5) * 3
    got = mil(lambda v: tuple(getattr(mb, name)(x=v) for name in UNARY), x)
    for out, fn in zip(got, UNARY.values()):
        close(out, fn(torch.from_numpy(x)))
    pos = np.abs(x) + 0.1
    s, r, lg = mil(lambda v: (mb.sqrt(x=v), mb.rsqrt(x=v), mb.log(x=v)), pos)
    close(s, np.sqrt(pos))
    close(r, 1 / np.sqrt(pos))
    close(lg, np.log(pos))


@pytest.mark.parametrize("mode,approximate", [("EXACT", "none"),
                                              ("TANH_APPROXIMATION", "tanh")])
def test_gelu_modes(mode, approximate):
    x = randn(4, 33) * 3
    got, = mil(lambda v: mb.gelu(x=v, mode=mode), x)
    close(got, F.gelu(torch.from_numpy(x), approximate=approximate))


def test_parametric_activations():
    x = randn(2, 3, 4, 2) * 3  # prelu needs rank 4 for per-channel slopes
    t = torch.from_numpy(x)
    got = mil(lambda v: (mb.clip(x=v, alpha=-1.0, beta=2.5), mb.leaky_relu(x=v, alpha=0.1),
                         mb.elu(x=v, alpha=0.7), mb.softmax(x=v, axis=1),
                         mb.prelu(x=v, alpha=np.array([0.1, 0.2, 0.3], np.float32)),
                         mb.sigmoid_hard(x=v, alpha=1 / 6, beta=0.5)), x)
    close(got[0], t.clamp(-1.0, 2.5))
    close(got[1], F.leaky_relu(t, 0.1))
    close(got[2], F.elu(t, 0.7))
    close(got[3], torch.softmax(t, 1))
    close(got[4], F.prelu(t, torch.tensor([0.1, 0.2, 0.3])))
    close(got[5], F.hardsigmoid(t))


def test_binary_ops_broadcast():
    a, b = randn(2, 3, 4), randn(3, 1, seed=1)
    pos = np.abs(a) + 0.5
    got = mil(lambda x, y: (mb.add(x=x, y=y), mb.sub(x=x, y=y), mb.mul(x=x, y=y),
                            mb.real_div(x=x, y=y), mb.maximum(x=x, y=y),
                            mb.minimum(x=x, y=y), mb.greater(x=x, y=y)), a, b)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    refs = [ta + tb, ta - tb, ta * tb, ta / tb, torch.maximum(ta, tb), torch.minimum(ta, tb)]
    for out, ref in zip(got, refs):
        close(out, ref)
    assert got[6].dtype == np.bool_ and (got[6] == (ta > tb).numpy()).all()
    p, = mil(lambda x: mb.pow(x=x, y=np.float32(1.7)), pos)
    close(p, np.power(pos, 1.7))


@pytest.mark.parametrize("keep", [False, True])
def test_reductions(keep):
    x = randn(2, 3, 4, 5)
    t = torch.from_numpy(x)
    got = mil(lambda v: (mb.reduce_mean(x=v, axes=[2, 3], keep_dims=keep),
                         mb.reduce_sum(x=v, axes=[1], keep_dims=keep),
                         mb.reduce_max(x=v, axes=[-1], keep_dims=keep),
                         mb.reduce_min(x=v, axes=[0, 2], keep_dims=keep),
                         mb.reduce_argmax(x=v, axis=1, keep_dims=keep)), x)
    close(got[0], t.mean((2, 3), keepdim=keep))
    close(got[1], t.sum(1, keepdim=keep))
    close(got[2], t.amax(-1, keepdim=keep))
    close(got[3], t.amin((0, 2), keepdim=keep))
    assert (got[4] == t.argmax(1, keepdim=keep).numpy()).all()


# -- tensor ops -----------------------------------------------------------------------------

def test_shape_ops():
    x = randn(2, 3, 4, 5)
    t = torch.from_numpy(x)
    got = mil(lambda v: (
        mb.reshape(x=v, shape=[6, -1]), mb.transpose(x=v, perm=[0, 2, 3, 1]),
        mb.concat(values=[v, v], axis=2), mb.squeeze(x=mb.expand_dims(x=v, axes=[1]), axes=[1]),
        mb.slice_by_index(x=v, begin=[0, 1, 0, 4], end=[2, 3, 4, 0], stride=[1, 1, 2, -1],
                          begin_mask=[True, False, False, False],
                          end_mask=[True, False, True, True],
                          squeeze_mask=[False, False, False, False]),
        mb.slice_by_size(x=v, begin=[0, 1, 1, 0], size=[-1, 2, 2, -1]),
        mb.tile(x=v, reps=[1, 2, 1, 1]),
        mb.pad(x=v, pad=[1, 2, 0, 3], mode="constant", constant_val=0.5),
        mb.pad(x=v, pad=[1, 1, 2, 2], mode="reflect"),
        mb.pad(x=v, pad=[1, 1, 2, 2], mode="replicate"),
        mb.reshape(x=v, shape=[0, 0, -1]), mb.shape(x=v),
        mb.crop(x=v, crop_height=[1, 2], crop_width=[0, 3]),
        mb.depth_to_space(x=mb.space_to_depth(x=mb.tile(x=v, reps=[1, 1, 1, 2]), block_size=2),
                          block_size=2)), x)
    refs = [t.reshape(6, -1), t.permute(0, 2, 3, 1), torch.cat([t, t], 2), t,
            t[:, 1:3, 0:4:2].flip(-1), t[:, 1:3, 1:3], t.repeat(1, 2, 1, 1),
            F.pad(t, [0, 3, 1, 2], value=0.5), F.pad(t, [2, 2, 1, 1], mode="reflect"),
            F.pad(t, [2, 2, 1, 1], mode="replicate")]
    for out, ref in zip(got, refs):
        close(out, ref)
    assert got[10].shape == (3, 4, 10)  # iOS17 reshape: a 0 copies the dim counted from the right
    assert got[11].tolist() == [2, 3, 4, 5]
    close(got[12], t[:, :, 1:2, 0:2])
    close(got[13], t.repeat(1, 1, 1, 2))
    x2 = randn(1, 2, 4, 6)
    s2d, = mil(lambda v: mb.space_to_depth(x=v, block_size=2), x2)
    # TensorFlow's channel order (coremltools' TF frontend maps SpaceToDepth onto it directly)
    close(s2d, np.concatenate([x2[:, :, i::2, j::2] for i in (0, 1) for j in (0, 1)], 1))


def test_split_gather_select_cast():
    x = randn(4, 6)
    idx = np.array([[3, 0], [1, -1]], dtype=np.int32)
    along = np.array([[0, 5, 2], [1, 1, 0], [5, 4, 3], [2, 2, 2]], dtype=np.int32)
    t = torch.from_numpy(x)
    got = mil(lambda v, i: (
        *mb.split(x=v, split_sizes=[1, 2, 3], axis=1), *mb.split(x=v, num_splits=2, axis=0),
        mb.gather(x=v, indices=i, axis=0), mb.gather(x=v, indices=i, axis=1),
        mb.gather_along_axis(x=v, indices=along, axis=1),
        mb.select(cond=mb.greater(x=v, y=0.0), a=v, b=mb.mul(x=v, y=-2.0)),
        mb.cast(x=mb.mul(x=v, y=3.0), dtype="int32"), mb.cast(x=v, dtype="fp16")), x, idx)
    for out, ref in zip(got[:5], [*t.split([1, 2, 3], 1), *t.split(2, 0)]):
        close(out, ref)
    it = torch.from_numpy(idx).long() % 4
    close(got[5], t[it])
    close(got[6], t[:, torch.from_numpy(idx).long() % 6])
    close(got[7], t.gather(1, torch.from_numpy(along).long()))
    close(got[8], torch.where(t > 0, t, -2 * t))
    assert got[9].dtype == np.int32 and (got[9] == (3 * t).trunc().int().numpy()).all()
    assert got[10].dtype == np.float16 and (got[10] == x.astype(np.float16)).all()


def test_index_and_sequence_ops():
    x = randn(3, 5)
    t = torch.from_numpy(x)
    idx = np.array([[0, 4], [2, 1]], dtype=np.int32)
    got = mil(lambda v, i: (
        *mb.topk(x=v, k=2, axis=1), mb.argsort(x=v, axis=0, ascending=True),
        mb.cumsum(x=v, axis=1, exclusive=True, reverse=True), mb.band_part(x=v, lower=1, upper=0),
        mb.stack(values=[v, v], axis=1), mb.gather_nd(x=v, indices=i),
        mb.reverse(x=v, axes=[0]), mb.flatten2d(x=mb.expand_dims(x=v, axes=[0]), axis=2),
        mb.range_1d(start=1, end=10, step=3), mb.fill(shape=[2, 3], value=1.5),
        mb.one_hot(indices=i, one_hot_vector_size=5)), x, idx)
    values, order = t.topk(2, dim=1)
    close(got[0], values)
    assert (got[1] == order.numpy()).all()
    assert (got[2] == t.argsort(0).numpy()).all()
    close(got[3], t.flip(1).cumsum(1).flip(1) - t)
    close(got[4], torch.tril(t) - torch.tril(t, -2))
    close(got[5], torch.stack([t, t], 1))
    close(got[6], t[idx[:, 0], idx[:, 1]])
    close(got[7], t.flip(0))
    close(got[8], t.reshape(3, 5))
    assert got[9].tolist() == [1, 4, 7]
    assert (got[10] == 1.5).all() and got[10].shape == (2, 3)
    assert (got[11] == F.one_hot(torch.from_numpy(idx).long(), 5).numpy()).all()
    a, b = randn(2, 3, 4, 5), randn(2, 5, 4, 6, seed=1)  # MIL einsum: two batched forms only
    e, = mil(lambda u, w: mb.einsum(values=(u, w), equation="nchw,nwhu->nchu"), a, b)
    close(e, torch.einsum("nchw,nwhu->nchu", torch.from_numpy(a), torch.from_numpy(b)))


def test_load_errors_are_one_line(tmp_path):
    from edgecc.errors import ModelLoadError
    from edgecc.targets.apple.mil.interpreter import run_mlpackage

    with pytest.raises(ModelLoadError, match="does not exist") as err:
        run_mlpackage(tmp_path / "missing.mlpackage", {})
    assert "\n" not in str(err.value)
    (tmp_path / "empty.mlpackage").mkdir()
    with pytest.raises(ModelLoadError, match="not a readable Core ML model") as err:
        run_mlpackage(tmp_path / "empty.mlpackage", {})
    assert "\n" not in str(err.value)


# -- precision and errors -------------------------------------------------------------------

def test_fp16_program_rounds_after_each_op():
    """fp16 ops round their results to fp16: (x * 3) / 3 differs from x where fp16 rounds."""
    x = randn(1000).astype(np.float16)
    got, = mil(lambda v: mb.real_div(x=mb.mul(x=v, y=np.float16(3.0)), y=np.float16(3.0)), x)
    ref = ((x.astype(np.float32) * 3).astype(np.float16).astype(np.float32) / 3).astype(
        np.float16)
    assert got.dtype == np.float16 and (got == ref).all()


def test_unknown_op_names_op_type_and_op():
    x = randn(1, 2, 4, 4)
    with pytest.raises(UnsupportedMILOpError) as err:
        mil(lambda v: mb.local_response_norm(x=v, size=3, name="my_lrn"), x)
    msg = str(err.value)
    assert "'local_response_norm'" in msg and "'my_lrn'" in msg and "\n" not in msg


def test_input_mismatch_is_one_line():
    from edgecc.errors import InputSpecError

    @mb.program(input_specs=[mb.TensorSpec(shape=(2, 3))], opset_version=IOS18)
    def prog(x):
        return mb.relu(x=x)
    with pytest.raises(InputSpecError, match="missing \\['x'\\]"):
        run_program(prog, {"y": randn(2, 3)})
    with pytest.raises(InputSpecError, match="shape \\(3, 2\\)"):
        run_program(prog, {"x": randn(3, 2)})
    assert issubclass(MILExecutionError, Exception)
