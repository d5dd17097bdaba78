"""Per-layer storage of a program, for the manifest's ``layers`` section and the report's
size-by-layer-and-dtype chart: ``[layer, dtype, elements, bytes]`` per stored tensor group.

A layer is a weight's owner (``encoder.layer.0.attention.q`` for
``encoder.layer.0.attention.q.weight``); quantized weights, their scales and zero points
count under their layer with their own dtypes (int8 codes, float32 scales).
"""

from __future__ import annotations

import re
from typing import Any

import torch

# quantize writes top-level constants named after the layer: conv_qweight, conv_w_scale, ...
_SUFFIX = re.compile(r"^(.+?)_(q?weight|w_scale|w_zero_point|act_scale|act_zero_point|"
                     r"scale|zero_point|bias|mask|lut|indices)$")


def layer_of(target: str) -> str:
    """``encoder.fc.weight`` -> ``encoder.fc``; ``fc_qweight`` / ``fc_w_scale`` -> ``fc``."""
    owner, _, _ = target.rpartition(".")
    if owner:
        return owner
    m = _SUFFIX.match(target)
    return m.group(1) if m else target


def layer_sizes(program: Any) -> list[list[Any]]:
    """``[[layer, dtype, elements, bytes], ...]`` in graph order, one row per (layer, dtype)."""
    rows: dict[tuple[str, str], list[int]] = {}
    seen: set[str] = set()
    for node in program.nodes("get_attr"):
        target = str(node.target)
        if target in seen:
            continue
        seen.add(target)
        value = program.tensor(node)
        if not isinstance(value, torch.Tensor):
            continue
        layer = layer_of(target)
        dtype = str(value.dtype).removeprefix("torch.")
        row = rows.setdefault((layer, dtype), [0, 0])
        row[0] += value.numel()
        row[1] += value.numel() * value.element_size()
    return [[layer, dtype, n, b] for (layer, dtype), (n, b) in rows.items()]
