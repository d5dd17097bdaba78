"""Regions in the bundle: ``regions.json`` (structure, quantization) + ``regions.npz``
(constant data), read back by the runner so the simulator executes the very regions that
were compiled. Plain JSON and arrays, no pickle."""

from __future__ import annotations

import json
import os

import numpy as np

from edgecc.targets.npu.region import Quant, Region, RegionOp, TensorSpec

REGIONS_JSON = "regions.json"
REGIONS_NPZ = "regions.npz"
_TUPLE_ATTRS = ("stride", "dilation", "kernel", "new_shape")


def save_regions(regions: list[Region], output_dir: str, extra: dict | None = None) -> list[str]:
    data, entries = {}, []
    for r in regions:
        tensors = []
        for t in r.tensors.values():
            entry = {"name": t.name, "shape": list(t.shape), "dtype": t.dtype}
            if t.quant is not None:
                entry["quant"] = {"scale": list(t.quant.scale),
                                  "zero_point": list(t.quant.zero_point), "axis": t.quant.axis}
            if t.data is not None:
                key = f"{r.name}/{t.name}"
                data[key] = t.data
                entry["data"] = key
            tensors.append(entry)
        ops = [{"kind": o.kind, "inputs": list(o.inputs), "outputs": list(o.outputs),
                "attrs": {k: list(v) if isinstance(v, tuple) else v for k, v in o.attrs.items()}}
               for o in r.ops]
        entries.append({"name": r.name, "tensors": tensors, "ops": ops,
                        "inputs": list(r.inputs), "outputs": list(r.outputs),
                        **(extra or {}).get(r.name, {})})
    with open(os.path.join(output_dir, REGIONS_JSON), "w") as f:
        json.dump({"regions": entries}, f, indent=1)
    np.savez(os.path.join(output_dir, REGIONS_NPZ), **data)
    return [REGIONS_JSON, REGIONS_NPZ]


def load_regions(output_dir: str) -> list[tuple[Region, dict]]:
    """(region, its JSON entry) in the order they were saved."""
    with open(os.path.join(output_dir, REGIONS_JSON)) as f:
        entries = json.load(f)["regions"]
    arrays = np.load(os.path.join(output_dir, REGIONS_NPZ), allow_pickle=False)
    out = []
    for e in entries:
        tensors = {}
        for t in e["tensors"]:
            q = t.get("quant")
            quant = Quant(tuple(q["scale"]), tuple(q["zero_point"]), q["axis"]) if q else None
            data = arrays[t["data"]] if "data" in t else None
            tensors[t["name"]] = TensorSpec(t["name"], tuple(t["shape"]), t["dtype"], quant, data)
        ops = tuple(RegionOp(o["kind"], tuple(o["inputs"]), tuple(o["outputs"]),
                             {k: tuple(v) if k in _TUPLE_ATTRS else v
                              for k, v in o["attrs"].items()}) for o in e["ops"])
        out.append((Region(e["name"], tensors, ops, tuple(e["inputs"]), tuple(e["outputs"])),
                    e))
    return out
