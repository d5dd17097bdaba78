"""The ONNX import checks itself against onnxruntime.

After an import, the original file runs in onnxruntime and the imported program in PyTorch
on the same fresh random inputs (shaped as the program's inputs: the declared shapes, or
``--input-shape``). The metric is the largest output error relative to the output's
magnitude, ``max|edgecc - ort| / max|ort|``, so a model whose activations are large is
judged at its own scale.

When the outputs differ beyond the tolerance, the check finds where, with every
intermediate tensor of onnxruntime (graph outputs added to a copy of the model):

* each node's converter runs alone on onnxruntime's own inputs of that node. A node that
  disagrees there is an import bug, wherever the model is: the import is refused with one
  line naming the node (name and op type) and its error.
* when every node agrees alone, the difference is float32 rounding that the model itself
  amplifies (activations of 1e19 under random weights, say), not an import bug: the import
  is kept, the record says so (``"amplified"``), with the first tensor where the chained
  outputs part and the activations' magnitude.

The record (metric, value, tolerance, samples, onnxruntime version, seconds) goes into the
program and from there into the manifest.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from edgecc.errors import ModelLoadError, one_line

log = logging.getLogger(__name__)

METRIC = "max_abs_err / max_abs_ref"


class ImportCheckError(ModelLoadError):
    """The imported program disagrees with onnxruntime on the original model."""


@dataclass(frozen=True)
class ImportCheckOptions:
    """``enabled``: run the check at all (CLI ``--no-import-check`` turns it off).
    ``tolerance``: largest accepted error relative to the tensor's magnitude (float32 ops
    agree to ~1e-6; a wrong attribute or formula is off by 1e-2 or more).
    ``samples``: fresh random inputs checked; models whose weights exceed
    ``large_model_bytes`` are checked on one."""

    enabled: bool = True
    tolerance: float = 1e-4
    samples: int = 2
    large_model_bytes: int = 256 << 20
    seed: int = 1234


def relative_error(got: Any, ref: Any) -> float:
    """``max|got - ref| / max|ref|`` in float64 (exact equality for integers and bools;
    shape or non-finite mismatches are infinite)."""
    g = np.asarray(got.detach().cpu().numpy() if isinstance(got, torch.Tensor) else got)
    r = np.asarray(ref)
    if g.shape != r.shape:
        return float("inf")
    if r.dtype.kind in "biu" or g.dtype.kind in "biu":
        return 0.0 if np.array_equal(g.astype(np.int64), r.astype(np.int64)) else float("inf")
    g, r = g.astype(np.float64), r.astype(np.float64)
    if not np.array_equal(np.isfinite(g), np.isfinite(r)) or \
            not np.array_equal(g[~np.isfinite(g)], r[~np.isfinite(r)], equal_nan=True):
        return float("inf")
    g, r = g[np.isfinite(r)], r[np.isfinite(r)]
    if not r.size:
        return 0.0
    scale = float(np.abs(r).max())
    diff = float(np.abs(g - r).max())
    return diff / scale if scale > 0 else diff


def _skipped(reason: str, started: float) -> dict[str, Any]:
    log.warning("ONNX import check skipped: %s", reason)
    return {"metric": METRIC, "skipped": reason, "seconds": round(time.perf_counter() - started, 3)}


def _session(model_or_path: Any):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    # The graph as written: onnxruntime's fusions change rounding, and intermediate
    # outputs must not be optimized away.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model_or_path, opts, providers=["CPUExecutionProvider"])


def check_import(path: str, program: Any, module: Any, options: ImportCheckOptions) -> dict[str, Any]:
    """Compare ``program`` (imported from ``path`` through ``module``) with onnxruntime on
    ``path``; the record for the manifest, or :class:`ImportCheckError`."""
    started = time.perf_counter()
    if not options.enabled:
        return {"metric": METRIC, "skipped": "disabled (--no-import-check)"}
    try:
        import onnxruntime as ort
    except ImportError:
        return _skipped("onnxruntime is not installed (pip install 'edgecc[onnx]')", started)
    from edgecc.inputs import fresh_inputs

    try:
        session = _session(path)
    except Exception as exc:
        return _skipped(f"onnxruntime cannot run the model ({one_line(exc)[:200]})", started)
    weight_bytes = sum(t.numel() * t.element_size() for t in program.graph_module.state_dict().values())
    samples = 1 if weight_bytes > options.large_model_bytes else max(options.samples, 1)
    names = list(module.input_names)
    worst, worst_inputs = 0.0, None
    for k in range(samples):
        inputs = fresh_inputs(program, options.seed + k)
        feed = {n: x.numpy() for n, x in zip(names, inputs)}
        try:
            refs = session.run(None, feed)
        except Exception as exc:
            return _skipped(f"onnxruntime failed on the model ({one_line(exc)[:200]})", started)
        with torch.no_grad():
            got = program(*inputs)
        got = got if isinstance(got, (tuple, list)) else (got,)
        err = max((relative_error(g, r) for g, r in zip(got, refs)), default=0.0)
        if err >= worst:
            worst, worst_inputs = err, inputs
    record = {
        "metric": METRIC, "value": worst, "tolerance": options.tolerance, "samples": samples,
        "onnxruntime": ort.__version__, "passed": worst <= options.tolerance,
    }
    if worst > options.tolerance:
        record.update(_localize(path, module, worst_inputs, names, options))
        if record.get("diverging_node") is not None:
            record["seconds"] = round(time.perf_counter() - started, 3)
            node = record["diverging_node"]
            raise ImportCheckError(
                f"'{path}': the imported model does not match onnxruntime ({METRIC} "
                f"{worst:.3g} > {options.tolerance:g}); the first diverging tensor is "
                f"'{node['tensor']}' from node '{node['name']}' ({node['op_type']}), off by "
                f"{node['value']:.3g} on onnxruntime's own inputs: an edgecc converter bug, "
                "please report it; --no-import-check (import_check=False) skips this check"
            )
        log.warning("ONNX import check: %s", record.get("diagnosis"))
        record["passed"] = True
    record["seconds"] = round(time.perf_counter() - started, 3)
    return record


def _with_all_outputs(path: str):
    """A copy of the model whose graph outputs include every node output."""
    import onnx

    model = onnx.load(path)
    have = {o.name for o in model.graph.output}
    for node in model.graph.node:
        for name in node.output:
            if name and name not in have:
                model.graph.output.append(onnx.ValueInfoProto(name=name))
                have.add(name)
    return model


def _localize(path: str, module: Any, inputs: tuple, names: list[str],
              options: ImportCheckOptions) -> dict[str, Any]:
    """Where the import parts from onnxruntime: the first node whose converter alone
    disagrees with onnxruntime on onnxruntime's inputs (an import bug), else the first
    tensor where the chained outputs part (float error the model amplifies)."""
    from edgecc.onnx_import.converter import Ctx, ShapeValue
    from edgecc.onnx_import.registry import lookup, node_key

    try:
        model = _with_all_outputs(path)
        session = _session(model.SerializeToString())
        out_names = [o.name for o in session.get_outputs()]
        values = session.run(None, {n: x.numpy() for n, x in zip(names, inputs)})
    except Exception as exc:
        return {"diagnosis": f"intermediate tensors unavailable ({one_line(exc)[:200]})"}
    ort_values = dict(zip(out_names, values))
    ort_values.update({n: x.numpy() for n, x in zip(names, inputs)})
    static = {**module.static_values, **ort_values}
    params = {name: getattr(module, attr) for name, attr in module.attr_of.items()}

    def as_torch(name: str) -> Any:
        if not name:
            return None
        if name in params:
            return params[name]
        value = ort_values.get(name)
        return None if value is None else torch.from_numpy(np.array(value))

    for node in module.nodes:
        if not all(n in ort_values for n in node.output if n) or \
                any(n and n not in ort_values and n not in params for n in node.input):
            continue  # a tensor the version converter renamed: onnxruntime has no value for it
        try:
            with torch.no_grad():
                out = lookup(node_key(node), module.opset)(
                    Ctx(node, module.opset, static, module.formats), *[as_torch(n) for n in node.input])
        except Exception:
            continue  # the converter needs a form (a shape value) only the traced run gives
        outs = out if isinstance(out, tuple) else (out,)
        for name, value in zip(node.output, outs):
            if not name or value is None:
                continue
            value = value.tensor() if isinstance(value, ShapeValue) else value
            err = relative_error(value, ort_values[name])
            if err > options.tolerance:
                return {"diverging_node": {"name": node.name or "(unnamed)", "op_type": node.op_type,
                                           "tensor": name, "value": err}}

    env: dict[str, Any] = {}
    module.record = env
    try:
        with torch.no_grad():
            module.run(*inputs)
    finally:
        module.record = None
    magnitude = max((float(np.abs(v).max()) for v in ort_values.values()
                     if isinstance(v, np.ndarray) and v.dtype.kind == "f" and v.size
                     and np.isfinite(v).all()), default=0.0)
    first = None
    for node in module.nodes:
        for name in node.output:
            if name in env and name in ort_values and not isinstance(env[name], ShapeValue) \
                    and relative_error(env[name], ort_values[name]) > options.tolerance:
                first = (node, name)
                break
        if first:
            break
    where = (f"the chained outputs first part at '{first[1]}' from node "
             f"'{first[0].name or '(unnamed)'}' ({first[0].op_type})") if first else \
        "no intermediate tensor parts beyond the tolerance"
    return {
        "amplified": True, "max_activation": magnitude,
        "diagnosis": (f"every node matches onnxruntime on onnxruntime's own inputs, but the "
                      f"outputs differ: float32 rounding amplified by the model (activations "
                      f"reach {magnitude:.3g}); {where}"),
    }
