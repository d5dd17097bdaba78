"""NPU deployability and Vela's cost estimate per model and Ethos-U device (-t npu).

For each model (ResNet-20, the width-reduced MobileNetV2, the digits CNN, a BERT config)
compiled w8a8 for ``ethos-u55-128`` and ``ethos-u65-256``: the share of ops and MACs that
edgecc's partitioner puts on the NPU, the NPU cycles Vela 5.2 estimates for those regions
(summed over regions; connected NPU layers form one region: TVM Relax BYOC with
MergeCompositeFunctions) and the estimated NPU latency at the description's clock; and the
peer: Vela compiling the whole model's int8 TFLite itself (its own partitioning: what it
leaves on the CPU, its NPU cycles and latency), where edgecc can write the whole model as
TFLite (``whole_model``: regions joined by int8 MEAN; a model with layer norm / softmax /
GELU is "n/a" with the reason). Prints a table and writes ``bench/results/npu.json``.

    python bench/npu.py [--models resnet20,mobilenet_v2,digits,bert] [--devices ...]

Measured (2026-11-30, Vela 5.2.0): ResNet-20, MobileNetV2-style and digits are one region with
100% of MACs on the NPU (U55-128: 544,510 / 695,436 / 14,288 cycles, equal to Vela's
whole-model peer). BERT (2 layers, seq 16): 100% of MACs, 20/118 ops on the NPU (the 12
linears, 4 attention batch matmuls, 2 softmaxes and 2 GELU tables; was 16/118 with softmax and
GELU on the CPU), 14 regions, U55-128 116,372 cycles (was 86,144 without softmax / GELU),
U65-256 228,484; its peer is n/a: the whole-model writer has no TFLite form for the
embedding gather, layer norm and the int64 / bool attention-mask ops between the regions.

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


def peer(res, device: str) -> dict:
    """Vela partitioning the whole model's int8 TFLite itself (None where edgecc cannot
    write the whole model as TFLite, with the reason)."""
    from edgecc.targets.npu.lower import exported_decisions, relax_partition
    from edgecc.targets.npu.presets import resolve
    from edgecc.targets.npu.tflite_writer import write_tflite
    from edgecc.targets.npu.vela_compile import compile_region
    from edgecc.targets.npu.whole_model import whole_model_region

    desc = resolve(device)
    exported, _ = exported_decisions(res.program, desc)
    parted = relax_partition(exported, desc, True, lambda regions: [])
    region, why = whole_model_region(parted.module["main"],
                                     {r.name: r for r in parted.regions})
    if region is None:
        return {"peer_npu_cycles": None, "peer_reason": why}
    result = compile_region(write_tflite(region), desc, require_npu=False)
    perf = result.performance
    return {"peer_npu_cycles": perf["npu_cycles"], "peer_latency_s": perf["latency_s"],
            "peer_npu_ops": perf["npu_ops"], "peer_cpu_ops": perf["cpu_ops"],
            "peer_cpu_operators": list(result.cpu_operators), "peer_reason": ""}


def run(model_name: str, device: str) -> dict:
    model, calib = MODELS[model_name]()
    pipeline = PIPELINE if model_name != "bert" else "quantize{scheme=w8a8},fuse,dce"
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        res = edgecc.compile(model, target=f"npu:{device}", example_inputs=calib[0],
                             calibration=calib, pipeline=pipeline,
                             output_dir=os.path.join(d, "out"), verify=False)
        seconds = time.perf_counter() - t0
        theirs = peer(res, device)
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
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "npu.json"), "w") as f:
        json.dump({"vela": "5.2.0", "pipeline": PIPELINE, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
