"""A numpy interpreter of the Core ML MIL ops edgecc emits (runs a saved ``.mlpackage`` on Linux).

Core ML executes only on Apple OSes; this package stands in for it so converted models can be
checked where they are built:

    from edgecc.targets.apple.mil.interpreter import run_mlpackage, load_program
    outputs = run_mlpackage("model.mlpackage", {"x": x})     # {output name: ndarray}
    program = load_program("model.mlpackage")                # coremltools MIL Program
    weights = materialize_constexprs(program)                # decompressed weights, bit-exact

Modules: ``loader`` (milproto loader, weights from weight.bin), ``interpreter`` (runs a
program op by op), ``ops_math`` / ``ops_nn`` / ``ops_tensor`` (numpy op implementations),
``constexpr`` (weight decompression, quantize/dequantize), ``dtypes`` (MIL types, per-op fp16
rounding).

Precision: each op's results are cast to their MIL type, so fp16 programs round to fp16 after
every op; inside an op numpy computes in fp32/fp64. The Neural Engine's and GPU's accumulation
(order, fp16 accumulators) is NOT emulated: compare fp16 programs with fp16-level tolerances.
An op the interpreter does not implement raises ``UnsupportedMILOpError`` naming the op type
and the op; ``interpreter.SUPPORTED_OPS`` lists those it does.
"""
