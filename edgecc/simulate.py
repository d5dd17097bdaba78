"""Running a quantized program in PyTorch several times without re-dequantizing its weights.

``Program.run`` of a quantized program evaluates every stored weight's ``dequantize`` on
every run (4-bit codes unpacked, minus the zero point, times the scale), although the
weight is a constant. Verification and the quantize pass's output-error check run the same
program on several inputs; ``ConstantDequantized`` evaluates each constant weight's
dequantize once, on the first run, and reuses the float tensor in the later runs::

    %wd = edgecc.dequantize(@fc_qweight, @fc_w_scale, @fc_w_zero_point, 1, 32, 'uint4', f32)
    %y  = aten.linear(%x, %wd, @fc.bias)          # %wd: computed on run 1, reused after

The same op on the same constants: the outputs are those of ``Program.run``, bit for bit.
Memory: the float weights are cached only when all of them fit in ``cache_bytes`` (default
256 MiB: a MiniLM's 89 MB do; an LLM's 4 GB do not, and then nothing is cached); an
uncached weight is dequantized on each run as before (``dequantize_uncached``, which a
caller may make row-blocked).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx

from edgecc.program import Program
from edgecc.quant import DEQUANTIZE, DEQUANTIZE_OFFSET

DEFAULT_CACHE_BYTES = 256 << 20


class ConstantDequantized:
    """``program.run`` (same values) with constant weights dequantized once per instance.

    Not for a program whose weights change between runs (the cache keeps the first run's
    values): make a new instance after any change."""

    def __init__(self, program: Program, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.program = program
        self.budget = cache_bytes
        self.cache: dict[fx.Node, torch.Tensor] = {}
        self.cached_bytes = 0
        self.constant = {n for n in program.graph.nodes if _constant_dequantize(n)}
        sizes = [_bytes_of(n) for n in self.constant]
        if None in sizes or sum(s for s in sizes if s is not None) > cache_bytes:
            self.budget = 0  # all or nothing: a large model's weights are not cached at all

    def dequantize_uncached(self, target: Any, args: Any, kwargs: Any) -> torch.Tensor:
        """A constant dequantize beyond the cache's bound (each run)."""
        return target(*args, **kwargs)

    def run(self, *inputs: Any) -> tuple[Any, ...]:
        self.program.check_inputs(inputs)
        with torch.no_grad():
            out = _Interpreter(self).run(*inputs)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)

    __call__ = run


class _Interpreter(fx.Interpreter):
    def __init__(self, owner: ConstantDequantized) -> None:
        super().__init__(owner.program.graph_module)
        self.owner = owner

    def run_node(self, n: fx.Node) -> Any:
        owner = self.owner
        if n not in owner.constant:
            return super().run_node(n)
        if n in owner.cache:
            return owner.cache[n]
        with self._set_current_node(n):
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            size = _bytes_of(n)
            if size is None or owner.cached_bytes + size > owner.budget:
                return owner.dequantize_uncached(n.target, args, kwargs)
            value = n.target(*args, **kwargs)
        owner.cache[n] = value
        owner.cached_bytes += value.numel() * value.element_size()
        return value


def _bytes_of(node: fx.Node) -> int | None:
    """The bytes of a node's output from its metadata, None when it has none."""
    val = node.meta.get("val")
    if not isinstance(val, torch.Tensor) or val.numel() == 0:
        return None
    return val.numel() * val.element_size()


def _constant_dequantize(node: fx.Node) -> bool:
    """A ``dequantize`` / ``dequantize_offset`` whose tensors are all stored constants."""
    if node.op != "call_function" or node.target not in (DEQUANTIZE, DEQUANTIZE_OFFSET):
        return False
    if node.kwargs:
        return False
    tensors = [a for a in node.args if isinstance(a, fx.Node)]
    return bool(tensors) and all(a.op == "get_attr" for a in tensors)


__all__ = ["DEFAULT_CACHE_BYTES", "ConstantDequantized"]
