"""AWQ scales folded into the operator before the layer group (decoders: RMSNorm weights,
the up projection feeding the gated MLP's product), as GGUF needs: exact in float."""

import torch

from edgecc.pass_base import PassContext
from edgecc.passes import Quantize
from edgecc.passes.quantize.awq_fold import fold_input_scale
from edgecc.passes.quantize.layers import find_layers, set_weight
from tests.targets.gguf import tiny


def _groups(program):
    by_input = {}
    for layer in find_layers(program, embeddings=False):
        by_input.setdefault(layer.input, []).append(layer)
    return by_input


def test_folding_a_scale_and_scaling_the_weights_keeps_the_outputs():
    program = tiny.trace(tiny.llama_gqa(tied=True))
    ids = tiny.token_ids(seed=3)
    before = program.run(ids)[0]
    folded = unfoldable = 0
    g = torch.Generator().manual_seed(0)
    for value, group in list(_groups(program).items()):
        if group[0].name == "lm_head":
            continue
        k = program.tensor(group[0].weight).shape[1]
        s = torch.rand(k, generator=g) + 0.5
        why = fold_input_scale(program, value, [la.node for la in group], 1.0 / s)
        if why:
            unfoldable += 1  # o_proj: its input comes out of a view
            continue
        for la in group:
            set_weight(program, la, program.tensor(la.weight) * s)
        folded += 1
    program.graph.lint()
    program.graph_module.recompile()
    assert folded == 2 * 2 + 2 and unfoldable == 2  # q/k/v, gate/up, down per layer; o_proj
    torch.testing.assert_close(program.run(ids)[0], before, rtol=1e-4, atol=1e-4)


def test_awq_fold_leaves_no_multiply_and_reports_what_did_not_fold():
    program = tiny.trace(tiny.llama_gqa(tied=True))
    calib = [(tiny.token_ids(seed=i),) for i in range(4)]
    result = Quantize()(program.copy(), Quantize.Options(
        scheme="w4a16", group_size=32, algorithm="awq", awq_fold=True, awq_grid=5,
        exclude=("lm_head", "model.embed_tokens")), context=PassContext(calibration=calib))
    names = [str(n.target) for n in result.program.nodes("get_attr")]
    assert not any("awq_inv_scale" in n for n in names)
    assert set(result.stats["awq"].get("not_folded", {})) <= {
        "model.layers.0.self_attn.o_proj", "model.layers.1.self_attn.o_proj"}
