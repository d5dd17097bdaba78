"""Verify a saved ``.mlpackage`` on a machine without Core ML.

1. Structure: the package is read back from disk (coremltools' milproto loader), op counts
   by type, inputs and outputs (names, fp32/int32), every compressed weight present as its
   ``constexpr_*`` op, and ``weight.bin`` no larger than the constant payload the loaded
   program holds (+ 64-byte alignment per blob) — so nothing was stored twice or expanded.
2. Bit-exact weights: the stored codes / LUT indices / masks equal edgecc's; every weight
   decompressed from the package (``materialized_val_inference``) equals edgecc's
   dequantized weight — exactly in fp32 precision, and in fp16 precision equal to it
   computed with the fp16-rounded scales the package stores (the scale rounding is
   reported); with fp32 precision the scales / LUTs are bit-identical too.
3. The package run by edgecc's numpy MIL interpreter (``edgecc.targets.apple.mil``) against
   the program on fresh inputs: fp32 precision max-abs <= 1e-4 x max(1, output scale),
   fp16 cosine >= 0.999.

A failure raises ``VerificationFailedError`` (the lowering is not written).
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import numpy as np
import torch

from edgecc.errors import VerificationFailedError
from edgecc.inputs import fresh_inputs
from edgecc.program import Program
from edgecc.quant import is_dequantize, is_palette_dequantize, unpack_bits
from edgecc.sparsity import is_masked
from edgecc.targets.apple.carry import Carry, unpacked_codes
from edgecc.targets.apple.lower import MODEL

FP32_TOLERANCE = 1e-4  # max-abs, relative to max(1, max |output|)
FP16_COSINE = 0.999
WEIGHTS = os.path.join("Data", "com.apple.CoreML", "weights", "weight.bin")


def interpreter_available() -> bool:
    try:
        from edgecc.targets.apple.mil.interpreter import run_mlpackage  # noqa: F401
    except ImportError:
        return False
    return True


def load_mil(path: str) -> tuple[Any, Any]:
    """``(MIL program, spec)`` of a saved package, read from disk."""
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_load

    mlm = ct.models.MLModel(path, skip_model_load=True)
    spec = mlm.get_spec()
    return milproto_load(spec, spec.specificationVersion,
                         file_weights_dir=mlm.weights_dir), spec


def op_counts(mil: Any) -> Counter[str]:
    return Counter(op.op_type for op in mil.functions["main"].operations)


def _key(target: str) -> str:
    return target.replace(".", "_")


def references(program: Program) -> dict[str, dict[str, Any]]:
    """edgecc's own view of each compressed weight, by constant name: the dense weight
    (its operator run in PyTorch) and the stored codes / mask."""
    out: dict[str, dict[str, Any]] = {}
    for node in program.nodes("call_function"):
        if not (is_dequantize(node) or is_palette_dequantize(node) or is_masked(node)):
            continue
        args = [program.tensor(a) if isinstance(a, torch.fx.Node) and program.is_constant(a)
                else a for a in node.args]
        if not all(isinstance(a, torch.Tensor) for a in args[:2]):
            continue  # activations
        dense = node.target(*args).detach().float().numpy()
        if is_dequantize(node):
            codes = unpacked_codes(args[0].numpy(), node.args[5], tuple(args[1].shape),
                                   node.args[3], node.args[4])
            mask = None
        elif is_palette_dequantize(node):
            codes = unpack_bits(args[0], node.args[2]).numpy().astype(np.uint8)
            mask = None
        else:
            codes, mask = None, args[1].bool().numpy()
        out[_key(str(node.args[0].target))] = {"dense": dense, "codes": codes, "mask": mask,
                                               "op": node.target, "args": args}
    return out


def _stored(op: Any, name: str) -> np.ndarray | None:
    var = op.inputs.get(name)
    return None if var is None or var.val is None else np.asarray(var.val)


def _var_bytes(var: Any) -> int:
    """Bytes a constant takes in the package (sub-byte types packed)."""
    from coremltools.converters.mil.mil.types.type_mapping import builtin_to_string

    name = builtin_to_string(var.dtype)
    width = 16 if name == "fp16" else 32 if name in ("fp32", "int32", "uint32") else int(
        "".join(c for c in name if c.isdigit()) or 8)
    return (np.asarray(var.val).size * width + 7) // 8


def stored_bytes(ops: dict[str, Any], w: Any) -> int:
    """Bytes of the constants one compressed weight is stored as (codes, scales, offsets,
    LUTs, masks)."""
    names = [w.mil_op] + ([w.mil_op + "_sparse_quantized"] if w.form.startswith("sparse_b")
                          else [w.mil_op + "_sparse_palettized"] if w.form == "lut_to_sparse"
                          else [])
    return sum(_var_bytes(v) for n in names for v in ops[n].inputs.values()
               if v.val is not None and getattr(v.val, "size", 1) > 1 and v.op is not None
               and v.op.op_type == "const")


def _blob_payload(mil: Any) -> tuple[int, int]:
    """Bytes of constant data the loaded program holds in weight.bin-sized constants (sub-byte
    types packed), and how many such constants there are."""
    total = blobs = 0
    for op in mil.functions["main"].operations:
        if op.op_type != "const":
            continue
        var = op.outputs[0]
        if var.val is None or not hasattr(var.val, "size") or var.val.size < 10:
            continue  # small constants live in the model file, not weight.bin
        total += _var_bytes(var)
        blobs += 1
    return total, blobs


def _check_weights(mil: Any, record: Carry, refs: dict[str, dict[str, Any]]
                   ) -> dict[str, Any]:
    ops = {op.name: op for op in mil.functions["main"].operations}
    rows, failures, scale_rounding = [], [], 0.0
    for w in record.weights:
        ref = refs.get(w.key)
        op = ops.get(w.mil_op)
        expected_type = ("constexpr_sparse_to_dense" if w.sparse else f"constexpr_{w.form}")
        if ref is None or op is None or op.op_type != expected_type:
            failures.append(f"{w.key}: not stored as {expected_type}")
            continue
        dense = np.asarray(op.materialized_val_inference(), dtype=np.float32)
        codes_exact = True
        if w.form == "sparse_blockwise_shift_scale":
            inner = ops[w.mil_op + "_sparse_quantized"]
            mask = _stored(inner, "data_mask").astype(bool)
            codes_exact = bool(np.array_equal(mask, w.mask) and np.array_equal(
                _stored(inner, "nonzero_data").astype(np.int16),
                ref["codes"][mask].astype(np.int16)))
        elif w.form == "lut_to_sparse":
            inner = ops[w.mil_op + "_sparse_palettized"]
            mask = _stored(inner, "indices_mask").astype(bool)
            codes_exact = bool(np.array_equal(mask, w.mask) and np.array_equal(
                _stored(inner, "indices_nonzero_data").astype(np.int16),
                ref["codes"][mask].astype(np.int16)))
        elif w.form == "sparse_to_dense":
            mask = _stored(op, "mask")
            if mask.dtype == np.uint8 and mask.shape != ref["mask"].shape:  # iOS16 bytes
                mask = np.unpackbits(mask, bitorder="little")[:ref["mask"].size].reshape(
                    ref["mask"].shape)
            codes_exact = bool(np.array_equal(mask.astype(bool), ref["mask"]))
        elif w.form == "blockwise_shift_scale":
            codes_exact = bool(np.array_equal(_stored(op, "data").astype(np.int16),
                                              ref["codes"].astype(np.int16)))
        elif w.form == "affine_dequantize":
            codes_exact = bool(np.array_equal(_stored(op, "quantized_data"), ref["codes"]))
        elif w.form == "lut_to_dense":
            idx = _stored(op, "indices")
            if idx.shape != ref["codes"].shape:  # iOS16: packed bytes
                bits = int(np.log2(_stored(op, "lut").size))
                unpacked = np.unpackbits(idx, bitorder="little").reshape(-1, 8)
                flat = np.unpackbits(idx, bitorder="little")[:ref["codes"].size * bits]
                idx = (flat.reshape(-1, bits) << np.arange(bits)).sum(1).reshape(
                    ref["codes"].shape)
                del unpacked
            codes_exact = bool(np.array_equal(idx.astype(np.int16),
                                              ref["codes"].astype(np.int16)))
        want = ref["dense"]
        if not record.fp32:
            want_exact = _fp16_expected(w, ref)
            scale_rounding = max(scale_rounding, float(np.abs(want_exact - want).max()))
            want = want_exact
        dense_exact = bool(np.array_equal(dense, want))
        scales_exact = None
        if record.fp32 and w.scale is not None:
            stored_scale = _stored(op, "scale") if "scale" in op.inputs else _stored(op, "lut")
            if w.form == "sparse_blockwise_shift_scale":
                stored_scale = _stored(ops[w.mil_op + "_sparse_quantized"], "scale")
            elif w.form == "lut_to_sparse":
                stored_scale = _stored(ops[w.mil_op + "_sparse_palettized"], "lut")
            scales_exact = bool(stored_scale is not None and np.array_equal(
                stored_scale.reshape(-1).astype(np.float32), w.scale.reshape(-1)))
        if not (codes_exact and dense_exact and scales_exact is not False):
            failures.append(f"{w.key}: codes {'ok' if codes_exact else 'DIFFER'}, dense "
                            f"{'ok' if dense_exact else 'DIFFERS'}"
                            + ("" if scales_exact is None else
                               f", scales {'ok' if scales_exact else 'DIFFER'}"))
        rows.append({"weight": w.key, "op": expected_type, "codes_bit_exact": codes_exact,
                     "weight_bit_exact": dense_exact, "scales_bit_exact": scales_exact,
                     "stored_bytes": stored_bytes(ops, w),
                     "float32_bytes": 4 * int(np.prod(w.shape))})
    return {"weights": rows, "failures": failures,
            "fp16_scale_rounding_max_abs": scale_rounding}


def _fp16_expected(w: Any, ref: dict[str, Any]) -> np.ndarray:
    """The weight as an fp16 package holds it: edgecc's operator run on its own codes with
    the float parameter the package stores in fp16 (scale, LUT or sparse values) rounded to
    fp16, the result rounded to fp16."""
    args = list(ref["args"])
    position = 0 if w.form == "sparse_to_dense" else 1  # masked: the weight; else scale/LUT
    args[position] = args[position].half().float()
    return ref["op"](*args).detach().float().half().float().numpy()


def _io(spec: Any) -> dict[str, Any]:
    from coremltools.proto import FeatureTypes_pb2 as ft

    def describe(f: Any) -> dict[str, Any]:
        t = f.type.multiArrayType
        return {"name": f.name, "dtype": ft.ArrayFeatureType.ArrayDataType.Name(t.dataType),
                "shape": list(t.shape)}

    return {"inputs": [describe(f) for f in spec.description.input],
            "outputs": [describe(f) for f in spec.description.output]}


def _interpret(program: Program, path: str, fp32: bool, samples: int) -> dict[str, Any]:
    from edgecc.targets.apple.mil.interpreter import run_mlpackage

    worst_abs, worst_cos, worst_rel = 0.0, 1.0, 0.0
    for i in range(samples):
        inputs = fresh_inputs(program, seed=3000 + i)
        refs = program.run(*inputs)
        feed = {s.name: (t.numpy().astype(np.float32) if t.is_floating_point()
                         else t.numpy().astype(np.int32))
                for s, t in zip(program.input_specs, inputs)}
        got = run_mlpackage(path, feed)
        for spec, ref in zip(program.output_specs, refs):
            r = ref.detach().double().numpy()
            g = np.asarray(got[spec.name], dtype=np.float64).reshape(r.shape)
            err = float(np.abs(r - g).max())
            worst_abs = max(worst_abs, err)
            worst_rel = max(worst_rel, err / max(1.0, float(np.abs(r).max())))
            cos = float((r * g).sum() / max(np.linalg.norm(r) * np.linalg.norm(g), 1e-30))
            worst_cos = min(worst_cos, cos)
    passed = worst_rel <= FP32_TOLERANCE if fp32 else worst_cos >= FP16_COSINE
    return {"performed": True, "samples": samples, "max_abs": worst_abs,
            "max_abs_relative": worst_rel, "cosine": worst_cos, "passed": passed,
            "metric": (f"max-abs <= {FP32_TOLERANCE:g} x max(1, max|output|)" if fp32
                       else f"cosine >= {FP16_COSINE}"),
            "reference": "the compressed program (PyTorch eager), fresh random inputs"}


def check_package(program: Program, output_dir: str, record: Carry, options: Any
                  ) -> dict[str, Any]:
    """The three checks of the module docstring; raises on a failure."""
    path = os.path.join(output_dir, MODEL)
    mil, spec = load_mil(path)
    counts = op_counts(mil)
    io = _io(spec)
    bad_io = [f["name"] for f in io["inputs"] + io["outputs"]
              if f["dtype"] not in ("FLOAT32", "INT32")]
    weights = _check_weights(mil, record, references(program))
    payload, blobs = _blob_payload(mil)
    size = os.path.getsize(os.path.join(path, WEIGHTS)) if os.path.exists(
        os.path.join(path, WEIGHTS)) else 0
    size_ok = payload <= size <= payload + 128 * (blobs + 1)
    report: dict[str, Any] = {
        "op_counts": dict(sorted(counts.items())), **io,
        "weight_bin_bytes": size, "constant_payload_bytes": payload,
        "weight_bin_matches_payload": size_ok, **weights}
    failures = list(weights["failures"])
    if bad_io:
        failures.append(f"inputs/outputs not fp32/int32: {', '.join(bad_io)}")
    if not size_ok:
        failures.append(f"weight.bin holds {size} bytes for {payload} bytes of constants")
    if options.check_samples == 0:
        report["interpreter"] = {"performed": False, "reason": "check_samples=0"}
    elif interpreter_available():
        report["interpreter"] = _interpret(program, path, record.fp32, options.check_samples)
        if not report["interpreter"]["passed"]:
            it = report["interpreter"]
            failures.append(f"the MIL interpreter's outputs differ from the program's: "
                            f"max-abs {it['max_abs']:.3g}, cosine {it['cosine']:.6f} "
                            f"({it['metric']})")
    else:
        report["interpreter"] = {"performed": False,
                                 "reason": "edgecc.targets.apple.mil.interpreter not installed"}
    if failures:
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise VerificationFailedError(f"-t apple package check failed: {failures[0]}{more}")
    return report
