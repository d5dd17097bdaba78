"""Stored weights taken out of a program for a file exporter (ONNX, TensorRT's ONNX).

torch.onnx cannot write edgecc's integer weights itself, so an exporter first replaces every
``edgecc.dequantize`` of constants by a float placeholder constant, exports, and then puts
the integer data back (with a ``DequantizeLinear``) under the placeholder's name::

    %w = edgecc.dequantize(@q:int8, @scale, @zp, axis=0, ...)     # before
    %w = get_attr[PREFIX0]  (float values)       + StoredWeight(PREFIX0, q, scale, ...)
"""

from __future__ import annotations

import dataclasses

import torch

from edgecc.program import Program
from edgecc.quant import is_dequantize, is_palette_dequantize, node_params, qformat, unpack_int4


@dataclasses.dataclass
class StoredWeight:
    name: str  # the placeholder constant's name in the exported model
    q: torch.Tensor  # int8 / uint8 / packed 4-bit (two per uint8) / float codes
    scale: torch.Tensor
    zero_point: torch.Tensor
    axis: int
    block_size: int
    dtype: str

    @property
    def logical_shape(self) -> list[int]:
        """The shape of the values (a packed 4-bit last axis counts both nibbles)."""
        return _logical_shape(self.q, self.dtype)

    @property
    def values(self) -> torch.Tensor:
        """Unpacked values (int16 for 4-bit formats)."""
        fmt = qformat(self.dtype)
        return unpack_int4(self.q, fmt.signed) if fmt.packed else self.q


def extract_weights(program: Program, prefix: str, *, placeholder_values: bool = True
                    ) -> tuple[Program, list[StoredWeight], int]:
    """A copy of ``program`` whose stored weights are float placeholders named ``prefix0``,
    ``prefix1``, ...; the weights; and how many palettized weights were expanded to float
    (a palette has no ONNX form: it is stored as its float values).

    The copy shares the program's weight tensors. ``placeholder_values=False``: a
    placeholder is zeros broadcast to the weight's shape (no memory) instead of the
    dequantized values, for an exporter that replaces it before anything reads it."""
    program = program.copy(share_weights=True)
    graph = program.graph
    weights: list[StoredWeight] = []
    expanded = 0
    for node in list(graph.nodes):
        if is_dequantize(node) and all(program.is_constant(a) for a in node.args[:3]):
            p = node_params(node, program.tensor)
            q = program.tensor(node.args[0])
            name = f"{prefix}{len(weights)}"
            value = (p.dequantize(q, torch.float32) if placeholder_values else
                     torch.zeros((), dtype=torch.float32).expand(_logical_shape(q, p.dtype)))
        elif is_palette_dequantize(node) and all(program.is_constant(a)
                                                 for a in node.args[:2]):
            value = node.target(program.tensor(node.args[0]), program.tensor(node.args[1]),
                                *node.args[2:])
            name, p = f"edgecc_palette_expanded_{expanded}", None
            expanded += 1
        else:
            continue
        const = program.add_constant(name, value, before=node)
        node.replace_all_uses_with(const)
        graph.erase_node(node)
        if p is not None:
            weights.append(StoredWeight(str(const.target), q, p.scale, p.zero_point, p.axis,
                                        p.block_size, p.dtype))
    graph.eliminate_dead_code()
    program.refresh_metadata()
    program.graph_module.recompile()
    return program, weights, expanded


def _logical_shape(q: torch.Tensor, dtype: str) -> list[int]:
    shape = list(q.shape)
    if qformat(dtype).packed:
        shape[-1] *= 2
    return shape
