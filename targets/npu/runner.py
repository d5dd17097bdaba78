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

import numpy as np

from edgecc.targets.npu.bundle import REGIONS_JSON, load_regions
from edgecc.targets.tvm.runner import VmRunner

LIBRARY = "model.so"


def to_region(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A boundary tensor (NCHW when 4-D, as the Relax graph has it) in the region's layout
    (NHWC / rows)."""
    if array.ndim == 4 and len(shape) == 4:
        return np.ascontiguousarray(array.transpose(0, 2, 3, 1))
    return array.reshape(shape)


def from_region(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A region output (NHWC / rows) in the boundary layout of ``shape``."""
    if array.ndim == 4 and len(shape) == 4:
        return np.ascontiguousarray(array.transpose(0, 3, 1, 2))
    return array.reshape(shape)


def _simulated(region: Any) -> Any:
    from edgecc.targets.npu.simulator import simulate

    n_in = len(region.inputs)

    def run(*tensors: Any) -> None:  # inputs..., outputs (destination passing)
        xs, ys = tensors[:n_in], tensors[n_in:]
        feeds = {n: to_region(x.numpy(), region.tensors[n].shape)
                 for n, x in zip(region.inputs, xs)}
        outs = simulate(region, feeds)
        for name, y in zip(region.outputs, ys):
            y.copyfrom(from_region(outs[name], tuple(y.shape)))

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


def load_runner(output_dir: str, manifest: dict[str, Any]) -> Any:
    """The VM in this process, or for an arm64 CPU part (``cpu=``) the bundle's deploy
    runner under qemu-aarch64 (the arm64 target's emulation: its sysroot and runtime)."""
    options = manifest["target"]["options"]
    if options.get("cpu", "host") != "host":
        from edgecc.targets.arm.runner import EmulatedRunner

        return EmulatedRunner(output_dir, LIBRARY, options.get("num_threads") or 0)
    codegen = manifest.get("lowering", {}).get("npu", {}).get("codegen", "c")
    if codegen == "vela":
        register_simulated_regions(output_dir)
    return VmRunner(os.path.join(output_dir, LIBRARY), options.get("num_threads") or 0)
