"""Fine-tuning a ``Program``: quantization-aware training and distillation recovery.

``finetune(program, batches, labels=..., teacher=..., options=FinetuneOptions(...))`` trains
the float parameters of the program's graph in place (weights, biases, norms; fake-quant
scales only with ``learn_scales``; never batch-norm running statistics) and returns the mean
loss of each epoch. Students can be pruned (masked weights stay masked), structurally pruned,
low-rank or fake-quantized programs; the teacher is usually the original model.

Loss, for student outputs ``s`` (the first output), teacher outputs ``t`` and labels ``y``::

    alpha · distill(s, t) + beta · CE(s, y) + gamma · Σ_f mse(P_f(s_f), t_f)

* distill — ``kl``: ``T² · KL(softmax(t/T) ‖ softmax(s/T))`` (Hinton et al.), for logits;
  ``mse``: ``mean((s - t)²)``, for embeddings; ``auto`` picks ``kl`` for ``[batch, classes]``;
* task — cross-entropy when labels are given (``beta`` defaults to ``1 - alpha``);
* features — for each node name in ``features`` (present in student and teacher, e.g. a
  layer's output), MSE between the teacher's activation and the student's, mapped through a
  learned linear projector ``P_f`` over the channel axis when pruning made the widths differ
  (FitNets, Romero et al.).

Where it runs: on the device the program's weights are on (``device=`` moves the program,
the teacher and the batches there for the run and back to the CPU after; the passes pass
``context.device``). Under ``torchrun`` the student trains data-parallel through PyTorch:
``DistributedDataParallel`` (gradients averaged over ranks in buckets during backward), or
with ``shard=True`` FSDP2's ``fully_shard`` (parameters, gradients and optimizer state
sharded over ranks; a copy of the student is sharded and the trained full weights are
gathered back into the program after the last step). Trainable tensors that are buffers, not
parameters, of the graph module (DDP / FSDP only handle parameters) have their gradients
averaged by one explicit all-reduce.

``checkpoint=path`` saves weights, optimizer and projector state after every epoch and
resumes from it when the file exists (loaded with ``weights_only=True``); ``on_step(step,
total)`` runs after every optimizer step (gradual pruning schedules, RigL).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

import torch
import torch.nn.functional as F

from edgecc.errors import InputSpecError
from edgecc.progress import progress_iter
from edgecc.quant import is_fake_quantize

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class FinetuneOptions:
    """How to fine-tune: the one set of training options. The ``qat``, ``distill`` and
    ``sparse-finetune`` passes' options extend it (same field names in pipeline text:
    ``distill{epochs=5,lr=1e-3,temperature=2}``), changing defaults where they differ."""

    epochs: int = 3
    lr: float = 1e-4
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: float = 0.0
    temperature: float = 1.0
    alpha: float = 0.5
    loss: Literal["auto", "kl", "mse"] = "auto"
    beta: float | None = None  # task-loss weight; None: 1 - alpha
    gamma: float = 1.0  # feature-loss weight (with ``features``)
    features: tuple[str, ...] = ()  # node names whose activations the student matches
    learn_scales: bool = False
    shuffle: bool = True
    seed: int = 0
    checkpoint: str | None = None  # save after each epoch; resume when it exists
    shard: bool = False  # under torchrun: FSDP (fully_shard) instead of DDP

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.lr <= 0 or self.temperature <= 0:
            raise ValueError("epochs >= 1, lr > 0 and temperature > 0 are required")
        if not 0 <= self.alpha <= 1:
            raise ValueError("alpha must be in [0, 1]")
        if (self.beta is not None and self.beta < 0) or self.gamma < 0:
            raise ValueError("beta and gamma must be >= 0")


BATCH_NORMS = ("_native_batch_norm_legit_no_training", "_native_batch_norm_legit",
               "batch_norm", "native_batch_norm")


def running_statistics(program: Any) -> set[str]:
    """Batch-norm running mean / variance: statistics, never trained by gradient."""
    out = set()
    for n in program.nodes("call_function"):
        if getattr(n.target, "__name__", "").split(".")[0] in BATCH_NORMS:
            out.update(str(a.target) for a in n.args[3:5] if program.is_constant(a))
    return out


def trainable_tensors(program: Any, *, learn_scales: bool) -> list[torch.Tensor]:
    """The float constants training may change (fake-quant scales only if asked; never
    batch-norm running statistics)."""
    scales = {str(n.args[1].target) for n in program.nodes("call_function")
              if is_fake_quantize(n) and program.is_constant(n.args[1])}
    scales |= running_statistics(program)
    out, seen = [], set()
    for node in program.nodes("get_attr"):
        t = program.tensor(node)
        if (not t.is_floating_point() or id(t) in seen or t.dim() == 0 and not learn_scales
                or (str(node.target) in scales and not learn_scales)):
            continue
        seen.add(id(t))
        out.append(t)
    return out


def distillation_loss(s: torch.Tensor, t: torch.Tensor, kind: str, temperature: float
                      ) -> torch.Tensor:
    if kind == "auto":
        kind = "kl" if s.dim() == 2 and s.shape[-1] > 1 else "mse"
    if kind == "kl":
        T = temperature
        return F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), log_target=True,
                        reduction="batchmean") * T * T
    return F.mse_loss(s, t)


def _with_features(program: Any, names: Sequence[str]) -> torch.nn.Module:
    """A module sharing ``program``'s weights that returns (outputs, *features)."""
    import torch.fx as fx

    nodes = {n.name: n for n in program.graph.nodes}
    missing = [n for n in names if n not in nodes]
    if missing:
        raise InputSpecError(f"feature node(s) {', '.join(missing)} not in the program (node "
                             "names are printed by `edgecc inspect`)")
    graph = fx.Graph()
    val_map: dict[Any, Any] = {}
    original = graph.graph_copy(program.graph, val_map)
    graph.output((original, *[val_map[nodes[n]] for n in names]))
    return fx.GraphModule(program.graph_module, graph)


class _Projector(torch.nn.Module):
    """A learned linear map over the channel axis (1 for 4-D maps, else the last)."""

    def __init__(self, cin: int, cout: int, axis: int):
        super().__init__()
        self.axis = axis
        self.weight = torch.nn.Parameter(torch.randn(cout, cin) / cin ** 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.movedim(self.axis, -1) @ self.weight.T).movedim(-1, self.axis)


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def program_device(program: Any) -> torch.device:
    """The device a program's weights are on (the CPU for a weightless one)."""
    gm = program.graph_module
    for t in (*gm.parameters(), *gm.buffers()):
        return t.device
    return torch.device("cpu")


def _to(x: Any, dev: torch.device) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(dev)
    if isinstance(x, (tuple, list)):
        return type(x)(_to(v, dev) for v in x)
    return x


def on_device(dev: torch.device, program: Any, teacher: Any, fn: Callable[[], T]) -> T:
    """Run ``fn`` with ``program`` (and a Program ``teacher``) moved to ``dev``; both are on
    the CPU again afterwards, also when ``fn`` raises."""
    modules = [program.graph_module] + ([teacher.graph_module]
                                        if hasattr(teacher, "graph_module") else [])
    from edgecc.distributed import move_module

    if dev.type == "cpu":
        return fn()
    try:
        for m in modules:
            move_module(m, dev)
        return fn()
    finally:
        for m in modules:
            move_module(m, "cpu")


class _Student(torch.nn.Module):
    """What data parallelism wraps: the student and its feature projectors, so that every
    trained parameter is used inside ``forward`` (DDP / FSDP reduce in backward hooks)."""

    def __init__(self, net: torch.nn.Module, projectors: torch.nn.ModuleList, features: bool):
        super().__init__()
        self.net, self.projectors, self.features = net, projectors, features

    def forward(self, *args: Any) -> tuple[Any, list[torch.Tensor]]:
        out = self.net(*args)
        if not self.features:
            return out, []
        out, *feats = out
        return out, [p(f) for p, f in zip(self.projectors, feats)]


def _parallel(student: _Student, trained: list[torch.Tensor], dev: torch.device,
              shard: bool) -> tuple[torch.nn.Module, list[torch.Tensor], list[torch.Tensor],
                                    Callable[[], None]]:
    """The module to train, the tensors the optimizer steps, the trainable buffers whose
    gradients need an explicit all-reduce, and a function that writes the trained values back
    into the program (FSDP trains a sharded copy)."""
    from edgecc import distributed

    ids = {id(t) for t in trained}
    pnames = [n for n, p in student.named_parameters() if id(p) in ids]
    bnames = [n for n, b in student.named_buffers() if id(b) in ids]
    projector = [p for p in student.projectors.parameters()]
    if not distributed.is_distributed():
        return student, trained + projector, [], lambda: None
    if not shard:
        from torch.nn.parallel import DistributedDataParallel as DDP

        bufs = dict(student.named_buffers())
        model = DDP(student, device_ids=[dev.index] if dev.type == "cuda" else None,
                    broadcast_buffers=False, find_unused_parameters=True)
        return model, trained + projector, [bufs[n] for n in bnames], lambda: None
    import copy

    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    sharded = copy.deepcopy(student)
    # FSDP2 cannot shard 0-d parameters (QAT's per-tensor activation scales): they stay
    # whole on every rank, their gradients all-reduced by hand like the trainable buffers
    scalars = {n for n, p in sharded.named_parameters() if p.dim() == 0}
    fully_shard(sharded, mesh=init_device_mesh(dev.type, (distributed.world_size(),)),
                ignored_params={p for n, p in sharded.named_parameters() if n in scalars})
    params, bufs = dict(sharded.named_parameters()), dict(sharded.named_buffers())
    for n in pnames:
        params[n].requires_grad_(True)
    for p in sharded.projectors.parameters():
        p.requires_grad_(True)
    originals = dict(student.named_parameters()) | dict(student.named_buffers())

    def write_back() -> None:
        with torch.no_grad():
            for n in pnames:
                originals[n].copy_(params[n] if n in scalars else params[n].full_tensor())
            for n in bnames:
                originals[n].copy_(bufs[n])

    by_hand = [params[n] for n in pnames if n in scalars] + [bufs[n] for n in bnames]
    return (sharded, [params[n] for n in pnames] + [bufs[n] for n in bnames]
            + list(sharded.projectors.parameters()), by_hand, write_back)


def finetune(program: Any, batches: Sequence[Sequence[torch.Tensor]], *,
             labels: Sequence[torch.Tensor] | None = None,
             teacher: Any | Callable[..., Any] | None = None,
             options: FinetuneOptions = FinetuneOptions(),
             progress: bool | None = None,
             on_step: Callable[[int, int], None] | None = None,
             device: str | torch.device | None = None) -> list[float]:
    """Train ``program`` in place on ``batches``; returns the mean loss per epoch.

    ``device`` (``cuda``, ``cuda:N``): train there (program, Program teacher and batches
    moved for the run, the program back on the CPU after); without it, training runs where
    the program's weights are.

    Under ``torchrun`` (``edgecc.distributed``): ``batches`` are this rank's shard; every
    rank takes as many steps as the rank with the fewest batches (the others' extra batches
    are dropped); the student is wrapped in DDP (``shard``: FSDP2), so gradients are
    averaged over ranks before each optimizer step (a step on equal-sized per-rank batches
    is the single-process step on their concatenation, to float rounding); projectors
    start from rank 0's initialisation, only rank 0 checkpoints; the returned losses are
    this rank's."""
    from edgecc import distributed

    if device is not None:
        dev = distributed.resolve_device(device)
        return on_device(dev, program, teacher, lambda: finetune(
            program, batches, labels=labels, teacher=teacher, options=options,
            progress=progress, on_step=on_step))
    if labels is None and teacher is None:
        raise ValueError("finetune needs labels, a teacher, or both")
    if labels is not None and len(labels) != len(batches):
        raise ValueError(f"{len(labels)} label batches for {len(batches)} input batches")
    if options.shard and (on_step is not None or options.checkpoint):
        raise ValueError("shard=true (FSDP) trains a sharded copy of the student: pruning "
                         "schedules (sparse-finetune) and checkpoint= need shard=false (DDP)")
    dev = program_device(program)
    batches = [_to(b, dev) for b in batches]
    labels = [_to(y, dev) for y in labels] if labels is not None else None
    if distributed.is_distributed():  # ranks stay in step: the fewest batches of any rank
        n = int(distributed.all_reduce_min(torch.tensor([len(batches)])).item())
        batches = list(batches)[:n]
        labels = list(labels)[:n] if labels is not None else None
    if options.features and not hasattr(teacher, "graph"):
        raise ValueError("feature distillation needs the teacher as a Program")
    names = list(options.features)
    net = _with_features(program, names) if names else program.graph_module
    params = trainable_tensors(program, learn_scales=options.learn_scales)
    targets: list[torch.Tensor] = []
    feats: list[list[torch.Tensor]] = []
    if teacher is not None:
        run = _with_features(teacher, names) if names else (
            teacher.run if hasattr(teacher, "run") else teacher)
        with torch.no_grad():
            for b in batches:
                out = run(*b)
                if names:
                    out, *f = out
                    feats.append([t.detach() for t in f])
                targets.append(_first(out).detach())
        with torch.no_grad():
            s0 = net(*batches[0])
        s_out = _first(s0[0] if names else s0)
        if s_out.shape != targets[0].shape:
            raise InputSpecError(
                f"teacher output {list(targets[0].shape)} does not match the student's "
                f"{list(s_out.shape)}: distill from the model the student was compressed from")
    projectors = torch.nn.ModuleList()
    if names:
        for s_f, t_f in zip(s0[1:], feats[0]):
            axis = 1 if t_f.dim() == 4 else t_f.dim() - 1
            if s_f.dim() != t_f.dim():
                raise InputSpecError(f"feature ranks differ: student {list(s_f.shape)}, "
                                     f"teacher {list(t_f.shape)}")
            projectors.append(_Projector(s_f.shape[axis], t_f.shape[axis], axis)
                              if s_f.shape != t_f.shape else torch.nn.Identity())
    projectors.to(dev)
    distributed.broadcast_tensors(list(projectors.parameters()))
    opt_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
               "sgd": torch.optim.SGD}[options.optimizer]
    for p in params:
        p.requires_grad_(True)
    beta = 1 - options.alpha if options.beta is None else options.beta
    gen = torch.Generator().manual_seed(options.seed)
    history: list[float] = []
    try:
        student, stepped, reduce_by_hand, write_back = _parallel(
            _Student(net, projectors, bool(names)), params, dev, options.shard)
        optim = opt_cls(stepped, lr=options.lr, weight_decay=options.weight_decay)
        start_epoch = _resume(options.checkpoint, params, optim, projectors, gen, history)
        steps = [(e, i) for e in range(start_epoch, options.epochs)
                 for i in range(len(batches))]
        total_steps = options.epochs * len(batches)
        order: list[int] = []
        total, count = 0.0, 0
        for epoch, i in progress_iter(steps, "fine-tuning", enabled=progress):
            if i == 0:
                order = (torch.randperm(len(batches), generator=gen).tolist()
                         if options.shuffle else list(range(len(batches))))
                total, count = 0.0, 0
            k = order[i]
            out, s_feats = student(*batches[k])
            s = _first(out)
            loss = s.new_zeros(())
            if teacher is not None:
                loss = loss + options.alpha * distillation_loss(s, targets[k], options.loss,
                                                                options.temperature)
                for s_f, t_f in zip(s_feats, feats[k] if names else ()):
                    loss = loss + options.gamma * F.mse_loss(s_f, t_f)
            if labels is not None:
                loss = loss + beta * F.cross_entropy(s, labels[k])
            optim.zero_grad()
            loss.backward()
            distributed.average_gradients(reduce_by_hand)
            optim.step()
            if on_step is not None:
                on_step(epoch * len(batches) + i + 1, total_steps)
            total += loss.item()
            count += 1
            if i == len(batches) - 1:
                history.append(total / count)
                if options.checkpoint and distributed.is_main():
                    _save(options.checkpoint, epoch, params, optim, projectors, gen, history)
        write_back()
    finally:
        for p in params:
            p.requires_grad_(False)
            p.grad = None
    return history


def _save(path: str, epoch: int, params: list[torch.Tensor], optim: Any,
          projectors: torch.nn.Module, gen: torch.Generator, history: list[float]) -> None:
    import os

    state = {"epoch": epoch, "params": [p.detach().clone() for p in params],
             "optimizer": optim.state_dict(), "projectors": projectors.state_dict(),
             "rng": gen.get_state(), "history": list(history)}
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)  # never a half-written checkpoint


def _resume(path: str | None, params: list[torch.Tensor], optim: Any,
            projectors: torch.nn.Module, gen: torch.Generator, history: list[float]) -> int:
    import os

    if not path or not os.path.exists(path):
        return 0
    state = torch.load(path, weights_only=True)
    if len(state["params"]) != len(params) or any(
            a.shape != b.shape for a, b in zip(state["params"], params)):
        raise InputSpecError(f"checkpoint {path} belongs to a different program (weights "
                             "differ in number or shape); delete it to start over")
    with torch.no_grad():
        for p, v in zip(params, state["params"]):
            p.copy_(v)
    optim.load_state_dict(state["optimizer"])
    projectors.load_state_dict(state["projectors"])
    gen.set_state(state["rng"])
    history.extend(state["history"])
    return int(state["epoch"]) + 1
