"""Lower a program for ``-t npu``: NPU regions by the description's codegen, the rest by the
TVM layer for the CPU, in one TVM library.

1. ``partition.classify`` decides per node (the deployability report); each NPU layer is an
   int8 ``Region``.
2. The program is imported into TVM Relax with converters that replace each NPU layer
   (and the quantize of its output) by ``call_dps_packed(<region symbol>, x_int8_nhwc)``;
   everything else is converted as the host target does (float, CPU).
3. Codegen per region:
   * ``c`` (generic-int8): C++ source (``codegen_c``) compiled into ``model.so`` as an
     external module: the whole model executes here.
   * ``vela`` (Ethos-U): region ``.tflite`` -> Vela 5.2 (``vela_compile``): command stream,
     encoded weights, Vela's optimised ``.tflite``, a C header for the ethos-u core driver and
     the performance report (NPU cycles). The host runner executes these regions with the
     integer simulator, since nothing here runs an Ethos-U command stream.
4. ``regions.json`` / ``regions.npz``: the regions as compiled, for the runner and tests.
"""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecc.errors import LoweringError
from edgecc.program import Program
from edgecc.target import Artifact, Lowered, example_shape
from edgecc.targets.npu import partition
from edgecc.targets.npu.bundle import save_regions
from edgecc.targets.npu.codegen_c import module_source, symbol
from edgecc.targets.npu.description import NpuDescription
from edgecc.targets.npu.presets import resolve
from edgecc.targets.npu.region import Region

if TYPE_CHECKING:
    from edgecc.targets.npu.target import NpuOptions

LIBRARY = "model.so"
README = "README.txt"
C_SOURCE = "npu_regions.cc"


def _digest(region: Region) -> str:
    h = hashlib.sha256(region.name.encode())
    for t in region.tensors.values():
        h.update(repr((t.name, t.shape, t.quant)).encode())
        if t.data is not None:
            h.update(np.ascontiguousarray(t.data).tobytes())
    for op in region.ops:
        h.update(repr((op.kind, op.inputs, sorted(op.attrs.items()))).encode())
    return h.hexdigest()[:10]


def exported_decisions(program: Program, desc: NpuDescription) -> tuple[Any, list]:
    """The program's ``torch.export`` form and the partition decisions on its graph."""
    from edgecc.targets.tvm.integer_lowering import exported_constants
    from edgecc.targets.tvm.quant_lowering import widen_fp8_constants

    exported = widen_fp8_constants(program).export()
    constants = exported_constants(exported)

    def constant(node):
        return constants.get(node.name) if node.op == "placeholder" else None

    return exported, partition.classify(exported.graph_module.graph, constant, desc)


def _converters(groups: list[partition.Group], symbols: dict[str, str]) -> dict[str, Any]:
    """The TVM importer's converters with each NPU region called where its output layer
    was; the other layers of a merged region are left unused (DCE removes them)."""
    from tvm import relax

    from edgecc.targets.tvm.converters import CUSTOM_CONVERTERS

    base = CUSTOM_CONVERTERS  # (node, importer) converters, as integer_lowering wraps them
    converters = dict(CUSTOM_CONVERTERS)
    requantized: dict[Any, Any] = {}
    at_output = {g.output.node: g for g in groups}
    inside = {layer.node for g in groups for layer in g.layers if layer is not g.output}
    inside |= {n for g in groups for layer in g.layers for n in layer.absorbed}

    def prepare(bb, x, q, layer):
        """A region input as the NPU takes it: NHWC (padded on the CPU where TFLite's
        SAME differs from the graph's padding), or the rows of a fully connected."""
        op = relax.op
        spec = layer.input_specs[layer.input_nodes.index(q)]
        if layer.kind == "fully_connected":
            return bb.emit(op.reshape(x, list(spec[1])))
        if len(spec[1]) != 4:
            return x
        if any(layer.cpu_pad):
            t, l, b, r = layer.cpu_pad
            x = bb.emit(op.nn.pad(x, [0, 0, 0, 0, t, b, l, r], pad_value=float(spec[3])))
        return bb.emit(op.permute_dims(x, [0, 2, 3, 1]))

    def region_call(group, node, importer):
        bb, op = importer.block_builder, relax.op
        region = group.region
        out = region.tensors[region.outputs[0]]
        args = [prepare(bb, importer.env[q], q, layer) for q, layer in group.inputs]
        y = bb.emit(relax.call_dps_packed(symbols[region.name], args,
                                          relax.TensorType(list(out.shape), "int8")))
        if group.output.kind == "fully_connected":
            y = bb.emit(op.reshape(y, [int(d) for d in node.meta["val"].shape]))
        elif len(out.shape) == 4:
            y = bb.emit(op.permute_dims(y, [0, 3, 1, 2]))
        requantized[group.output.out_q] = y
        return y

    def layer_converter(name):
        def fallback(node, importer):
            if name in base:
                return base[name](node, importer)
            # the importer's own converter (a fresh map: ours replaced its entry)
            return importer.create_convert_map()[name](node)

        def convert(node, importer):
            if node in at_output:
                return region_call(at_output[node], node, importer)
            if node in inside:  # computed inside a merged region; nothing reads this
                shape = [int(d) for d in node.meta["val"].shape]
                return relax.const(np.zeros(shape, np.float32))
            return fallback(node, importer)

        return convert

    for name in ("convolution.default", "conv_act.default", "linear.default",
                 "linear_act.default", "add.Tensor", "relu.default"):
        converters[name] = layer_converter(name)
    quantize_fallback = base["quantize.default"]

    def quantize(node, importer):
        if node in requantized:
            return requantized[node]
        return quantize_fallback(node, importer)

    converters["quantize.default"] = quantize
    return converters


def lower_program(program: Program, output_dir: str, options: NpuOptions) -> Lowered:
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program

    from edgecc.errors import one_line
    from edgecc.targets.tvm import lowering

    desc = resolve(options.device, options.description)
    exported, decisions = exported_decisions(program, desc)
    report: dict[str, Any] = {"npu": partition.summarize(decisions, desc)}
    layers = [d.layer for d in decisions if d.layer is not None]
    # Vela compiles and cascades connected layers as one region; the C codegen writes one
    # function per op
    groups = (partition.group_layers(layers) if desc.codegen == "vela" and options.merge_regions
              else [partition.Group([la], [(q, la) for q in la.input_nodes], la, la.region)
                    for la in layers])
    regions = [g.region for g in groups]
    report["npu"]["regions"] = [{"region": g.region.name, "nodes": [la.node.name
                                                                    for la in g.layers]}
                                for g in groups]
    symbols = {r.name: symbol(r, _digest(r)) for r in regions}
    converters = _converters(groups, symbols)
    with lowering.captured_native_stderr(show=options.tvm_log):
        try:
            module = from_exported_program(exported, custom_convert_map=converters,
                                           run_ep_decomposition=False)
            module = relax.transform.DeadCodeElimination()(module)
        except Exception as exc:
            raise LoweringError(f"TVM Relax import failed: {one_line(exc)}") from exc

    artifacts: list[Artifact] = []
    extra: dict[str, dict[str, Any]] = {r.name: {"symbol": symbols[r.name],
                                                 "macs": r.macs()} for r in regions}
    if desc.codegen == "c":
        module = _attach_c(module, regions, symbols, output_dir)
        artifacts.append(Artifact(C_SOURCE, "source", "C++ source of the NPU regions (compiled "
                                                      "into model.so)"))
    else:
        artifacts += _vela(regions, desc, output_dir, extra, report)
    target = lowering.llvm_target(None, options.num_threads or None)
    lowering.build(module, target, os.path.join(output_dir, LIBRARY), "edgecc",
                   show_tvm_log=options.tvm_log)
    artifacts.insert(0, Artifact(LIBRARY, "library",
                                 "TVM Relax VM executable: CPU part (llvm) "
                                 + ("with the NPU regions' C code" if desc.codegen == "c"
                                    else "calling the NPU regions by symbol")))
    artifacts += [Artifact(p, "regions", "the NPU regions as compiled (structure, constants)")
                  for p in save_regions(regions, output_dir, extra)]
    _write_readme(program, output_dir, desc, report["npu"])
    artifacts.append(Artifact(README, "docs", "what is in the bundle and how to run it"))
    return Lowered(artifacts, report)


def _attach_c(module: Any, regions: list[Region], symbols: dict[str, str], output_dir: str
              ) -> Any:
    import tvm

    source = module_source([(r, symbols[r.name]) for r in regions])
    with open(os.path.join(output_dir, C_SOURCE), "w") as f:
        f.write(source)
    if not regions:
        return module
    csrc = tvm.get_global_func("runtime.CSourceModuleCreate")(
        source, "cc", [symbols[r.name] for r in regions], [])
    mods = list(module.attrs["external_mods"]) if module.attrs and \
        "external_mods" in module.attrs else []
    return module.with_attr("external_mods", [*mods, csrc])


def _vela(regions: list[Region], desc: NpuDescription, output_dir: str,
          extra: dict[str, dict[str, Any]], report: dict[str, Any]) -> list[Artifact]:
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
        extra[r.name]["vela"] = {k: entry[k] for k in ("command_stream_bytes",
                                                       "weights_bytes")}
        extra[r.name]["npu_cycles"] = perf["npu_cycles"]
    report["vela"] = {"version": VELA_VERSION, "accelerator": desc.vela.accelerator,
                      "regions": per_region, "npu_cycles": cycles,
                      "estimated_npu_latency_s": latency, "clock_hz": desc.memory.clock_hz}
    return artifacts


def _write_readme(program: Program, output_dir: str, desc: NpuDescription,
                  npu: dict[str, Any]) -> None:
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
        f.write(template.format(device=desc.name, codegen=desc.codegen, how=how,
                                example=example, npu_ops=npu["npu_ops"], ops=npu["ops"],
                                mac_share=f"{100 * npu['npu_mac_share']:.1f}",
                                inputs=", ".join(s.describe() for s in specs)))
