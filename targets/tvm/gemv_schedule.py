"""A CPU schedule for one-row float matmuls (GEMV: an LLM's decode step, M = 1).

After legalization a linear layer ``y = x @ W.T`` reads the weight as a constant already
transposed to ``[K, N]`` (TVM folds the ``permute_dims`` at compile time). The default
register tile (``schedule``) gives each thread 16 output columns and walks all ``K`` rows
for them: one 64-byte line a row, ``N * 4`` bytes apart — a strided walk that defeats the
hardware prefetchers, so a decode step ran at a fraction of the memory bandwidth. Here
each parallel task owns a wide run of columns and streams the rows of its slice, keeping
the partial sums in vector registers across a few rows at a time::

    before:  parallel for j/16:                      # 16 columns a task
                 for k:  acc[16] += x[k] * W[k, j*16 : j*16+16]     # stride N
    after:   parallel for c/CHUNK:                   # CHUNK (<= 1024) columns a task
                 y[c-slice] = 0                       # a local buffer (L1)
                 for k/ROWS:  for v/16:
                     for r in ROWS (unrolled):  acc[16] += x[k] * W[k, c+v*16 : +16]
                 out[c-slice] = epilogue(y[c-slice])  # bias / residual / SiLU * up, fused

Every output still sums over ``k`` in ascending order, one product at a time, exactly as
the default schedule does: the results are bit-identical to it (only the memory order
of the loads changes). Blocks that are not a float32 matmul with every spatial extent
but the last equal to 1 are left to the default schedule (``None``).
"""

from __future__ import annotations

from typing import Any

VECTOR = 16
MAX_CHUNK = 1024  # columns a task: its accumulator (4 KB) stays in L1
MIN_TASKS = 4  # enough tasks for a few threads to share the columns
ROWS = 4  # weight rows a register pass reads (4 streams in flight)
GEMV = "edgecc_gemv"


def _chunk(n: int) -> int:
    """Columns per task: the largest multiple of VECTOR dividing ``n`` that is at most
    MAX_CHUNK and leaves at least MIN_TASKS tasks (fewer for a narrow matrix); 0 when
    ``n`` has no such divisor."""
    best = 0
    for d in range(VECTOR, min(n, MAX_CHUNK) + 1, VECTOR):
        if n % d == 0 and (n // d >= MIN_TASKS or best == 0):
            best = d
    return best


def gemv_schedule(sch: Any, mark: str = GEMV) -> Any:
    """Schedule a kernel whose one reduction is a float32 GEMV (module docstring) in
    ``sch`` (an ``s_tir.Schedule``); returns it, or None when the kernel is not one. Its
    blocks are annotated ``mark`` (the default schedule's "scheduled already" flag)."""
    root = sch.get_sblock("root")
    blocks = sch.get_child_blocks(root)
    reductions = [b for b in blocks if any(iv.iter_type == 2 for iv in sch.get(b).iter_vars)]
    if len(reductions) != 1:
        return None
    block = reductions[0]
    stmt = sch.get(block)
    if "matmul" not in stmt.name_hint:
        return None
    if not all(str(getattr(r.source, "dtype", "")) == "float32"
               for r in (*stmt.reads, *stmt.writes)):
        return None
    loops = sch.get_loops(block)
    kinds = [iv.iter_type for iv in stmt.iter_vars]
    if len(loops) != len(kinds) or kinds[-1] != 2 or kinds.count(2) != 1:
        return None
    extents = [int(sch.get(lp).extent) for lp in loops]
    spatial, reduce = loops[:-1], loops[-1]
    if not spatial or any(e != 1 for e in extents[:-2]):
        return None
    n, k = extents[-2], extents[-1]
    chunk = _chunk(n)
    if chunk == 0 or k % ROWS:
        return None
    # the element-wise epilogue TVM fused after the product: one block reading the sums
    after = blocks[blocks.index(block) + 1:]
    for b in after[:-1]:
        sch.compute_inline(b)
    feeding = {sch.get(b).name_hint for b in sch.get_producers(block)}
    for b in blocks[:blocks.index(block)]:
        if sch.get(b).name_hint not in feeding:
            sch.compute_inline(b)
    column = spatial[-1]
    c_o, c_i = sch.split(column, factors=[None, chunk])
    v_o, v_i = sch.split(c_i, factors=[None, VECTOR])
    k_o, k_i = sch.split(reduce, factors=[None, ROWS])
    sch.reorder(*spatial[:-1], c_o, k_o, v_o, k_i, v_i)
    accumulator = sch.cache_write(block, 0, "local")
    sch.reverse_compute_at(accumulator, c_o)
    epilogue = []
    for consumer in sch.get_consumers(accumulator):
        try:
            sch.reverse_compute_inline(consumer)
        except Exception:  # noqa: BLE001 - it reads another in-kernel buffer
            sch.reverse_compute_at(consumer, c_o)
            epilogue.append(consumer)
    sch.parallel(c_o)
    sch.unroll(k_i)
    sch.vectorize(v_i)
    init = sch.decompose_reduction(block, k_o)
    for b in (init, accumulator, *epilogue):
        inner = sch.get_loops(b)[-1]
        if int(sch.get(inner).extent) % VECTOR == 0:
            _, lane = sch.split(inner, factors=[None, VECTOR])
            sch.vectorize(lane)
    for b in (block, init, accumulator, *epilogue):
        sch.annotate(b, mark, 1)
    return sch
