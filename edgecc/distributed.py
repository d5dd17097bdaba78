"""Running edgecc under ``torchrun``: helpers on top of ``torch.distributed`` (no launcher,
no communication layer of our own), and the device a compile runs its passes on.

Under ``torchrun --nproc_per_node=N -m edgecc compile ...`` (or any program that called
``torch.distributed.init_process_group``) every rank runs the same pipeline on its own
shard of the calibration data; the passes reduce their statistics where they finalize them,
so each rank ends with the statistics of all the data, and only rank 0 writes the output::

    observer min / max        all_reduce MIN / MAX          exact
    observer sample pools     all_gather, then subsampled   percentile / mse / entropy
    GPTQ Hessian 2/n Σ x xᵀ   all_reduce SUM of n·H and n   exact up to float64 rounding
    AWQ activation samples    all_gather                    the same rows, rank order

Training (``edgecc.train.finetune``, used by ``qat``, ``distill`` and ``sparse-finetune``)
is data-parallel through PyTorch's ``DistributedDataParallel``, or FSDP2's ``fully_shard``
with ``shard=true``; ``average_gradients`` below only covers trainable tensors that are
buffers rather than parameters. ``move_module`` moves an exported graph module to a device
completely (lifted constants, ``device=`` of traced factory ops).

Without a process group (or with world size 1) every helper is the identity: one process is
the same code path.

Sharding (``shard``): rank ``r`` of ``W`` takes items ``r, r + W, r + 2W, ...`` of the
calibration batches. When ``W`` does not divide the number of batches the first
``len % W`` ranks get one batch more (the split is never padded or dropped, so the reduced
statistics are those of exactly the data given); fewer batches than ranks is an error,
since a rank with no data has nothing to contribute.

Failures (``agree``): a rank that raises before a collective would leave the others waiting
in it. ``agree(exc)`` is a collective every rank reaches with its own outcome (``None`` or
the exception); if any rank failed, every rank raises ``RankFailedError`` naming the failed
ranks and their one-line errors, so nothing is written anywhere. A rank that dies inside a
collective (killed, out of memory) is handled by torch: ``torchrun`` stops the other workers
and gloo / NCCL collectives time out (``init_process_group(timeout=...)``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

from edgecc.errors import EdgeccError, one_line

T = TypeVar("T")


class DeviceUnavailableError(EdgeccError):
    """The requested device (``cuda``, ``cuda:N``) does not exist on this machine."""


class RankFailedError(EdgeccError):
    """Another rank of a distributed run failed, so this one stops too."""


# -- who am I ---------------------------------------------------------------------------------

def is_distributed() -> bool:
    """A process group is initialized with more than one rank."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def init_from_env(device: torch.device) -> bool:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1 in the environment)
    unless one exists: NCCL for CUDA devices, gloo for the CPU. Returns whether it joined."""
    import os

    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return True


def is_main() -> bool:
    """Rank 0 (or no process group): the rank that writes outputs and shows progress."""
    return rank() == 0


# -- reductions -------------------------------------------------------------------------------

def _comm_device() -> torch.device:
    """Where collectives run: the rank's CUDA device for NCCL, else the CPU (gloo)."""
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_reduce(tensor: torch.Tensor, op: Any) -> torch.Tensor:
    if not is_distributed():
        return tensor
    import torch.distributed as dist

    t = tensor.detach().to(_comm_device()).clone()
    dist.all_reduce(t, op=op)
    return t.to(tensor.device)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum over ranks (a new tensor on ``tensor``'s device)."""
    import torch.distributed as dist

    return _all_reduce(tensor, dist.ReduceOp.SUM) if is_distributed() else tensor


def all_reduce_min(tensor: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    return _all_reduce(tensor, dist.ReduceOp.MIN) if is_distributed() else tensor


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    return _all_reduce(tensor, dist.ReduceOp.MAX) if is_distributed() else tensor


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` concatenated along dim 0 in rank order; the first dims may
    differ between ranks (padded for the collective, trimmed after)."""
    if not is_distributed():
        return tensor
    import torch.distributed as dist

    dev = _comm_device()
    n = torch.tensor([tensor.shape[0]], device=dev)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=dev)
    padded[: tensor.shape[0]] = tensor.detach().to(dev)
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes)]).to(tensor.device)


def broadcast_object(obj: T, src: int = 0) -> T:
    """``obj`` as rank ``src`` holds it, on every rank."""
    if not is_distributed():
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def average_gradients(params: Sequence[torch.Tensor]) -> None:
    """Replace every ``p.grad`` by its mean over ranks (one flat all_reduce; a missing
    gradient counts as zeros, so ranks stay in step). Training uses DDP / FSDP; this is for
    the trainable tensors they do not handle (buffers of the graph module)."""
    if not is_distributed() or not params:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params]) if params else torch.zeros(0)
    flat = all_reduce_sum(flat) / world_size()
    i = 0
    for p in params:
        n = p.grad.numel()
        p.grad.copy_(flat[i:i + n].view_as(p.grad))
        i += n


def broadcast_tensors(tensors: Sequence[torch.Tensor], src: int = 0) -> None:
    """Overwrite ``tensors`` in place with rank ``src``'s values (random initialisations)."""
    if not is_distributed():
        return
    import torch.distributed as dist

    with torch.no_grad():
        for t in tensors:
            buf = t.detach().to(_comm_device()).clone()
            dist.broadcast(buf, src=src)
            t.copy_(buf.to(t.device))


# -- data -------------------------------------------------------------------------------------

def shard(items: Sequence[T]) -> list[T]:
    """This rank's share of ``items`` (strided: rank r takes r, r+W, ...; see the module
    docstring for uneven splits)."""
    items = list(items)
    w, r = world_size(), rank()
    if w == 1:
        return items
    if len(items) < w:
        raise EdgeccError(f"{len(items)} calibration batch(es) for {w} ranks: every rank needs "
                          f"at least one; give >= {w} batches or run fewer processes")
    return items[r::w]


# -- failures ---------------------------------------------------------------------------------

def agree(error: BaseException | None, what: str = "the run") -> None:
    """Collective: raise on every rank if any rank failed (``error`` is this rank's)."""
    if not is_distributed():
        if error is not None:
            raise error
        return
    import torch.distributed as dist

    mine = None if error is None else one_line(error) if not isinstance(error, EdgeccError) \
        else str(error)
    outcomes: list[Any] = [None] * world_size()
    dist.all_gather_object(outcomes, mine)
    if error is not None:
        raise error
    failed = [(r, m) for r, m in enumerate(outcomes) if m is not None]
    if failed:
        raise RankFailedError(
            f"{what} failed on rank(s) {', '.join(str(r) for r, _ in failed)} of {world_size()} "
            f"({'; '.join(f'rank {r}: {m}' for r, m in failed)}); nothing was written")


def barrier(what: str = "the run") -> None:
    """A barrier that also fails if some rank reports a failure through ``agree``."""
    agree(None, what)


def collective(what: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorate a function every rank calls (``compile``): when it returns or raises on any
    rank, all ranks learn it; one failure makes every rank raise (``agree``)."""

    def wrap(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> T:
            if not is_distributed():
                return fn(*args, **kwargs)
            try:
                out = fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001  (re-raised by agree)
                agree(exc, what)
                raise
            agree(None, what)
            return out

        return run

    return wrap


# -- the statistics the passes finalize -------------------------------------------------------

def reduce_observer(observer: Any) -> None:
    """Make ``observer`` (passes/quantize/observers.py) hold the statistics of every rank's
    data: min / max reduced exactly; sample pools gathered and cut back to ``max_samples``
    (uniformly, with the observer's own generator); the count of batches summed. The
    moving-average observer's lo / hi are averaged over ranks (an EMA has no exact merge).
    The statistics end on the CPU (calibration may have run on a GPU)."""
    if is_distributed():
        _reduce_observer(observer)
    for name in ("lo", "hi", "samples"):  # ranges are computed on the CPU
        value = getattr(observer, name)
        if isinstance(value, torch.Tensor):
            setattr(observer, name, value.cpu())


def _reduce_observer(observer: Any) -> None:
    if observer.lo is None:
        raise EdgeccError(f"rank {rank()} observed no calibration data")
    moving = type(observer).__name__ == "MovingAverageObserver"
    if moving:
        observer.lo = all_reduce_sum(observer.lo) / world_size()
        observer.hi = all_reduce_sum(observer.hi) / world_size()
    else:
        observer.lo = all_reduce_min(observer.lo)
        observer.hi = all_reduce_max(observer.hi)
    observer.seen = int(all_reduce_sum(torch.tensor([observer.seen])).item())
    if observer.samples is not None:
        pool = all_gather_cat(observer.samples)
        if pool.numel() > observer.max_samples:
            # the same generator state on every rank, so every rank keeps the same pool
            idx = torch.randperm(pool.numel(), generator=torch.Generator().manual_seed(0))
            pool = pool[idx[: observer.max_samples].to(pool.device)]
        observer.samples = pool


def reduce_hessian(acc: Any) -> None:
    """Make a ``HessianAccumulator`` (``h = 2/n Σ x xᵀ`` over its ``n`` rows) hold the
    Hessian of all ranks' rows: ``h = Σ_r n_r h_r / Σ_r n_r`` (float64)."""
    if not is_distributed():
        return
    n = all_reduce_sum(torch.tensor([float(acc.n)], dtype=torch.float64))
    total = acc.h * acc.n if acc.h is not None else None
    if total is None:
        raise EdgeccError(f"rank {rank()} saw no rows for a GPTQ Hessian")
    total = all_reduce_sum(total)
    acc.n = int(n.item())
    acc.h = total / acc.n


def gather_rows(samples: list[torch.Tensor]) -> list[torch.Tensor]:
    """AWQ's kept activation rows of one layer input: this rank's, then every rank's (on the
    CPU, where the search runs)."""
    mine = torch.cat(samples).cpu() if samples else torch.zeros(0)
    return [all_gather_cat(mine)] if is_distributed() else [s.cpu() for s in samples]


# -- devices ----------------------------------------------------------------------------------

def resolve_device(spec: str | torch.device | None) -> torch.device:
    """``None`` / ``"cpu"`` / ``"cuda"`` / ``"cuda:N"`` -> a device that exists here. Under
    torchrun, a bare ``"cuda"`` means this rank's GPU (``LOCAL_RANK``)."""
    import os

    if spec is None:
        return torch.device("cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError as exc:
        raise DeviceUnavailableError(f"device '{spec}' is not a device name: use cpu, cuda or "
                                     "cuda:N") from exc
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise DeviceUnavailableError(f"device '{spec}' is not supported: use cpu, cuda or "
                                     "cuda:N")
    if not torch.cuda.is_available():
        raise DeviceUnavailableError(
            f"device '{spec}' requested but CUDA is not available here (torch "
            f"{torch.__version__}{', a CPU-only build' if torch.version.cuda is None else ''}"
            "): install a CUDA build of torch on a GPU machine, or use --device cpu")
    index = dev.index if dev.index is not None else int(os.environ.get("LOCAL_RANK", 0))
    if index >= torch.cuda.device_count():
        raise DeviceUnavailableError(f"device '{spec}': this machine has "
                                     f"{torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", index)


def move_module(module: torch.nn.Module, device: torch.device | str) -> torch.nn.Module:
    """``module.to(device)``, and also what ``Module.to`` leaves behind in an exported graph
    module: plain tensor attributes (lifted constants such as ``_tensor_constant0``) and the
    ``device=`` of factory ops traced on the CPU (``aten.ones(..., device=cpu)`` building an
    attention mask), rewritten to ``device`` (and back to the CPU when moved back, so the
    graph is the same after a round trip). Parameters keep their identity (optimizers
    holding them stay valid).

    Off the CPU, every ``aten.view`` also becomes ``aten.reshape`` (:func:`portable_views`):
    export turns ``reshape`` into ``view`` when the traced (CPU) strides allow it, and some
    of those strides are a CPU kernel's choice — ``scaled_dot_product_attention`` traced on
    the CPU returns a layout whose ``transpose(1, 2)`` is contiguous, so the graph reads
    ``view(permute(sdpa(...)), [B, T, H·D])``, which CUDA's SDPA kernels (and the CPU's
    math kernel) do not make viewable: "view size is not compatible with input tensor's
    size and stride". ``reshape`` is the same values (a view where possible, else a copy;
    the graph is functional, so nothing depends on the aliasing)::

        on the CPU:   %v = aten.view(%attn_t, [2, 8, 384])
        on cuda:      %v = aten.reshape(%attn_t, [2, 8, 384])   (view again when moved back)
    """
    import torch.fx as fx

    dev = torch.device(device)
    module.to(dev)
    for m in module.modules():
        for name, value in list(vars(m).items()):
            if isinstance(value, torch.Tensor) and value.device != dev:
                setattr(m, name, value.to(dev))
        if isinstance(m, fx.GraphModule):  # factory ops traced with device=cpu (masks, ...)
            changed = portable_views(m.graph, dev.type != "cpu")
            for node in m.graph.nodes:
                if node.op != "call_function":
                    continue
                d = node.kwargs.get("device")
                if isinstance(d, torch.device) and d != dev:
                    node.update_kwarg("device", dev)
                    changed = True
                if any(isinstance(a, torch.device) and a != dev for a in node.args):
                    node.args = tuple(dev if isinstance(a, torch.device) else a
                                      for a in node.args)
                    changed = True
            if changed:
                m.recompile()
    return module


_WAS_VIEW = "edgecc_view_as_reshape"


def portable_views(graph: Any, portable: bool = True) -> bool:
    """``portable``: every ``aten.view.default`` becomes ``aten.reshape.default`` (marked in
    its meta); else the marked ones become views again. Returns whether anything changed.
    See :func:`move_module` for why."""
    changed = False
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        if portable and node.target is torch.ops.aten.view.default:
            node.target = torch.ops.aten.reshape.default
            node.meta[_WAS_VIEW] = True
            changed = True
        elif not portable and node.meta.pop(_WAS_VIEW, False):
            node.target = torch.ops.aten.view.default
            changed = True
    return changed


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """What the manifest records about where a compile ran."""

    world_size: int
    rank: int
    device: str
    devices: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"world_size": self.world_size, "device": self.device,
                "devices": list(self.devices)}


def run_info(device: torch.device) -> RunInfo:
    """This run's world size and every rank's device (gathered)."""
    name = str(device) + (f" ({torch.cuda.get_device_name(device)})"
                          if device.type == "cuda" else "")
    if is_distributed():
        import torch.distributed as dist

        names: list[Any] = [None] * world_size()
        dist.all_gather_object(names, name)
    else:
        names = [name]
    return RunInfo(world_size(), rank(), str(device), tuple(names))


__all__ = ["DeviceUnavailableError", "RankFailedError", "RunInfo", "agree", "all_gather_cat",
           "all_reduce_max", "all_reduce_min", "all_reduce_sum", "average_gradients", "barrier",
           "broadcast_object", "broadcast_tensors",
           "collective",
           "gather_rows", "init_from_env", "is_distributed", "is_main", "move_module",
           "portable_views", "rank",
           "reduce_hessian",
           "reduce_observer", "resolve_device", "run_info", "shard", "world_size"]
