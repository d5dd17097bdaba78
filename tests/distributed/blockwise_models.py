"""What the block-by-block GPTQ and AWQ tests share: a tiny transformers Llama (2 blocks,
14 linears), its calibration batches, and the comparisons of block-by-block codes with the
whole-model ``quantize`` pass's program."""

from __future__ import annotations

from typing import Any

import torch

from edgecc.quant import is_dequantize, node_params

GROUP = 16  # group size: divides hidden 32 and intermediate 64
LINEARS = 14  # 2 blocks x (q, k, v, o, gate, up, down)


def llama(uneven_norms: bool = False) -> torch.nn.Module:
    """The tiny Llama (seed 0); ``uneven_norms``: the norms' weights scaled per channel by
    0.1 .. 3.1, so AWQ has something to find."""
    import transformers

    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, max_position_embeddings=32)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).eval()
    if uneven_norms:
        with torch.no_grad():
            for layer in model.model.layers:
                layer.input_layernorm.weight.mul_(torch.rand(32) * 3 + 0.1)
                layer.post_attention_layernorm.weight.mul_(torch.rand(32) * 3 + 0.1)
    return model


class Logits(torch.nn.Module):
    """``ids -> logits`` (what is traced)."""

    def __init__(self, m: torch.nn.Module):
        super().__init__()
        self.m = m

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.m(input_ids=ids, use_cache=False).logits


def batches() -> list[tuple[torch.Tensor]]:
    """3 calibration batches of 2 x 12 token ids (seed 1)."""
    g = torch.Generator().manual_seed(1)
    return [(torch.randint(0, 64, (2, 12), generator=g),) for _ in range(3)]


def dequantized(program: Any) -> dict[str, torch.Tensor]:
    """Quantized weight constant's name -> its dequantized value, for every dequantize."""
    return {str(n.args[0].target): node_params(n, program.tensor).dequantize(
        program.tensor(n.args[0]))
        for n in program.nodes("call_function")
        if is_dequantize(n) and program.is_constant(n.args[0])}


def assert_codes_are_the_programs(codes: dict[str, tuple[torch.Tensor, Any]],
                                  model: torch.nn.Module, program: Any) -> None:
    """Every block-by-block code dequantizes to exactly the quantized ``program``'s weight
    (traced as ``Logits``: constants ``m_model_layers_<block>_<path>_qweight``), and
    ``model`` holds that dequantized weight in place."""
    deq = dequantized(program)
    assert len(codes) == LINEARS and len(deq) == LINEARS
    for name, (q, params) in codes.items():
        key = "m_model_layers_" + name.replace(".", "_") + "_qweight"
        got = params.dequantize(q)
        assert torch.equal(got, deq[key]), name
        blk, *path = name.split(".")
        linear = model.model.layers[int(blk)].get_submodule(".".join(path))
        assert torch.equal(linear.weight.detach(), got), name


def assert_same_program_weights(got_program: Any, want_program: Any) -> None:
    """The two programs' dequantized weights are identical (all 14 linears)."""
    got, want = dequantized(got_program), dequantized(want_program)
    assert len(got) == LINEARS and got.keys() == want.keys()
    for k in got:
        assert torch.equal(got[k], want[k]), k


def same_fraction(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The fraction of weights of ``a`` that ``b`` has to rtol 1e-3 (a GPU run against the
    CPU run: float rounding may flip a rounding tie)."""
    assert a.keys() == b.keys()
    same = sum(int(torch.isclose(a[k], b[k], rtol=1e-3, atol=1e-6).sum()) for k in a)
    return same / sum(v.numel() for v in a.values())


def codes_dequantized(codes: dict[str, tuple[torch.Tensor, Any]]) -> dict[str, torch.Tensor]:
    return {name: params.dequantize(q) for name, (q, params) in codes.items()}


def assert_bounded_peaks(stats: dict[str, Any]) -> None:
    """Bounded device memory: every block peaks alike (one block and the activations at a
    time); at 1B scale bench/gpu.py measures 2.07 GiB for a 4.6 GiB model."""
    peaks = stats["peak_device_bytes_per_block"]
    assert peaks[0] > 0 and max(peaks) <= 1.1 * min(peaks) + 2**20
