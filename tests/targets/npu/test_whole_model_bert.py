"""The mixed int8 / float32 whole-model TFLite (the bench peer for transformers): a tiny
BERT-style block (token + position embedding, layer norm, int8 linears, residual add, a mask
input) is written whole with its mask code folded for an all-ones mask; LiteRT runs it equal to
edgecc's program within float rounding, and Vela puts the linears on the NPU and the float ops
on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgecc

pytest.importorskip("ai_edge_litert")


class TinyBlock(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.tok = torch.nn.Embedding(32, 16)
        self.pos = torch.nn.Embedding(8, 16)
        self.ln1 = torch.nn.LayerNorm(16)
        self.fc1 = torch.nn.Linear(16, 32)
        self.fc2 = torch.nn.Linear(32, 16)
        self.ln2 = torch.nn.LayerNorm(16)

    def forward(self, ids, mask):
        pos = torch.arange(ids.shape[1]).unsqueeze(0)
        h = self.ln1(self.tok(ids) + self.pos(pos))
        keep = (mask > 0).unsqueeze(-1)
        h = torch.where(keep, h, torch.zeros_like(h))
        return self.ln2(h + self.fc2(torch.relu(self.fc1(h))))


def test_mixed_whole_model_matches_program_and_vela_splits_it():
    from ai_edge_litert.interpreter import Interpreter

    from edgecc.pass_base import PassContext
    from edgecc.pipeline_text import PassStep
    from edgecc.registry import default_target_registry
    from edgecc.targets.npu.legalize import QuantizeLayerOutputs
    from edgecc.targets.npu.lower import exported_decisions, relax_partition
    from edgecc.targets.npu.presets import resolve
    from edgecc.targets.npu.tflite_writer import write_tflite
    from edgecc.targets.npu.vela_compile import compile_region
    from edgecc.targets.npu.whole_model import (fold_fixed_inputs, mixed_whole_model_region,
                                                whole_model_region)

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(1, 8, dtype=torch.long)
    calib = [(torch.randint(0, 32, (1, 8), generator=g), mask) for _ in range(2)]
    # the program as -t npu lowers it (pipeline, then the NPU's legalization), without
    # building the artifact
    ctx = PassContext(calibration=calib, target=default_target_registry().get("npu")())
    prog = edgecc.trace(TinyBlock().eval(), calib[0])
    prog = edgecc.PassManager("quantize{scheme=w8a8},fuse,dce")(prog, context=ctx).program
    legalize = [PassStep(QuantizeLayerOutputs, QuantizeLayerOutputs.Options())]
    prog = edgecc.PassManager(legalize)(prog, context=ctx).program
    desc = resolve("ethos-u55-128")
    exported, _ = exported_decisions(prog, desc)
    parted = relax_partition(exported, desc, True, lambda regions: [])
    regions = {r.name: r for r in parted.regions}
    region, why = whole_model_region(parted.module["main"], regions)
    assert region is None and why  # layer norm etc.: no int8-only form
    folded = fold_fixed_inputs(parted.module, {"mask": mask.numpy()})
    region, why = mixed_whole_model_region(folded["main"], regions)
    assert region is not None, why
    buf = write_tflite(region)

    it = Interpreter(model_content=buf)
    it.allocate_tensors()
    (inp,) = it.get_input_details()
    assert list(inp["shape"]) == [1, 8] and inp["dtype"] == np.int32
    for seed in (5, 6):
        ids = torch.randint(0, 32, (1, 8), generator=torch.Generator().manual_seed(seed))
        ref = prog.run(ids, mask)[0].detach().numpy()
        it.set_tensor(inp["index"], ids.numpy().astype(np.int32))
        it.invoke()
        out = it.get_tensor(it.get_output_details()[0]["index"])
        # same int8 regions, float ops in float32: differences are float rounding that can
        # flip an int8 rounding at a region border (one step of a ~0.05 scale, normalized)
        err = float(np.abs(out - ref).max())
        assert err < 0.05, err

    result = compile_region(buf, desc, require_npu=False)
    perf = result.performance
    assert perf["npu_ops"] > 0 and perf["npu_cycles"] > 0 and perf["cpu_ops"] > 0
    cpu = " ".join(result.cpu_operators)
    assert "GATHER" in cpu and "RSQRT" in cpu and "FULLY_CONNECTED" not in cpu
