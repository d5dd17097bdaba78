"""Lower a program for ``-t npu``: NPU regions by TVM Relax BYOC and the description's
codegen, the rest by the TVM layer for the CPU, in one TVM library.

1. ``partition.classify`` decides per fx node with the reason (the deployability report,
   the explanation layer).
2. The program is imported into Relax with quantize / dequantize as Relax QDQ ops, and
   ``byoc.partition`` splits it: ``CanonicalizeBindings`` -> ``FuseOpsByPattern`` with the
   description's patterns and check functions -> (``MergeCompositeFunctions``) ->
   ``RunCodegen`` with ``relax.ext.edgecc_npu_<codegen>``. The artifact's split is this
   one; the report records both and whether they agree.
3. Codegen per region (inside the ``relax.ext`` function):
   * ``c`` (generic-int8): C++ source (``codegen_c``) as ``runtime.CSourceModuleCreate``,
     compiled into ``model.so``: the whole model executes here.
   * ``vela`` (Ethos-U): region ``.tflite`` -> Vela 5.2 (``vela_compile``): command stream,
     encoded weights, Vela's optimised ``.tflite``, a C header for the ethos-u core driver and
     the performance report (NPU cycles). The host runner executes these regions with the
     integer simulator, since nothing here runs an Ethos-U command stream.
4. ``regions.json`` / ``regions.npz``: the regions as compiled, for the runner and tests.
5. The CPU part is built for ``cpu=`` (``host``, or an arm64 preset: cross-compiled).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from edgecc.errors import EdgeccError, LoweringError
from edgecc.program import Program
from edgecc.target import Artifact, Lowered, example_shape
from edgecc.targets.npu import byoc, partition
from edgecc.targets.npu.bundle import save_regions
from edgecc.targets.npu.codegen_c import module_source
from edgecc.targets.npu.description import NpuDescription
from edgecc.targets.npu.presets import arm64_preset, resolve
from edgecc.targets.npu.region import Region

if TYPE_CHECKING:
    from edgecc.targets.npu.target import NpuOptions

LIBRARY = "model.so"
README = "README.txt"
C_SOURCE = "npu_regions.cc"


def exported_decisions(program: Program, desc: NpuDescription) -> tuple[Any, list]:
    """The program's ``torch.export`` form and the partition decisions on its graph."""
    from edgecc.targets.tvm.integer_lowering import exported_constants
    from edgecc.targets.tvm.quant_lowering import widen_fp8_constants

    exported = widen_fp8_constants(program).exported()
    _dequantize_per_reader(exported.graph_module.graph)
    constants = exported_constants(exported)

    def constant(node):
        return constants.get(node.name) if node.op == "placeholder" else None

    return exported, partition.classify(exported.graph_module.graph, constant, desc)


def _dequantize_per_reader(graph: Any) -> None:
    """One dequantize per reader (a pure op, so copies compute the same): each NPU layer
    pattern then owns the dequantize of its input, as ``FuseOpsByPattern`` needs (a
    dequantize shared by q/k/v projections would otherwise be an output of the first)."""
    from edgecc.quant import is_dequantize

    for node in list(graph.nodes):
        if not is_dequantize(node) or len(node.users) < 2:
            continue
        for user in list(node.users)[1:]:
            with graph.inserting_before(user):
                copy = graph.node_copy(node)
            user.replace_input_with(node, copy)
    graph.lint()


def relax_partition(exported: Any, desc: NpuDescription, merge: bool,
                    build: Any) -> byoc.Partitioned:
    """``exported`` imported into Relax (QDQ ops) and split by the BYOC flow."""
    from tvm.relax.frontend.torch import from_exported_program

    from edgecc.errors import one_line
    from edgecc.targets.tvm.integer_lowering import exported_constants

    try:
        module = from_exported_program(
            exported, custom_convert_map=byoc.qdq_converters(exported_constants(exported)),
            run_ep_decomposition=False)
    except Exception as exc:
        raise LoweringError(f"TVM Relax import failed: {one_line(exc)}") from exc
    try:
        return byoc.partition(module, desc, merge, build)
    except EdgeccError:
        raise
    except Exception as exc:
        raise LoweringError(f"TVM Relax BYOC partitioning failed: {one_line(exc)}") from exc


def _byoc_report(parted: byoc.Partitioned, npu: dict[str, Any], desc: NpuDescription
                 ) -> dict[str, Any]:
    macs = {r.name: r.macs() for r in parted.regions}
    total = npu["macs"]
    fx_macs = npu["npu_macs"]
    byoc_macs = sum(macs.values())
    npu["npu_macs"] = byoc_macs  # what the artifact offloads
    npu["npu_mac_share"] = byoc_macs / total if total else 0.0
    npu["partitioning"] = ("TVM Relax BYOC: CanonicalizeBindings, FuseOpsByPattern (patterns "
                           "and checks from the description), "
                           + ("MergeCompositeFunctions, " if any(
                               len(v) > 1 for v in parted.composites.values()) else "")
                           + "RunCodegen; per_op reasons from the fx-graph classification")
    npu["regions"] = [{"region": r.name, "composites": parted.composites[r.name],
                       "ops": [op.kind for op in r.ops], "macs": macs[r.name]}
                      for r in parted.regions]
    return {"codegen": byoc.codegen_name(desc), "functions": len(parted.regions),
            "declined": [d.to_json() for d in parted.declined],
            "npu_macs": byoc_macs, "fx_npu_macs": fx_macs,
            "agrees_with_fx_classification": byoc_macs == fx_macs}


def lower_program(program: Program, output_dir: str, options: NpuOptions) -> Lowered:
    from edgecc.targets.tvm import lowering

    desc = resolve(options.device, options.description)
    exported, decisions = exported_decisions(program, desc)
    report: dict[str, Any] = {"npu": partition.summarize(decisions, desc)}
    artifacts: list[Artifact] = []

    def build(regions: list[Region]) -> list[Any]:
        """The codegen proper, called by ``relax.ext.edgecc_npu_<codegen>``."""
        if desc.codegen == "c":
            return _c_module(regions, output_dir)
        artifacts.extend(_vela(regions, desc, output_dir, report))
        return []  # Ethos-U regions: the host runner registers the simulator per symbol

    # Vela compiles and cascades connected layers as one region; the C codegen writes one
    # function per composite
    merge = desc.codegen == "vela" and options.merge_regions
    with lowering.captured_native_stderr(show=options.tvm_log):
        parted = relax_partition(exported, desc, merge, build)
    report["npu"]["byoc"] = _byoc_report(parted, report["npu"], desc)
    module = parted.module
    if module.attrs is not None and "const_name_to_constant" in module.attrs:
        # the regions carry their constants (C arrays, regions.npz); none go to the VM
        module = module.without_attr("const_name_to_constant")
    if desc.codegen == "c":
        artifacts.append(Artifact(C_SOURCE, "source", "C++ source of the NPU regions (compiled "
                                                      "into model.so)"))
    target, fcompile = cpu_target(options)
    lowering.build(module, target, os.path.join(output_dir, LIBRARY), "edgecc",
                   fcompile=fcompile, show_tvm_log=options.tvm_log)
    if arm64_preset(options.cpu) is not None:
        artifacts.append(Artifact(_copy_arm64_runner(output_dir), "runner",
                                  "deploy runner (numpy + TVM runtime) for the arm64 board"))
    artifacts.insert(0, Artifact(LIBRARY, "library",
                                 f"TVM Relax VM executable: CPU part ({options.cpu}) "
                                 + ("with the NPU regions' C code" if desc.codegen == "c"
                                    else "calling the NPU regions by symbol")))
    extra = {r.name: {"symbol": r.name, "macs": r.macs(), **parted.boundary[r.name],
                      "composites": parted.composites[r.name], **_vela_extra(report, r.name)}
             for r in parted.regions}
    artifacts += [Artifact(p, "regions", "the NPU regions as compiled (structure, constants)")
                  for p in save_regions(parted.regions, output_dir, extra)]
    _write_readme(program, output_dir, desc, report["npu"], options.cpu)
    artifacts.append(Artifact(README, "docs", "what is in the bundle and how to run it"))
    return Lowered(artifacts, report)


ARM64_CC = "aarch64-linux-gnu-g++"


def cpu_target(options: NpuOptions) -> tuple[Any, Any]:
    """The LLVM target and export compiler of the CPU part (``cpu=``): this machine, or an
    arm64 preset's core linked by the aarch64 cross compiler (which also compiles the
    regions' C source)."""
    import shutil

    import tvm
    from tvm.support import cc

    from edgecc.targets.tvm import lowering

    preset = arm64_preset(options.cpu)
    if preset is None:
        return lowering.llvm_target(None, options.num_threads or None), None
    from edgecc.targets.arm.presets import llvm_spec
    from edgecc.targets.arm.presets import resolve as resolve_arm

    if shutil.which(ARM64_CC) is None:
        raise LoweringError(f"cpu={options.cpu}: cross compiler '{ARM64_CC}' not found: "
                            "apt-get install g++-aarch64-linux-gnu (or scripts/setup_arm.sh)")
    spec = llvm_spec(resolve_arm(preset), "aarch64-linux-gnu", options.num_threads)
    return tvm.target.Target(spec), cc.cross_compiler(ARM64_CC)


def _copy_arm64_runner(output_dir: str) -> str:
    """The arm64 target's deploy runner (numpy + TVM runtime), which the board and qemu run."""
    import shutil

    from edgecc.targets.arm import lower as arm_lower

    src = os.path.join(os.path.dirname(arm_lower.__file__), arm_lower.RUNNER)
    shutil.copyfile(src, os.path.join(output_dir, arm_lower.RUNNER))
    return arm_lower.RUNNER


def _vela_extra(report: dict[str, Any], name: str) -> dict[str, Any]:
    for entry in report.get("vela", {}).get("regions", []):
        if entry["region"] == name:
            return {"vela": {k: entry[k] for k in ("command_stream_bytes", "weights_bytes")},
                    "npu_cycles": entry["performance"]["npu_cycles"]}
    return {}


def _c_module(regions: list[Region], output_dir: str) -> list[Any]:
    import tvm

    source = module_source([(r, r.name) for r in regions])
    with open(os.path.join(output_dir, C_SOURCE), "w") as f:
        f.write(source)
    if not regions:
        return []
    return [tvm.get_global_func("runtime.CSourceModuleCreate")(
        source, "cc", [r.name for r in regions], [])]


def _vela(regions: list[Region], desc: NpuDescription, output_dir: str,
          report: dict[str, Any]) -> list[Artifact]:
    from edgecc.targets.npu.tflite_writer import write_tflite
    from edgecc.targets.npu.vela_compile import VELA_VERSION, compile_region, driver_header

    artifacts: list[Artifact] = []
    per_region, cycles, latency = [], 0, 0.0
    os.makedirs(os.path.join(output_dir, "npu"), exist_ok=True)
    for r in regions:
        tflite = write_tflite(r)
        result = compile_region(tflite, desc)  # raises if Vela left an operator on the CPU
        stem = os.path.join("npu", "".join(c if c.isalnum() else "_" for c in r.name))
        files = {f"{stem}.tflite": (tflite, "region", f"region {r.name} as int8 TFLite"),
                 f"{stem}_vela.tflite": (result.optimised_tflite, "npu",
                                         f"Vela {VELA_VERSION} output for TFLite Micro "
                                         "(ethos-u custom op)"),
                 f"{stem}.h": (driver_header(result, r.name).encode(), "npu",
                               "ethos-u core driver header: command stream, weights, "
                               "base addresses")}
        for path, (data, kind, what) in files.items():
            with open(os.path.join(output_dir, path), "wb") as f:
                f.write(data)
            artifacts.append(Artifact(path, kind, what))
        perf = result.performance
        cycles += perf["npu_cycles"]
        latency += perf["latency_s"]
        entry = {"region": r.name, "ops": [op.kind for op in r.ops],
                 "cpu_operators": list(result.cpu_operators),
                 "command_stream_bytes": len(result.command_stream),
                 "weights_bytes": len(result.read_only), "scratch_bytes": result.scratch_size,
                 "performance": perf}
        per_region.append(entry)
    report["vela"] = {"version": VELA_VERSION, "accelerator": desc.vela.accelerator,
                      "regions": per_region, "npu_cycles": cycles,
                      "estimated_npu_latency_s": latency, "clock_hz": desc.memory.clock_hz}
    return artifacts


def _write_readme(program: Program, output_dir: str, desc: NpuDescription,
                  npu: dict[str, Any], cpu: str = "host") -> None:
    with open(os.path.join(os.path.dirname(__file__), README)) as f:
        template = f.read()
    specs = program.input_specs
    example = ", ".join(f"tvm.runtime.tensor(np.zeros({example_shape(s)}, '{s.dtype}'))"
                        for s in specs)
    if desc.codegen == "c":
        how = ("The NPU regions are C code inside model.so (npu_regions.cc is the source), so "
               "model.so runs the whole model on this CPU.")
    else:
        how = ("The NPU regions are Ethos-U command streams in npu/*.h (ethos-u core driver, "
               "ethosu_invoke_v3) and npu/*_vela.tflite (TFLite Micro with the ethos-u "
               "operator). model.so calls each region by its symbol (regions.json): on the "
               "device, register a function of that name that invokes the region's "
               "command stream; `edgecc run` registers edgecc's integer simulator instead "
               "(in Python: edgecc.targets.npu.runner.register_simulated_regions('.') before "
               "the VM below).")
    with open(os.path.join(output_dir, README), "w") as f:
        f.write(template.format(device=desc.name, cpu=cpu, codegen=desc.codegen, how=how,
                                example=example, npu_ops=npu["npu_ops"], ops=npu["ops"],
                                mac_share=f"{100 * npu['npu_mac_share']:.1f}",
                                inputs=", ".join(s.describe() for s in specs)))
