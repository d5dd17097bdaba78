"""A default CPU schedule for TVM's untuned kernels (no tuning, no search).

TVM 0.27's CPU pipeline compiles every kernel as naive, single-threaded loop nests (its CPU
dlight rules cover only GEMV and reductions). This pass gives every kernel a simple,
safe shape that LLVM turns into multi-threaded SIMD code:

* convolutions and matmuls get a register tile: ``ROWS`` output channels (matmul: rows)
  x ``COLS`` output rows (convolutions) x ``VECTOR`` contiguous outputs accumulate in a
  local buffer that LLVM keeps in vector registers across the whole reduction, so every
  broadcast weight and every loaded input vector serves several multiply-adds::

      before:  for f, y, x, c, ky, kx:  out[f, y, x] += in[c, y+ky, x+kx] * w[f, c, ky, kx]
      after:   parallel for (f/4, y/2), x/8:
                   acc[4, 2, 8] = 0                         # 8 vector registers
                   for c, ky, kx:  acc[:, :, :] += ...      # unrolled 4 x 2, vector of 8
                   out[...] = relu(acc + bias + residual)   # epilogue fused in the tile

  the element-wise epilogue TVM fused into the kernel (bias, residual add, activation)
  is applied as the tile is written back, so a fused kernel is one parallel loop;
* other reduction blocks (pooling, softmax, norms): the innermost spatial loop is split by
  the vector width and moved inside the reduction loops, the outer loops run in parallel;
* element-wise blocks: all loops fused, split, outer parallel, inner vectorized.

A kernel the rules cannot schedule is left as TVM built it (a register tile that fails
falls back to the simpler rule), so correctness never depends on this pass; the compile
verification checks outputs either way. Tuning (MetaSchedule) is a separate, slower path.
"""

from __future__ import annotations

from typing import Any

from edgecc.targets.tvm.gemv_schedule import gemv_schedule

VECTOR = 16


def _schedule_function(func: Any) -> Any:
    return schedule_kernel(func).mod["main"]


def schedule_kernel(kernel: Any) -> Any:
    """The default schedule of one kernel (a PrimFunc, or an IRModule whose ``main`` is
    one) as a traced ``s_tir.Schedule`` — its trace is what tuning records as the default
    candidate (``tuning.tune``)."""
    from tvm import s_tir

    tiled = None
    try:  # one-row float matmuls (an LLM's decode step): gemv_schedule
        tiled = gemv_schedule(s_tir.Schedule(kernel), TILED)
    except Exception:  # noqa: BLE001 - the register tile below
        tiled = None
    try:
        if tiled is None:
            tiled = _register_tiled(s_tir.Schedule(kernel))
    except Exception:  # noqa: BLE001 - fall back to the per-block rules
        tiled = None
    sch = tiled if tiled is not None else s_tir.Schedule(kernel)
    root = sch.get_sblock("root") if _has_root(sch) else None
    blocks = sch.get_child_blocks(root) if root is not None else []
    for block in blocks:
        if tiled is not None and _is_tiled(sch, block):
            continue
        try:
            _schedule_block(sch, block)
        except Exception:  # noqa: BLE001 - leave this block as TVM built it
            continue
    return sch


# The register tile: ROWS x COLS x VECTOR float accumulators (AVX2: 8 ymm registers; NEON:
# 16 q registers), chosen by measuring ResNet/MobileNet convolutions and BERT matmuls on
# x86 (bench/tvm_cpu.py). Each axis takes the first factor that divides its extent.
ROWS = (4, 2)
COLS = (2,)
VECTORS = (8, 4)
MATMUL_ROWS = (4, 2)
MATMUL_VECTORS = (16, 8, 4)
# A matmul's tile (the transformers' float linears: x[M, K] @ Wt[K, N], Wt read in strips of
# the tile's columns, one N-strided row per k): 8 rows x 16 columns (8 zmm accumulators, each
# loaded weight vector serves 8 FMAs), 8 x 32 when a row of Wt is a multiple of 4 KiB: then
# every k's strip maps to the same L1 set, only 8 of K strips stay in L1 and each FMA's weight
# comes from L2, so 2 vectors per k halve the misses per FMA. Measured 1 thread CPU, one linear
# + bias, under load ~6 (2026-12-01; the previous 4 x 16 tile / this one): [128,256]x[256,1024]
# 1595 us / 674 us (4 KiB rows: 21 -> 50 GMAC/s), [1024,384]x[384,1536] 20447 / 11454 us,
# [1024,384]x[384,1152] 9629 / 8986 us, [128,256]x[256,768] 462 / 434 us; the others (N 256 /
# 384, K 1024 / 1536) within 3%. Bit-identical: the tile does not change the order of each
# output's sum over k.
DENSE_ROWS = (8, 4, 2)
DENSE_VECTORS = (16, 8, 4)
DENSE_WIDE = 32  # columns when a weight row is a multiple of ALIASING bytes (None: never)
ALIASING = 4096
TILED = "edgecc_register_tile"
MAX_UNROLL = 16  # a tile loop is unrolled only up to this extent


def _is_tiled(sch: Any, block: Any) -> bool:
    return TILED in (sch.get(block).annotations or {})


def _pick(extent: int, options: tuple[int, ...]) -> int:
    return next((o for o in options if extent % o == 0), 1)


def _register_tiled(sch: Any) -> Any:
    """Schedule a kernel whose one reduction is a float convolution or matmul with a register
    tile (module docstring); None if the kernel is not of that form."""
    root = sch.get_sblock("root")
    blocks = sch.get_child_blocks(root)
    reductions = [b for b in blocks if any(iv.iter_type == 2 for iv in sch.get(b).iter_vars)]
    if len(reductions) != 1:
        return None
    block = reductions[0]
    stmt = sch.get(block)
    name = stmt.name_hint
    conv = "conv" in name
    if not (conv or "matmul" in name) or _integer_dot(stmt):
        return None
    if not all(_region_dtype(r) == "float32" for r in (*stmt.reads, *stmt.writes)):
        return None
    # the element-wise epilogue TVM fused after the reduction: inline the chain so one
    # block (reading the accumulator) remains, then apply it in the tile's write-back
    after = blocks[blocks.index(block) + 1:]
    for b in after[:-1]:
        sch.compute_inline(b)
    feeding = {sch.get(b).name_hint for b in sch.get_producers(block)}
    for b in blocks[:blocks.index(block)]:  # e.g. a mask the epilogue adds: into it
        if sch.get(b).name_hint not in feeding:
            sch.compute_inline(b)
    loops = sch.get_loops(block)
    kinds = [iv.iter_type for iv in stmt.iter_vars]
    if len(loops) != len(kinds):
        return None
    spatial = [lp for lp, k in zip(loops, kinds) if k == 0]
    reduce = [lp for lp, k in zip(loops, kinds) if k == 2]
    extent = [int(sch.get(lp).extent) for lp in spatial]
    kernel = [int(sch.get(lp).extent) for lp in reduce[1:]]
    if conv and len(spatial) == 4 and kernel == [1, 1] and extent[3] < 16 \
            and _reads_output_map(stmt, extent):
        # a pointwise stride-1 convolution on a small map is a matmul over (rows x columns);
        # strided ones stay on the NCHW tile (vectorizing the fused row*column index of a
        # strided read miscompiled: 1x1/2 conv on 24x24 was off by 3.5, issue 21)
        spatial = [spatial[0], spatial[1], sch.fuse(spatial[2], spatial[3])]
        extent = [extent[0], extent[1], extent[2] * extent[3]]
        tiles = [1, _pick(extent[1], MATMUL_ROWS), _pick(extent[2], MATMUL_VECTORS)]
    elif conv and len(spatial) == 4:  # NCHW: tile channels x rows x columns
        tiles = [1, _pick(extent[1], ROWS), _pick(extent[2], COLS), _pick(extent[3], VECTORS)]
    elif not conv and len(spatial) >= 2:  # [batch..., rows, columns]
        vectors = DENSE_VECTORS
        if DENSE_WIDE and (extent[-1] * 4) % ALIASING == 0 and extent[-1] % DENSE_WIDE == 0:
            vectors = (DENSE_WIDE, *vectors)
        tiles = [1] * (len(spatial) - 2) + [_pick(extent[-2], DENSE_ROWS),
                                            _pick(extent[-1], vectors)]
    else:
        return None
    if tiles[-1] < 4:
        return None
    outer, inner = [], []
    for lp, t in zip(spatial, tiles):
        o, i = sch.split(lp, factors=[None, t])
        outer.append(o)
        inner.append(i)
    sch.reorder(*outer, *reduce, *inner)
    accumulator = sch.cache_write(block, 0, "local")
    sch.reverse_compute_at(accumulator, outer[-1])
    epilogue = []
    for consumer in sch.get_consumers(accumulator):
        try:
            sch.reverse_compute_inline(consumer)
        except Exception:  # noqa: BLE001 - it reads another in-kernel buffer: run it
            sch.reverse_compute_at(consumer, outer[-1])  # per tile, right after
            epilogue.append(consumer)
    parallel = sch.fuse(*outer[:-1]) if len(outer) > 2 else outer[0]
    if _static_work(sch, reduce[:1]) * _numel(extent + kernel) >= PARALLEL_WORK:
        sch.parallel(parallel)
    for lp in inner[:-1]:
        if int(sch.get(lp).extent) <= MAX_UNROLL:
            sch.unroll(lp)
    sch.vectorize(inner[-1])
    init = sch.decompose_reduction(block, reduce[0])
    for b in (init, accumulator, *epilogue):
        loops_b = sch.get_loops(b)
        anchor = sch.get(outer[-1])  # fresh: statements are rebuilt by each primitive
        # the loops under the tile's outermost serial loop (the write-back keeps only the
        # non-unit ones, so count from the anchor, not from the end)
        at = next(i for i, lp in enumerate(loops_b) if sch.get(lp).same_as(anchor))
        tile_loops = loops_b[at + 1:]
        if not tile_loops:
            continue
        for lp in tile_loops[:-1]:
            if int(sch.get(lp).extent) <= MAX_UNROLL:
                sch.unroll(lp)
        sch.vectorize(tile_loops[-1])
    for b in (block, init, accumulator, *epilogue):
        sch.annotate(b, TILED, 1)
    return sch


def _reads_output_map(stmt: Any, extent: list[int]) -> bool:
    """True if the convolution reads a 4-D map of its output's height and width (stride 1)."""
    return any(len(r.buffer.shape) == 4 and [int(d) for d in r.buffer.shape[2:]] == extent[2:]
               for r in stmt.reads)


def _has_root(sch: Any) -> bool:
    try:
        sch.get_sblock("root")
        return True
    except Exception:  # noqa: BLE001
        return False


def _schedule_block(sch: Any, block: Any) -> None:
    stmt = sch.get(block)
    loops = sch.get_loops(block)
    kinds = [iv.iter_type for iv in stmt.iter_vars]
    if len(loops) != len(kinds) or not loops:
        return
    spatial = [lp for lp, k in zip(loops, kinds) if k == 0]  # IterVar.DataPar
    reduce = [lp for lp, k in zip(loops, kinds) if k == 2]  # IterVar.CommReduce
    if len(spatial) + len(reduce) != len(loops):
        return
    # TVM 0.27 cannot vectorize stores to bool buffers (lowering fails later, outside
    # our control), so such blocks are only parallelized.
    vectorize = not any("bool" in str(r.source) or "bool" in str(getattr(r.source, "dtype", ""))
                        for r in (*stmt.reads, *stmt.writes))
    if reduce:
        if not spatial:
            return
        if _integer_dot(stmt):
            # int8 x int8 -> int32: keep the reduction innermost and serial, the pattern
            # LLVM's vectorizer turns into sdot / udot on cores with +dotprod.
            fused = sch.fuse(*spatial) if len(spatial) > 1 else spatial[0]
            sch.parallel(fused)
            sch.decompose_reduction(block, reduce[0])
            return
        work = _static_work(sch, loops)
        rows = _row_tile(sch, stmt, spatial)
        inner_o, inner_i = sch.split(spatial[-1], factors=[None, VECTOR])
        if rows > 1:
            # matmul: a register tile of `rows` output rows x VECTOR columns, so every
            # vector of the weight read in the reduction loop serves `rows` rows (without
            # it the whole weight streams from memory once per output row).
            row_o, row_i = sch.split(spatial[-2], factors=[None, rows])
            sch.reorder(*spatial[:-2], row_o, inner_o, *reduce, row_i, inner_i)
            outer = spatial[:-2] + [row_o, inner_o]
            sch.unroll(row_i)
        else:
            sch.reorder(*spatial[:-1], inner_o, *reduce, inner_i)
            outer = spatial[:-1] + [inner_o]
        fused = sch.fuse(*outer) if len(outer) > 1 else outer[0]
        if work >= PARALLEL_WORK:
            sch.parallel(fused)
        sch.decompose_reduction(block, reduce[0])
        return  # the contiguous inner loop is left to LLVM's loop vectorizer
    extents = [int(sch.get(lp).extent) for lp in loops]
    if len(loops) > 1 and (extents[-1] >= 8 or not _same_shapes(stmt)):
        # rows in parallel, each row's contiguous run vectorized: fusing every loop and
        # cutting vectors across rows makes each lane recompute a (padded or broadcast)
        # input index — a gather per element (a pad of 72x34x34 took 7x longer that way)
        rows = sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0]
        if _numel(extents) >= SERIAL_BELOW:
            sch.parallel(rows)
        width = _pick(extents[-1], (VECTOR, 8))
        if vectorize and width > 1:
            _, inner = sch.split(loops[-1], factors=[None, width])
            sch.vectorize(inner)
        return
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    outer, inner = sch.split(fused, factors=[None, VECTOR])
    if _numel(extents) >= SERIAL_BELOW:
        sch.parallel(outer)
    if vectorize:
        sch.vectorize(inner)


def _same_shapes(stmt: Any) -> bool:
    """Every buffer the block touches has one shape (a plain element-wise op: fused loops
    index all of them linearly); pads, slices and broadcasts do not."""
    shapes = {tuple(str(d) for d in r.source.shape) for r in (*stmt.reads, *stmt.writes)}
    return len(shapes) == 1


SERIAL_BELOW = 4096  # elements: smaller element-wise kernels are not worth a thread wake-up
# multiply-adds (output elements x reduction extent): smaller reductions and register-tiled
# products run serially — a CNN's global average pool (64 x 8x8) and classifier (64 x 10)
# each woke TVM's pool once per inference, whose worker then spins (sched_yield) for
# ~300000 rounds beside the hand-written kernels' pool (x86_kernel_ffi)
PARALLEL_WORK = 1 << 14


def _static_work(sch: Any, loops: list[Any]) -> int:
    """The product of the loops' extents; PARALLEL_WORK when one is symbolic (a dynamic
    shape: parallel, as before)."""
    try:
        return _numel([int(sch.get(lp).extent) for lp in loops])
    except (TypeError, ValueError):
        return PARALLEL_WORK


def _numel(extents: list[int]) -> int:
    n = 1
    for e in extents:
        n *= e
    return n


ROW_TILES = (8, 4, 2)


def _region_dtype(region: Any) -> str:
    return str(getattr(region.source, "dtype", ""))


def _integer_dot(stmt: Any) -> bool:
    """int8/uint8 operands accumulated into int32 (an integer dot product)."""
    dtypes = {_region_dtype(r) for r in stmt.reads}
    return bool(dtypes) and dtypes <= {"int8", "uint8"} and all(
        _region_dtype(w) == "int32" for w in stmt.writes)


def _row_tile(sch: Any, stmt: Any, spatial: list[Any]) -> int:
    """Rows per register tile for matmul blocks (1: no tiling)."""
    if "matmul" not in str(stmt.name_hint if hasattr(stmt, "name_hint") else stmt.name) \
            or len(spatial) < 2:
        return 1
    try:
        extent = int(sch.get(spatial[-2]).extent)
    except Exception:  # noqa: BLE001 - symbolic extent
        return 1
    return _pick(extent, ROW_TILES)


def _is_scheduled(func: Any) -> bool:
    """Scheduled already: by this pass, or by MetaSchedule's database (tuned kernels)."""
    attrs = func.attrs or {}
    return any(key in attrs and bool(attrs[key])
               for key in ("tir.is_scheduled", "tirx.is_scheduled"))


def default_cpu_schedule() -> Any:
    """A module pass applying the schedule above to every unscheduled PrimFunc."""
    import tvm
    from tvm import tirx

    @tvm.transform.module_pass(opt_level=0, name="EdgeccDefaultCPUSchedule")
    def schedule(mod: Any, _ctx: Any) -> Any:
        updates = {}
        for gvar, func in mod.functions.items():
            if not isinstance(func, tirx.PrimFunc) or _is_scheduled(func):
                continue
            try:
                updates[gvar] = _schedule_function(func.with_attr("global_symbol", gvar.name_hint))
            except Exception:  # noqa: BLE001
                continue
        for gvar, func in updates.items():
            mod[gvar] = func.with_attr("tir.is_scheduled", True)
        return mod

    return schedule
