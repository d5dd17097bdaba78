"""Weight decompression (``constexpr_*``) and activation quantize/dequantize, bit for bit.

The reference is coremltools' own decompression (``op.materialized_val_inference()``; for
``quantize``/``dequantize`` its ``value_inference``), compared bit for bit, dtype included.
Each program is also converted, saved as ``.mlpackage`` and read back, so the sub-byte types
(int4, uint1 .. uint6) go through ``weight.bin`` and the milproto loader.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

ct = pytest.importorskip("coremltools")
from coremltools.converters.mil import Builder as mb  # noqa: E402
from coremltools.converters.mil.mil import types  # noqa: E402

from edgecc.targets.apple.mil.interpreter import (  # noqa: E402
    load_program, materialize_constexprs, run_mlpackage, run_program)


def mil_type(name):
    return types.nptype_from_builtin(types.string_to_builtin(name))


def same_bits(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


RNG = np.random.default_rng(0)


def _blockwise(ftype):
    q = RNG.integers(-8, 8, (16, 64)).astype(mil_type("int4"))
    scale = (RNG.random((16, 2)) * 0.1 + 0.01).astype(ftype)  # blocks of 32 along axis 1
    offset = RNG.integers(-2, 3, (16, 2)).astype(mil_type("int4"))
    return lambda: mb.constexpr_blockwise_shift_scale(data=q, scale=scale, offset=offset)


def _blockwise_uint8_float_offset():
    q = RNG.integers(0, 256, (16, 64)).astype(np.uint8)
    scale = (RNG.random((4, 1)) * 0.1).astype(np.float32)  # blocks of 4 rows, per tensor column
    offset = (RNG.random((4, 1)) * 128).astype(np.float32)
    return lambda: mb.constexpr_blockwise_shift_scale(data=q, scale=scale, offset=offset)


def _lut(groups, vector, bits, ftype=np.float32):
    idx_shape = (16, 64 // vector)
    idx = RNG.integers(0, 2 ** bits, idx_shape).astype(mil_type(f"uint{bits}"))
    lut = RNG.standard_normal((1, groups, 2 ** bits, vector)).astype(ftype)
    kwargs = {"vector_axis": 1} if vector > 1 else {}
    return lambda: mb.constexpr_lut_to_dense(indices=idx, lut=lut, **kwargs)


def _sparse(ftype):
    mask = RNG.random((16, 64)) > 0.6
    data = RNG.standard_normal(int(mask.sum())).astype(ftype)
    return lambda: mb.constexpr_sparse_to_dense(nonzero_data=data,
                                                mask=mask.astype(mil_type("uint1")))


def _sparse_int4():
    """Joint sparse + int4 per-channel: sparse_blockwise_shift_scale -> sparse_to_dense."""
    mask = RNG.random((16, 64)) > 0.5
    codes = RNG.integers(-8, 8, int(mask.sum())).astype(mil_type("int4"))
    scale = (RNG.random((16, 1)) * 0.1).astype(np.float32)

    def build():
        m, nz = mb.constexpr_sparse_blockwise_shift_scale(
            data_mask=mask.astype(mil_type("uint1")), nonzero_data=codes, scale=scale)
        return mb.constexpr_sparse_to_dense(nonzero_data=nz, mask=m)
    return build


def _sparse_lut(vector):
    """Joint sparse + LUT: lut_to_sparse -> sparse_to_dense (scalar or vector LUT)."""
    mask = RNG.random((16, 64 // vector)) > 0.5
    idx = RNG.integers(0, 4, int(mask.sum())).astype(mil_type("uint2"))
    lut = RNG.standard_normal((1, 2, 4, vector)).astype(np.float32)
    kwargs = {"vector_axis": 1} if vector > 1 else {}

    def build():
        m, nz = mb.constexpr_lut_to_sparse(indices_mask=mask.astype(mil_type("uint1")),
                                           indices_nonzero_data=idx, lut=lut, **kwargs)
        return mb.constexpr_sparse_to_dense(nonzero_data=nz, mask=m)
    return build


def _cast():
    w = RNG.standard_normal((16, 64)).astype(np.float16)
    return lambda: mb.constexpr_cast(source_val=w, output_dtype="fp32")


IOS18_CASES = {
    "blockwise_int4_offset_fp32": _blockwise(np.float32),
    "blockwise_int4_offset_fp16": _blockwise(np.float16),
    "blockwise_uint8_float_offset": _blockwise_uint8_float_offset(),
    "lut_uint4_per_tensor": _lut(1, 1, 4),
    "lut_uint3_grouped": _lut(4, 1, 3),
    "lut_uint6_grouped_fp16": _lut(2, 1, 6, np.float16),
    "lut_uint1_vector": _lut(1, 2, 1),
    "lut_uint2_grouped_vector": _lut(2, 4, 2),
    "sparse_fp32": _sparse(np.float32),
    "sparse_fp16": _sparse(np.float16),
    "sparse_int4": _sparse_int4(),
    "sparse_lut": _sparse_lut(1),
    "sparse_vector_lut": _sparse_lut(2),
}


def _ios16_affine():
    q = RNG.integers(-128, 128, (16, 64)).astype(np.int8)
    zp = RNG.integers(-3, 3, 16).astype(np.int8)
    scale = (RNG.random(16) * 0.1).astype(np.float32)
    return lambda: mb.constexpr_affine_dequantize(quantized_data=q, zero_point=zp, scale=scale,
                                                  axis=0)


def _ios16_lut():
    from coremltools.optimize._utils import pack_elements_into_bits
    idx = RNG.integers(0, 16, 16 * 64).astype(np.uint8)
    lut = RNG.standard_normal(16).astype(np.float16)
    return lambda: mb.constexpr_lut_to_dense(indices=pack_elements_into_bits(idx, 4), lut=lut,
                                             shape=np.array([16, 64], np.uint32))


def _ios16_sparse():
    mask = RNG.random(16 * 64) > 0.6
    data = RNG.standard_normal(int(mask.sum())).astype(np.float32)
    return lambda: mb.constexpr_sparse_to_dense(
        nonzero_data=data, mask=np.packbits(mask, bitorder="little"),
        shape=np.array([16, 64], np.uint32))


IOS16_CASES = {"affine_int8_zero_point": _ios16_affine(), "lut_packed_uint4": _ios16_lut(),
               "sparse_packed": _ios16_sparse(), "cast_fp16_fp32": _cast()}


def _program(builds: dict, opset):
    """One output per case: linear(x, weight=<decompressed weight>) (a used weight is kept)."""
    @mb.program(input_specs=[mb.TensorSpec(shape=(3, 64))], opset_version=opset)
    def prog(x):
        outs = []
        for name, build in builds.items():
            w = build()
            if w.dtype != types.fp32:
                w = mb.cast(x=w, dtype="fp32")
            outs.append(mb.linear(x=x, weight=w, name=name))
        return tuple(outs)
    return prog


def _reference(prog):
    """coremltools' decompression of every constexpr op, by output var name."""
    ref = {}
    for op in prog.functions["main"].operations:
        if op.op_type.startswith("constexpr_"):
            val = op.materialized_val_inference()
            vals = val if isinstance(val, tuple) else (val,)
            ref.update({var.name: v for var, v in zip(op.outputs, vals)})
    return ref


def _weights_by_case(prog) -> dict[str, np.ndarray]:
    """The dense weight each case's linear reads, by case (after any cast)."""
    env = materialize_constexprs(prog)
    out = {}
    for var in prog.functions["main"].outputs:
        op = var.op  # linear(x, weight=w), or matmul(x, w, transpose_y) after the passes
        w = op.inputs["weight"] if op.op_type == "linear" else op.inputs["y"]
        if w.op.op_type == "cast":
            w = w.op.inputs["x"]
        out[var.name] = env[w.name]
    return out


@pytest.mark.parametrize("case,opset", [(k, ct.target.iOS18) for k in IOS18_CASES]
                         + [(k, ct.target.iOS16) for k in IOS16_CASES])
def test_decompression_is_bit_exact(case, opset):
    prog = _program({case: {**IOS18_CASES, **IOS16_CASES}[case]}, opset)
    ref = _reference(prog)
    got = materialize_constexprs(prog)
    assert ref and set(got) == set(ref)
    for name in ref:
        want = ref[name]
        if want.dtype == np.bool_:  # coremltools' iOS18 masks come back as bool
            want = want.astype(np.uint8)
        assert same_bits(got[name], want), name


@pytest.mark.parametrize("opset", [ct.target.iOS16, ct.target.iOS18])
def test_decompression_through_saved_package(opset, tmp_path):
    """All cases of one deployment target in one package: weight.bin and the milproto loader
    give back the same bits, and the interpreter runs the linears on them."""
    cases = IOS18_CASES if opset == ct.target.iOS18 else IOS16_CASES
    prog = _program(cases, opset)
    in_memory = _weights_by_case(prog)
    mlm = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=opset,
                     compute_precision=ct.precision.FLOAT32)
    path = tmp_path / "w.mlpackage"
    mlm.save(str(path))
    loaded = load_program(path)
    kinds = {op.op_type for op in loaded.functions["main"].operations}
    assert {"constexpr_lut_to_dense", "constexpr_sparse_to_dense"} <= kinds
    read_back = _weights_by_case(loaded)
    assert set(read_back) == set(cases)
    for name in cases:
        assert same_bits(read_back[name], in_memory[name]), name
    x = RNG.standard_normal((3, 64)).astype(np.float32)
    outs = run_mlpackage(path, {"x": x})
    for name in cases:
        ref = x.astype(np.float64) @ in_memory[name].astype(np.float64).T
        assert np.abs(outs[name] - ref).max() <= 1e-5 * max(np.abs(ref).max(), 1.0), name


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_quantize_dequantize_match_torch(per_channel, dtype):
    x = (RNG.standard_normal((2, 4, 8)) * 3).astype(np.float32)
    x[0, 0, :3] = [0.25, -0.75, 1.25]  # exact ties: round half to even
    lo = -128 if dtype == "int8" else 0
    if per_channel:
        scale = np.array([0.5, 0.05, 0.02, 0.1], np.float32)
        zp = np.array([0, 3, -2, 1], np.int32) + (0 if dtype == "int8" else 128)
        axis = {"axis": 1}
    else:
        scale, zp, axis = np.float32(0.5), np.int32(-1 if dtype == "int8" else 127), {}

    @mb.program(input_specs=[mb.TensorSpec(shape=x.shape)], opset_version=ct.target.iOS17)
    def prog(v):
        q = mb.quantize(input=v, scale=scale, zero_point=zp.astype(dtype), output_dtype=dtype,
                        **axis)
        return q, mb.dequantize(input=q, scale=scale, zero_point=zp.astype(dtype), **axis)

    q, dq = run_program(prog, {"v": x}).values()
    # edgecc's (and ONNX's) definition: clamp(round_half_even(x / s) + z), (q - z) * s.
    # (torch.quantize_per_tensor adds z before rounding: it differs at exact ties.)
    shape = (1, -1, 1) if per_channel else ()
    s_t = torch.from_numpy(np.asarray(scale)).reshape(shape)
    z_t = torch.from_numpy(np.asarray(zp)).float().reshape(shape)
    hi = 127 if dtype == "int8" else 255
    ref_q = torch.clamp(torch.round(torch.from_numpy(x) / s_t) + z_t, lo, hi)
    assert q.dtype == np.dtype(dtype)
    assert (q == ref_q.numpy()).all()
    assert same_bits(dq, ((ref_q - z_t) * s_t).numpy())


def test_activation_qdq_converted_from_torch_is_exact(tmp_path):
    """quantized_decomposed quantize/dequantize (what edgecc's activation Q/DQ export to)
    become MIL quantize/dequantize on iOS17; the interpreter reproduces PyTorch exactly."""
    import torch.ao.quantization.fx._decomposed  # noqa: F401  (registers the ops)

    from .test_mil_convert import op_types, to_mlpackage
    qd = torch.ops.quantized_decomposed

    class QLinear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(8, 4)

        def forward(self, x):
            x = qd.dequantize_per_tensor(qd.quantize_per_tensor(x, 0.05, 3, -128, 127,
                                                                torch.int8),
                                         0.05, 3, -128, 127, torch.int8)
            y = self.fc(x)
            return qd.dequantize_per_tensor(qd.quantize_per_tensor(y, 0.02, -1, -128, 127,
                                                                   torch.int8),
                                            0.02, -1, -128, 127, torch.int8)

    torch.manual_seed(0)
    model = QLinear().eval()
    x = torch.randn(16, 8)
    path = to_mlpackage(model, {"x": x}, tmp_path / "q.mlpackage", target=ct.target.iOS17)
    assert {"quantize", "dequantize"} <= op_types(path)
    got = run_mlpackage(path, {"x": x.numpy()})["out0"]
    with torch.no_grad():
        ref = model(x).numpy()
    assert same_bits(got, ref)
