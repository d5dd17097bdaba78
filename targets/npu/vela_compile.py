"""Compile a region's .tflite for Arm Ethos-U with Vela 5.2 (its C++ core Regor, in process).

``compile_region(tflite, description)`` runs ``ethosu.regor.compile`` twice on the same bytes —
as Vela's CLI drives it — once with TFLite output (the optimised model with the ``ethos-u``
custom op for TFLite Micro, the operators Vela left on the CPU and why) and once with raw output
(command stream, encoded weights and scales, scratch sizes, where each input and output lives).
Vela's performance report (NPU cycles, MACs, memory use, bandwidth per memory) is turned into a
plain dict with the latency at the description's clock.

``driver_header(result, name)`` writes the C the Arm ethos-u core driver consumes: command
stream and weights as byte arrays plus the base address table of ``ethosu_invoke_v3``, in the
shape TVM's former microNPU backend emitted (``src/relay/backend/contrib/ethosu/source_module.cc``).

Nothing here executes a command stream: there is no Ethos-U or Corstone FVP on this machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from typing import Any

from edgecc.errors import EdgeccError, LoweringError
from edgecc.targets.npu.description import NpuDescription

VELA_VERSION = "5.2.0"


class RegionOnCpuError(EdgeccError):
    """Vela left operators of a region that the partitioner gave to the NPU on the CPU."""


@dataclasses.dataclass(frozen=True)
class IoTensor:
    region: int  # base-address index of ethosu_invoke
    address: int  # byte offset inside that region
    size: int
    shape: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class VelaResult:
    accelerator: str
    optimised_tflite: bytes  # the region with its NPU part as an ethos-u custom op
    command_stream: bytes  # driver payload ("COP1" ...)
    read_only: bytes  # encoded weights and scales (base address 0)
    scratch_size: int  # base address 1
    scratch_fast_size: int  # base address 2
    inputs: tuple[IoTensor, ...]
    outputs: tuple[IoTensor, ...]
    performance: dict[str, Any]
    cpu_operators: tuple[str, ...]  # "CONV_2D: reason" for every operator left on the CPU
    log: str  # what Regor printed


def _regor_accelerator(accelerator: str) -> tuple[str, int]:
    """"ethos-u55-128" -> ("EthosU55", 128), as vela.py converts it."""
    parts = accelerator.split("-")
    return "".join(p.capitalize() for p in parts[:-1]), int(parts[-1])


def _system_config(desc: NpuDescription) -> str:
    import ethosu

    vela = desc.vela
    assert vela is not None
    _, macs = _regor_accelerator(vela.accelerator)
    ini = os.path.join(list(ethosu.__path__)[0], "config_files", "Arm", "vela.ini")
    with open(ini, encoding="utf-8") as f:
        text = f.read()
    cores = 2 if vela.accelerator == "ethos-u65-512" else 1
    return (f"[architecture]\nmacs={macs}\ncores={cores}\n[vela]\n"
            f"system_config_name={vela.system_config}\nmemory_mode_name={vela.memory_mode}\n"
            + text)


def _options(desc: NpuDescription, output_format: str) -> str:
    # the text vela.py's get_compiler_config writes for the CLI's defaults
    return ("\n[compiler]\n"
            f"output_format={output_format}\ncop_format=COP1\nenable_db=true\n"
            "\n[scheduler]\noptimize=Performance\n"
            f"arena_size_limit={desc.memory.sram_bytes}\n"
            "separate_io_regions=true\ncpu_tensor_alignment=16\ntensor_allocator=HillClimb\n")


@contextlib.contextmanager
def _captured_output():
    """Capture what Regor's C++ prints to stdout/stderr (its reasons for CPU fallbacks)."""
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = os.dup(1), os.dup(2)
        box: list[str] = []
        try:
            os.dup2(tmp.fileno(), 1)
            os.dup2(tmp.fileno(), 2)
            yield box
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            tmp.seek(0)
            box.append(tmp.read().decode("utf-8", "replace"))


def _cpu_operators(model, log: str) -> tuple[str, ...]:
    """Operators Vela kept on the CPU: "CONV_2D (ofm 't_3'): reason" from Regor's warnings,
    counted against its optimisation database (Passthrough operators)."""
    warned, lines = [], log.splitlines()
    for i, line in enumerate(lines):
        if "(supported operators) operator:" in line:
            what = line.split("operator:", 1)[1].strip()
            op, _, ofm = what.partition(", ofm:")
            reason = next((ln.split("Reason:", 1)[1].strip() for ln in lines[i + 1:i + 3]
                           if ln.startswith("Reason:")), "no reason printed")
            warned.append(f"{op.strip()} (ofm {ofm.strip()}): {reason}")
    db = model.opt_database
    passthrough = 0
    if db is not None and "optimised" in db.tables:
        opt = db.tables["optimised"]
        sid, oname = opt.header.index("source_id"), opt.header.index("operator")
        passthrough = len({row[sid] for row in opt.data if row[oname] == "Passthrough"})
    count = max(passthrough, int(model.perf_report.cpuOps))
    if count and not warned:
        warned = [f"{count} operator(s): Vela printed no reason"]
    return tuple(warned) if count else ()


def performance(report, desc: NpuDescription) -> dict[str, Any]:
    """Vela's performance report as a dict (cycles, MACs, memory, bandwidth, latency)."""
    _, macs_per_cycle = _regor_accelerator(desc.vela.accelerator)
    memories = {}
    for name, mem in report.memories.items():
        key = str(name).lower()
        if key in ("shram", "lutram"):  # internal buffers; vela.py leaves them out too
            continue
        memories[key] = {
            "peak_bytes": int(mem.peakUsage),
            "access_cycles": int(mem.totalAccessCycles),
            "read_bytes": {str(a).lower(): int(x.bytesRead) for a, x in mem.accesses.items()},
            "write_bytes": {str(a).lower(): int(x.bytesWritten) for a, x in mem.accesses.items()},
        }
    npu_cycles = int(report.npuCycles)
    macs = int(report.macCount)
    return {
        "vela_version": VELA_VERSION,
        "accelerator": desc.vela.accelerator,
        "system_config": desc.vela.system_config,
        "memory_mode": desc.vela.memory_mode,
        "clock_hz": desc.memory.clock_hz,
        "npu_cycles": npu_cycles,
        "total_cycles": int(report.totalCycles),
        "cpu_cycles": int(report.cpuCycles),
        "latency_s": int(report.totalCycles) / desc.memory.clock_hz,
        "macs": macs,
        "mac_utilisation": macs / (npu_cycles * macs_per_cycle) if npu_cycles else 0.0,
        "npu_ops": int(report.npuOps),
        "cpu_ops": int(report.cpuOps),
        "cascaded_ops": int(report.cascadedOps),
        "cascades": int(report.cascades),
        "original_weights_bytes": int(report.originalWeights),
        "encoded_weights_bytes": int(report.encodedWeights),
        "read_only_peak_bytes": int(report.readOnlyPeakUsage),
        "memories": memories,
    }


def _io(tensors) -> tuple[IoTensor, ...]:
    return tuple(IoTensor(int(t.region), int(t.address), int(t.size), tuple(t.shape))
                 for t in tensors)


def compile_region(tflite: bytes, desc: NpuDescription, require_npu: bool = True) -> VelaResult:
    """Compile one region for the description's Ethos-U; raises if Vela left ops on the CPU
    (unless ``require_npu`` is false, then ``cpu_operators`` lists them)."""
    if desc.codegen != "vela" or desc.vela is None:
        raise LoweringError(f"NPU '{desc.name}' has codegen '{desc.codegen}', not vela")
    from ethosu import regor

    accelerator, _ = _regor_accelerator(desc.vela.accelerator)
    sysconf = _system_config(desc)
    with _captured_output() as out:
        try:
            model = regor.compile(accelerator, tflite, "TFLITE", sysconf,
                                  options=_options(desc, "TFLite"))
        except RuntimeError as e:
            raise LoweringError(f"Vela {VELA_VERSION} could not compile the region for "
                                f"{desc.vela.accelerator}: {str(e).strip()}") from None
    log = out[0] if out else ""
    cpu = _cpu_operators(model, log)
    if cpu and require_npu:
        raise RegionOnCpuError(f"Vela {VELA_VERSION} left {len(cpu)} operator(s) of the region on "
                               f"the CPU for {desc.vela.accelerator}: {'; '.join(cpu)}")
    perf = performance(model.perf_report, desc)
    raw = None
    if not cpu:  # the raw writer refuses graphs with CPU operators
        with _captured_output() as out_raw:
            raw = regor.compile(accelerator, tflite, "TFLITE", sysconf,
                                options=_options(desc, "Raw"))
        log += out_raw[0] if out_raw else ""
    return VelaResult(
        accelerator=desc.vela.accelerator,
        optimised_tflite=bytes(model.model),
        command_stream=bytes(raw.command_stream) if raw else b"",
        read_only=bytes(raw.read_only.data) if raw else b"",
        scratch_size=int(raw.scratch.size) if raw else 0,
        scratch_fast_size=int(raw.scratch_fast.size) if raw else 0,
        inputs=_io(raw.inputs) if raw else (),
        outputs=_io(raw.outputs) if raw else (),
        performance=perf,
        cpu_operators=cpu,
        log=log,
    )


def _c_bytes(data: bytes, indent: str = "  ") -> str:
    rows = [", ".join(f"0x{b:02x}" for b in data[i:i + 16]) for i in range(0, len(data), 16)]
    return ",\n".join(indent + r for r in rows)


def driver_header(result: VelaResult, name: str) -> str:
    """A C header for one region: what ``ethosu_invoke_v3`` of the Arm ethos-u core driver
    takes (command stream, base addresses and their sizes), with the weights as a byte array
    and an invoke function that fills the base address table as TVM's microNPU backend did."""
    if not result.command_stream:
        raise LoweringError(f"region {name}: no command stream (operators left on the CPU)")
    sym = "".join(c if c.isalnum() else "_" for c in name)
    regions = {0: (f"{sym}_weights", len(result.read_only)),
               1: ("scratch", result.scratch_size),
               2: ("scratch_fast", result.scratch_fast_size)}
    # Vela may place several inputs (an ADD's two operands) in one region at different
    # offsets: such a region is one caller buffer ("io<N>"), the tensors' offsets defined
    shared: dict[int, list[tuple[str, IoTensor]]] = {}
    for kind, tensors in (("in", result.inputs), ("out", result.outputs)):
        for i, t in enumerate(tensors):
            if t.region in (0, 1, 2):
                raise LoweringError(f"region {name}: {kind}{i} shares base address {t.region}")
            shared.setdefault(t.region, []).append((f"{kind}{i}", t))
    io_params = []
    for idx, items in sorted(shared.items()):
        if len(items) == 1:
            arg, t = items[0]
            regions[idx] = (arg, t.size)
            io_params.append(f"{'const ' if arg.startswith('in') else ''}int8_t* {arg}")
        else:
            regions[idx] = (f"io{idx}", max(t.address + t.size for _, t in items))
            io_params.append(f"uint8_t* io{idx}")
    count = max(regions) + 1
    perf = result.performance
    io_args = ", ".join(io_params)
    lines = [
        f"/* {name}: Arm {result.accelerator} region compiled by Vela {VELA_VERSION} (edgecc).",
        f" * NPU cycles {perf['npu_cycles']}, MACs {perf['macs']}, "
        f"{perf['latency_s'] * 1e6:.2f} us at {perf['clock_hz'] / 1e6:g} MHz (Vela's estimate).",
        " * Base addresses (ethosu_invoke_v3): 0 weights, 1 scratch, 2 scratch_fast, then the",
        " * region's inputs and outputs in the regions Vela assigned them. */",
        f"#ifndef EDGECC_{sym.upper()}_H",
        f"#define EDGECC_{sym.upper()}_H",
        "#include <stddef.h>",
        "#include <stdint.h>",
        "#include <ethosu_driver.h>",
        "",
        f"#define {sym.upper()}_SCRATCH_SIZE {result.scratch_size}",
        f"#define {sym.upper()}_SCRATCH_FAST_SIZE {result.scratch_fast_size}",
        f"#define {sym.upper()}_NUM_BASE_ADDR {count}",
    ]
    for kind, tensors in (("INPUT", result.inputs), ("OUTPUT", result.outputs)):
        for i, t in enumerate(tensors):
            lines.append(f"#define {sym.upper()}_{kind}{i}_SIZE {t.size}  /* shape "
                         f"{list(t.shape)}, region {t.region}, offset {t.address} */")
    lines += [
        "",
        "/* Place .rodata.ethosu in memory the NPU can read. */",
        f"__attribute__((section(\".rodata.ethosu\"), aligned(16))) static const uint8_t "
        f"{sym}_cms[{len(result.command_stream)}] = {{",
        _c_bytes(result.command_stream),
        "};",
        f"__attribute__((section(\".rodata.ethosu\"), aligned(16))) static const uint8_t "
        f"{sym}_weights[{max(len(result.read_only), 1)}] = {{",
        _c_bytes(result.read_only or b"\x00"),
        "};",
        "",
        "/* scratch / scratch_fast: arenas of the sizes above, 16-byte aligned, NPU-visible. */",
        f"static inline int {sym}_invoke(struct ethosu_driver* drv, uint8_t* scratch, "
        f"uint8_t* scratch_fast, {io_args}) {{",
        f"  uint64_t base_addr[{count}] = {{0}};",
        f"  size_t base_addr_size[{count}] = {{0}};",
    ]
    for idx in sorted(regions):
        ptr, size = regions[idx]
        lines.append(f"  base_addr[{idx}] = (uint64_t)(uintptr_t)({ptr}); "
                     f"base_addr_size[{idx}] = {size};")
    lines += [
        f"  return ethosu_invoke_v3(drv, {sym}_cms, sizeof({sym}_cms), base_addr, "
        f"base_addr_size, {count}, NULL);",
        "}",
        "",
        f"#endif /* EDGECC_{sym.upper()}_H */",
        "",
    ]
    return "\n".join(lines)
