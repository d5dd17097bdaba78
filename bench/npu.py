"""NPU deployability and Vela's cost estimate per model and Ethos-U device (-t npu).

For each model (ResNet-20, the width-reduced MobileNetV2, the digits CNN, a BERT config)
compiled w8a8 for ``ethos-u55-128`` and ``ethos-u65-256``: the share of ops and MACs that
edgecc's partitioner puts on the NPU, the NPU cycles Vela 5.2 estimates for those regions
(summed over regions; connected NPU layers form one region: TVM Relax BYOC with
MergeCompositeFunctions) and the estimated NPU latency at the description's clock; and the
peer: Vela compiling the whole model's TFLite itself (its own partitioning: what it leaves on
the CPU, its NPU cycles and latency). For the CNNs edgecc writes the whole model as int8 TFLite
(``whole_model``: regions joined by int8 MEAN / pools / flatten). For BERT the graph is mixed:
the attention mask is FIXED to all ones (1, 16) and the int64 / bool mask and position-id code
is folded to constants for it, and the CPU ops between the int8 regions (layer norm, residual
adds, reshapes / transposes, the embedding gather, QUANTIZE / DEQUANTIZE) are float32 TFLite
builtins; before Vela sees it, LiteRT runs it against edgecc's program on a fresh input
(``peer_litert_max_abs_err_vs_edgecc``). Prints a table and writes ``bench/results/npu.json``.

    python bench/npu.py [--models resnet20,mobilenet_v2,digits,bert] [--devices ...]

Measured (2026-11-30, Vela 5.2.0): ResNet-20, MobileNetV2-style and digits are one region with
100% of MACs on the NPU (U55-128: 544,510 / 695,436 / 14,288 cycles, equal to Vela's
whole-model peer). BERT (2 layers, seq 16): 100% of MACs, 20/118 ops on the NPU (the 12
linears, 4 attention batch matmuls, 2 softmaxes and 2 GELU tables; was 16/118 with softmax and
GELU on the CPU), 14 regions, U55-128 116,372 cycles (was 86,144 without softmax / GELU),
U65-256 228,484. BERT's peer (mixed int8 / float32 graph, mask fixed to ones; LiteRT vs
edgecc's program max |err| 7.9e-4 on outputs of magnitude ~4.5): Vela puts 77 ops on the NPU
(every int8 linear, batch matmul, softmax and GELU table; nothing int8 falls back) and leaves
the 119 float32 ops on the CPU (layer norms as MEAN / SUB / MUL / RSQRT, adds, reshapes,
transposes, GATHER, QUANTIZE / DEQUANTIZE): U55-128 116,614 NPU cycles (edgecc 116,372),
U65-256 225,653 (edgecc 228,484) -- the same NPU work to within 1.3%, as expected when both
sides put exactly the int8 regions on the NPU. (Vela's op counts are TFLite operators, the
layer norm written as 9, so they are not comparable to edgecc's 20 / 118 graph ops.) The CNN
rows in npu.json are from the previous full run; the BERT rows were re-run for this.

Not measured here: CPU-side time of the fallback ops. Nothing executes on an Ethos-U:
cycles are Vela's estimates. Compile seconds depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import edgecc  # noqa: E402
from examples.models import mobilenet_v2, resnet20  # noqa: E402

warnings.filterwarnings("ignore")
PIPELINE = "fold-batchnorm,quantize{scheme=w8a8},fuse,dce"


def _images(shape, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(*shape, generator=g),) for _ in range(n)]


def _digits():
    from examples.digits import DigitsCNN

    torch.manual_seed(0)
    return DigitsCNN().eval(), _images((1, 1, 8, 8))


def _bert():
    from tests.models import transformer

    g = torch.Generator().manual_seed(0)
    batches = [(torch.randint(0, 128, (1, 16), generator=g), torch.ones(1, 16, dtype=torch.long))
               for _ in range(4)]
    return transformer("bert"), batches


MODELS = {
    "resnet20": lambda: (resnet20(), _images((1, 3, 32, 32))),
    "mobilenet_v2": lambda: (mobilenet_v2(), _images((1, 3, 32, 32))),
    "digits": _digits,
    "bert": _bert,
}


# BERT's peer graph is written for this fixed mask: its mask / position-id code is folded
FIXED = {"bert": {"attention_mask": torch.ones(1, 16, dtype=torch.long)}}


def _verify_mixed(res, buf: bytes, fixed: dict, seed: int = 123) -> float:
    """Max |LiteRT(whole-model TFLite) - edgecc's program| on one fresh input (the fixed
    inputs at their fixed values)."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    missing = set(fixed) - {s.name for s in res.program.input_specs}
    if missing:
        raise ValueError(f"fixed inputs {sorted(missing)} are not program inputs")
    g = torch.Generator().manual_seed(seed)
    args = []
    for spec in res.program.input_specs:
        if spec.name in fixed:
            args.append(fixed[spec.name])
        else:
            args.append(torch.randint(0, 128, tuple(spec.shape), generator=g))
    ref = res.program.run(*args)[0].detach().numpy()
    it = Interpreter(model_content=buf)
    it.allocate_tensors()
    free = [a for s, a in zip(res.program.input_specs, args) if s.name not in fixed]
    for d, a in zip(it.get_input_details(), free):
        it.set_tensor(d["index"], a.numpy().astype(d["dtype"]))
    it.invoke()
    out = it.get_tensor(it.get_output_details()[0]["index"])
    return float(np.abs(out - ref).max())


def peer(res, device: str, fixed: dict | None = None) -> dict:
    """Vela partitioning the whole model's TFLite itself (None where edgecc cannot write the
    whole model as TFLite, with the reason). Where the int8-only graph cannot be written and
    ``fixed`` gives inputs' values (BERT's all-ones attention mask), the code depending only
    on them is folded and the CPU ops between the regions are written as float32 builtins
    (``whole_model.mixed_whole_model_region``); that graph is checked with LiteRT against
    edgecc's program first."""
    import numpy as np

    from edgecc.targets.npu.lower import exported_decisions, relax_partition
    from edgecc.targets.npu.presets import resolve
    from edgecc.targets.npu.tflite_writer import write_tflite
    from edgecc.targets.npu.vela_compile import compile_region
    from edgecc.targets.npu.whole_model import (fold_fixed_inputs, mixed_whole_model_region,
                                                whole_model_region)

    desc = resolve(device)
    exported, _ = exported_decisions(res.program, desc)
    parted = relax_partition(exported, desc, True, lambda regions: [])
    regions = {r.name: r for r in parted.regions}
    region, why = whole_model_region(parted.module["main"], regions)
    extra: dict = {}
    if region is None and fixed:
        folded = fold_fixed_inputs(parted.module, {k: v.numpy().astype(np.int64)
                                                   for k, v in fixed.items()})
        region, why2 = mixed_whole_model_region(folded["main"], regions)
        if region is None:
            return {"peer_npu_cycles": None, "peer_reason": f"{why}; mixed graph: {why2}"}
        extra = {"peer_graph": "int8 regions + float32 CPU builtins; fixed inputs folded: "
                 + ", ".join(f"{k}=ones{tuple(v.shape)}" for k, v in fixed.items())}
        buf = write_tflite(region)
        extra["peer_litert_max_abs_err_vs_edgecc"] = _verify_mixed(res, buf, fixed)
    elif region is None:
        return {"peer_npu_cycles": None, "peer_reason": why}
    else:
        buf = write_tflite(region)
    result = compile_region(buf, desc, require_npu=False)
    perf = result.performance
    return {"peer_npu_cycles": perf["npu_cycles"], "peer_latency_s": perf["latency_s"],
            "peer_npu_ops": perf["npu_ops"], "peer_cpu_ops": perf["cpu_ops"],
            "peer_cpu_operators": list(result.cpu_operators), "peer_reason": "", **extra}


def run(model_name: str, device: str) -> dict:
    model, calib = MODELS[model_name]()
    pipeline = PIPELINE if model_name != "bert" else "quantize{scheme=w8a8},fuse,dce"
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        res = edgecc.compile(model, target=f"npu:{device}", example_inputs=calib[0],
                             calibration=calib, pipeline=pipeline,
                             output_dir=os.path.join(d, "out"), verify=False)
        seconds = time.perf_counter() - t0
        theirs = peer(res, device, FIXED.get(model_name))
    npu = res.report["lowering"]["npu"]
    vela = res.report["lowering"].get("vela", {})
    return {"model": model_name, "device": device, "ops": npu["ops"], "npu_ops": npu["npu_ops"],
            "npu_op_share": npu["npu_op_share"], "macs": npu["macs"],
            "npu_macs": npu["npu_macs"], "npu_mac_share": npu["npu_mac_share"],
            "regions": len(vela.get("regions", [])), "npu_cycles": vela.get("npu_cycles"),
            "estimated_npu_latency_s": vela.get("estimated_npu_latency_s"),
            "clock_hz": vela.get("clock_hz"), "compile_seconds": round(seconds, 1),
            "cpu_reasons": sorted({d["reason"] for d in npu["per_op"]
                                   if d["device"] == "cpu" and d["macs"]}), **theirs}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="resnet20,mobilenet_v2,digits,bert")
    ap.add_argument("--devices", default="ethos-u55-128,ethos-u65-256")
    args = ap.parse_args()
    rows = [run(m, dev) for m in args.models.split(",") for dev in args.devices.split(",")]
    print(f"{'model':<14}{'device':<15}{'ops on NPU':>12}{'MACs on NPU':>13}{'regions':>9}"
          f"{'NPU cycles':>12}{'latency us':>12} | {'Vela whole-model: cycles':>24}"
          f"{'latency us':>12}{'CPU ops':>9}")
    for r in rows:
        lat = r["estimated_npu_latency_s"]
        if r["peer_npu_cycles"] is None:
            theirs = f"n/a: {r['peer_reason']}"
        else:
            theirs = (f"{r['peer_npu_cycles']:>24,}{r['peer_latency_s'] * 1e6:>12.1f}"
                      f"{r['peer_cpu_ops']:>9}")
        print(f"{r['model']:<14}{r['device']:<15}{100 * r['npu_op_share']:>11.1f}%"
              f"{100 * r['npu_mac_share']:>12.1f}%{r['regions']:>9}{r['npu_cycles'] or 0:>12,}"
              f"{lat * 1e6 if lat else 0:>12.1f} | {theirs}")
    for r in rows:
        if r.get("peer_graph"):
            print(f"{r['model']} / {r['device']} peer: {r['peer_graph']}; LiteRT vs edgecc's "
                  f"program max |err| {r['peer_litert_max_abs_err_vs_edgecc']:.2e}; Vela NPU ops "
                  f"{r['peer_npu_ops']}, CPU ops {r['peer_cpu_ops']}")
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "npu.json"), "w") as f:
        json.dump({"vela": "5.2.0", "pipeline": PIPELINE, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
