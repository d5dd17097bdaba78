"""How an npu artifact runs here: ``model.so`` in this process's TVM Relax VM.

generic-int8 (``codegen: c``): the regions are C code inside the library, so the VM runs the
whole model. Ethos-U (``codegen: vela``): nothing here executes an Ethos-U command stream, so
each region's symbol is registered as a function running edgecc's integer simulator on the
region saved in the bundle (``regions.json``) — the arithmetic the NPU performs, bit-exact
with LiteRT's reference kernels, not the command stream itself.
"""

from __future__ import annotations

import os
from typing import Any

from edgecc.targets.npu.bundle import REGIONS_JSON, load_regions
from edgecc.targets.tvm.runner import VmRunner

LIBRARY = "model.so"


def _simulated(region: Any) -> Any:
    from edgecc.targets.npu.simulator import simulate

    out = region.outputs[0]

    def run(*tensors: Any) -> None:  # inputs..., output (destination passing)
        *xs, y = tensors
        y.copyfrom(simulate(region, {n: x.numpy() for n, x in zip(region.inputs, xs)})[out])

    return run


def register_simulated_regions(output_dir: str) -> int:
    """Register every region of a vela bundle under its symbol; returns how many."""
    import tvm

    count = 0
    if not os.path.exists(os.path.join(output_dir, REGIONS_JSON)):
        return 0
    for region, entry in load_regions(output_dir):
        # symbols carry a digest of the region, so two bundles never share one
        tvm.register_global_func(entry["symbol"], _simulated(region), override=True)
        count += 1
    return count


def load_runner(output_dir: str, manifest: dict[str, Any]) -> VmRunner:
    options = manifest["target"]["options"]
    codegen = manifest.get("lowering", {}).get("npu", {}).get("codegen", "c")
    if codegen == "vela":
        register_simulated_regions(output_dir)
    return VmRunner(os.path.join(output_dir, LIBRARY), options.get("num_threads") or 0)
