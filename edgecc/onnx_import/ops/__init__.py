"""ONNX operator converters, one module per op family.

Each module ends with ``CONVERTERS``, a tuple of :class:`~edgecc.onnx_import.converter.Converter`
entries (operator, opset range, function); ``edgecc.onnx_import.registry`` assembles them
into the table the importer looks converters up in. Importing a module registers nothing.

    tensor       Identity, Shape, Size, Constant, ConstantOfShape, Cast, CastLike, Range
    shape        Reshape, Flatten, Transpose, (Un)Squeeze, Concat, Slice, Split, Expand, Tile, Pad
    indexing     Gather, GatherElements, GatherND, ScatterND, Trilu
    elementwise  binary arithmetic / comparison / logic, unary math, Where, Max/Min/Sum/Mean, Dropout
    activation   HardSwish, HardSigmoid, LeakyRelu, Elu, Selu, PRelu, Shrink, Gelu, Clip, (Log)Softmax
    nn           Conv, ConvTranspose, pooling, normalization, LRN, Resize
    matmul       Gemm, MatMul, Einsum
    reduce       Reduce*, ArgMax, ArgMin, TopK, CumSum
    quantized    QDQ (Quantize/DequantizeLinear) and QOperator (QLinear*, *Integer, QGemm)
"""
