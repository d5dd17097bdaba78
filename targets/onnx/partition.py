"""Which nodes ``-t onnx`` writes, and how.

Every node goes into the one ``.onnx`` file: ATen operators as torch.onnx's dynamo exporter
translates them (an operator it cannot translate fails the export with its name),
edgecc's quantization operators as ``QuantizeLinear`` / ``DequantizeLinear`` (``qdq``;
palettized weights, which ONNX cannot express, expanded to float). ``LEGALIZATION`` is
what must be rewritten first:

* ``decompose-composites``: ONNX has no fused conv+activation operator (onnxruntime fuses
  again itself);
* ``attention-mask-to-additive``: onnxruntime's attention does not zero fully-masked query
  rows as PyTorch does;
* ``apply-masks``: pruning masks folded into the weights (no sparse kernels).
"""

from edgecc.passes import ApplyMasks, AttentionMaskToAdditive, DecomposeComposites
from edgecc.pipeline_text import PassStep

LEGALIZATION = (PassStep(DecomposeComposites, DecomposeComposites.Options()),
                PassStep(AttentionMaskToAdditive, AttentionMaskToAdditive.Options()),
                PassStep(ApplyMasks, ApplyMasks.Options()))
