"""edgecc under torch.distributed: 2 gloo processes on the CPU (torch.multiprocessing.spawn).

One spawn runs every multi-process check in sequence (starting a process costs seconds):
reduced statistics equal the single-process ones computed here in the parent, a compile
under 2 ranks writes only from rank 0 and gives rank 0 the single-process program, and a
rank that fails makes the other stop with RankFailedError, nothing written; fine-tuning
under DDP and under FSDP2 (``shard=true``) equals one process on the concatenated batches.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import socket
import subprocess
import sys

import pytest
import torch

import edgecc
from edgecc import distributed
from edgecc.passes.quantize.gptq import HessianAccumulator
from edgecc.passes.quantize.observers import make_observer
from edgecc.train import FinetuneOptions, finetune

WORLD = 2
PIPELINE = "quantize{scheme=w8a8,algorithm=gptq}"


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(),
                               torch.nn.Linear(32, 8)).eval()


def _batches(n: int = 6) -> list[tuple[torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(4, 16, generator=g) * (1 + i),) for i in range(n)]


def _stats(batches: list[tuple[torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Observer ranges and a GPTQ Hessian over ``batches``, reduced across ranks."""
    minmax, pct, acc = make_observer("minmax"), make_observer("percentile"), \
        HessianAccumulator()
    for (x,) in batches:
        minmax.update(x)
        pct.update(x)
        acc.update(x)
    distributed.reduce_observer(minmax)
    distributed.reduce_observer(pct)
    distributed.reduce_hessian(acc)
    lo, hi = minmax.range()
    plo, phi = pct.range()
    return {"lo": lo, "hi": hi, "plo": plo, "phi": phi, "h": acc.h,
            "n": torch.tensor(acc.n)}


def _weights(program: edgecc.Program) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in program.graph_module.state_dict().items()}


def _train_data() -> tuple[list[tuple[torch.Tensor]], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(2)
    xs = [(torch.randn(4, 16, generator=g),) for _ in range(8)]
    ys = [torch.randint(0, 8, (4,), generator=g) for _ in range(8)]
    return xs, ys


TRAIN = FinetuneOptions(epochs=2, lr=0.05, optimizer="sgd", shuffle=False, learn_scales=True)


class _Scaled(torch.nn.Module):
    """The MLP times a learned 0-d scale (as QAT's per-tensor activation scales: FSDP2
    cannot shard a 0-d parameter, so it stays whole and is reduced by hand)."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = _model()
        self.scale = torch.nn.Parameter(torch.tensor(1.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x) * self.scale


def _finetuned(batches: list[tuple[torch.Tensor]], labels: list[torch.Tensor],
               options: FinetuneOptions = TRAIN) -> dict[str, torch.Tensor]:
    program = edgecc.trace(_Scaled().eval(), batches[0])  # static batch: 4 per rank, 8 here
    finetune(program, batches, labels=labels, options=options, progress=False)
    return _weights(program)


class _Blocks(torch.nn.Module):
    """Two residual MLP blocks at ``layers.N`` (what quantize-blockwise walks)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(),
                                torch.nn.Linear(32, 16)) for _ in range(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = x + layer(x)
        return x


def _blockwise(batches: list[tuple[torch.Tensor]]) -> dict[str, dict[str, torch.Tensor]]:
    """Dequantized weights of quantize-blockwise (GPTQ, AWQ) over this rank's batches."""
    from edgecc.pass_base import PassContext
    from edgecc.quant import is_dequantize, node_params

    out = {}
    program = edgecc.trace(_Blocks().eval(), batches[0])
    for algorithm in ("gptq", "awq"):
        p = edgecc.PassManager(f"quantize-blockwise{{algorithm={algorithm},group_size=16,"
                               "error_batches=0}")(
            program.copy(), context=PassContext(calibration=batches, progress=False)).program
        out[algorithm] = {str(n.args[0].target): node_params(n, p.tensor).dequantize(
            p.tensor(n.args[0])) for n in p.nodes("call_function")
            if is_dequantize(n) and p.is_constant(n.args[0])}
    return out


def _worker(rank: int, port: int, tmp: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD, timeout=datetime.timedelta(seconds=60))
    try:
        ref = torch.load(os.path.join(tmp, "reference.pt"), weights_only=True)
        assert distributed.is_distributed() and distributed.world_size() == WORLD
        assert distributed.rank() == rank and distributed.is_main() == (rank == 0)

        # 1. statistics of this rank's shard, reduced == single process over all batches
        mine = distributed.shard(_batches())
        assert len(mine) == 3
        got = _stats(mine)
        for k in ("lo", "hi", "plo", "phi", "n"):
            assert torch.equal(got[k], ref["stats"][k]), k
        # the Hessian is a float64 mean: the same up to float64 rounding of the sum order
        torch.testing.assert_close(got["h"], ref["stats"]["h"], rtol=1e-12, atol=1e-14)
        assert torch.equal(distributed.all_reduce_sum(torch.tensor([rank + 1.0])),
                           torch.tensor([3.0]))
        odd = distributed.all_gather_cat(torch.arange(rank + 1))  # uneven sizes
        assert odd.tolist() == [0, 0, 1]
        assert distributed.shard(list(range(5))) == ([0, 2, 4] if rank == 0 else [1, 3])

        # 2. a compile under 2 ranks: rank 0 writes the single-process result, rank 1 nothing
        out = os.path.join(tmp, "out")
        res = edgecc.compile(_model(), "host", pipeline=PIPELINE,
                             example_inputs=(torch.randn(4, 16),), calibration=_batches(),
                             output_dir=out if rank == 0 else os.path.join(tmp, "never"),
                             progress=False, verify=False)
        assert not os.path.exists(os.path.join(tmp, "never"))
        if rank == 0:
            assert res.report["distributed"]["world_size"] == WORLD
            assert res.report["distributed"]["devices"] == ["cpu", "cpu"]
            weights = _weights(res.program)
            assert weights.keys() == ref["weights"].keys()
            for k, w in weights.items():
                # activation scales (min/max) exactly; GPTQ weights to float32 rounding
                torch.testing.assert_close(w, ref["weights"][k], rtol=1e-5, atol=1e-6,
                                           msg=k)
        else:
            assert res.artifacts == [] and res.report["written"] is False

        # 3. rank 1 fails while loading: rank 0 stops with RankFailedError, nothing written
        bad = os.path.join(tmp, "failed")
        model = _model() if rank == 0 else os.path.join(tmp, "missing.pt2")
        try:
            edgecc.compile(model, "host", pipeline=PIPELINE,
                           example_inputs=(torch.randn(4, 16),), calibration=_batches(),
                           output_dir=bad, progress=False, verify=False)
        except distributed.RankFailedError as exc:
            assert rank == 0 and "rank(s) 1 of 2" in str(exc) and "missing.pt2" in str(exc)
        except edgecc.errors.ModelLoadError:
            assert rank == 1
        else:
            raise AssertionError("the failed run returned")
        assert not os.path.exists(bad)

        # 4. data-parallel fine-tuning: 2 ranks x 4 rows per step == 1 process x 8 rows,
        # with DDP and with FSDP2 (shard=true); gradient averaging order: float rounding
        xs, ys = _train_data()
        for options in (TRAIN, dataclasses.replace(TRAIN, shard=True)):
            got = _finetuned(distributed.shard(xs), distributed.shard(ys), options)
            assert any(w.dim() == 0 for w in got.values())
            for k, w in got.items():
                torch.testing.assert_close(w, ref["trained"][k], rtol=1e-5, atol=1e-6,
                                           msg=f"{k} shard={options.shard}")

        # 5. quantize-blockwise on this rank's batches: GPTQ (Hessians all-reduced) == one
        # process on all batches; AWQ (rows gathered in rank order: every row kept, the
        # search sums them in another order) the same weights up to a flipped tie
        got = _blockwise(distributed.shard(_batches()))
        want = ref["blockwise"]
        assert got["gptq"].keys() == want["gptq"].keys() and len(got["gptq"]) == 4
        for k, w in got["gptq"].items():
            torch.testing.assert_close(w, want["gptq"][k], rtol=1e-5, atol=1e-6, msg=k)
        same = sum(int(torch.isclose(w, want["awq"][k]).sum()) for k, w in got["awq"].items())
        assert same / sum(w.numel() for w in want["awq"].values()) >= 0.98
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_reduce_exactly_train_in_step_and_only_rank0_writes(tmp_path):
    single = edgecc.compile(_model(), "host", pipeline=PIPELINE,
                            example_inputs=(torch.randn(4, 16),), calibration=_batches(),
                            output_dir=str(tmp_path / "single"), progress=False, verify=False)
    xs, ys = _train_data()
    pairs = [(torch.cat((xs[i][0], xs[i + 1][0])),) for i in range(0, 8, 2)]
    trained = _finetuned(pairs, [torch.cat((ys[i], ys[i + 1])) for i in range(0, 8, 2)])
    torch.save({"stats": _stats(_batches()), "weights": _weights(single.program),
                "trained": trained, "blockwise": _blockwise(_batches())},
               tmp_path / "reference.pt")
    torch.multiprocessing.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD)
    assert sorted(os.listdir(tmp_path)) == ["out", "reference.pt", "single"]
    assert os.path.exists(tmp_path / "out" / "manifest.json")


def test_single_process_helpers_are_the_identity():
    t = torch.tensor([1.0, -2.0])
    assert not distributed.is_distributed() and distributed.is_main()
    assert distributed.world_size() == 1 and distributed.rank() == 0
    assert distributed.all_reduce_sum(t) is t and distributed.all_reduce_max(t) is t
    assert distributed.shard([1, 2, 3]) == [1, 2, 3]
    distributed.barrier()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_gpu_is_one_line_exit_2(tmp_path):
    torch.export.save(torch.export.export(_model(), (torch.randn(4, 16),)),
                      str(tmp_path / "m.pt2"))
    r = subprocess.run([sys.executable, "-m", "edgecc", "compile", str(tmp_path / "m.pt2"),
                        "-t", "host", "-o", str(tmp_path / "out"), "--device", "cuda"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "CUDA is not available" in lines[0], r.stderr
    assert not (tmp_path / "out").exists()
    with pytest.raises(distributed.DeviceUnavailableError):
        edgecc.compile(_model(), "host", example_inputs=(torch.randn(4, 16),), device="cuda:0")
    with pytest.raises(distributed.DeviceUnavailableError, match="not a device name"):
        distributed.resolve_device("gpu7")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_calibration_matches_cpu(tmp_path):
    kw = dict(pipeline=PIPELINE, example_inputs=(torch.randn(4, 16),),
              calibration=_batches(), progress=False)
    cpu = edgecc.compile(_model(), "host", output_dir=str(tmp_path / "cpu"), **kw)
    gpu = edgecc.compile(_model(), "host", output_dir=str(tmp_path / "gpu"), device="cuda",
                         **kw)
    assert gpu.report["distributed"]["device"].startswith("cuda")
    for k, w in _weights(gpu.program).items():
        assert w.device.type == "cpu"
        torch.testing.assert_close(w, _weights(cpu.program)[k], rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("pipeline", ["quantize{scheme=w8a8},qat{epochs=2,lr=1e-3}",
                                      "prune{sparsity=0.5},distill{epochs=2,lr=1e-3}",
                                      "sparse-finetune{sparsity=0.5,epochs=2,lr=1e-3}"])
def test_training_passes_run_on_cuda_and_match_cpu(pipeline):
    from edgecc.pass_base import PassContext
    from edgecc.pass_manager import PassManager

    program = edgecc.trace(_model(), (torch.randn(4, 16),))
    out, losses = {}, {}
    for dev in ("cpu", "cuda"):
        ctx = PassContext(calibration=_batches(), original=program, progress=False,
                          device=distributed.resolve_device(dev))
        res = PassManager(pipeline)(program.copy(), context=ctx)
        stats = res.stats["passes"][-1]["stats"]
        assert stats["device"].startswith(dev)
        assert all(t.device.type == "cpu" for t in res.program.graph_module.state_dict()
                   .values())
        out[dev], losses[dev] = res.program, stats["loss"]
    # GPU kernels round differently (a fake-quant tie may flip): the trained programs agree
    # in their losses and outputs, not bit for bit
    assert losses["cuda"] == pytest.approx(losses["cpu"], rel=1e-2, abs=1e-4)
    for (x,) in _batches(3):
        a, b = out["cpu"].run(x)[0], out["cuda"].run(x)[0]
        assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), 0) > 0.999
