"""The ``edgecc`` command line.

    edgecc compile MODEL -t TARGET [-p PIPELINE | -r RECIPE] [--calib DATA] -o OUT
    edgecc inspect MODEL        edgecc passes        edgecc targets        edgecc run OUT ...
    edgecc report OUT

Errors the user can fix print one line and exit with code 2 (``--debug`` shows the
traceback); commands whose output is data accept ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgecc.errors import EdgeccError, InputSpecError

EXIT_USAGE = 2


# -- formatting helpers ---------------------------------------------------------------------

def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GB"


def human_count(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def _change(before: float, after: float) -> str:
    if not before:
        return ""
    return f"{(after - before) / before * 100:+.1f}%"


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(  # noqa: E731
        str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([fmt(header), "  ".join("-" * w for w in widths), *map(fmt, rows)])


def _print_json(data: Any) -> None:
    from edgecc.manifest import jsonable

    print(json.dumps(jsonable(data), indent=2))


# -- argument helpers -----------------------------------------------------------------------

def parse_input_shapes(values: Sequence[str]) -> list[tuple[str, list[int], Any]]:
    """``NAME:1x3x224x224[:dtype]`` -> ``(name, shape, dtype)``."""
    import torch

    from edgecc.program import dtype_from_name

    out = []
    for text in values:
        parts = text.split(":")
        if len(parts) not in (2, 3) or not parts[0]:
            raise InputSpecError(
                f"--input-shape '{text}' must look like NAME:1x3x224x224 or NAME:1x128:int64"
            )
        try:
            shape = [int(d) for d in parts[1].lower().split("x")]
        except ValueError:
            raise InputSpecError(f"--input-shape '{text}': dimensions must be integers") from None
        dtype = dtype_from_name(parts[2]) if len(parts) == 3 else torch.float32
        out.append((parts[0], shape, dtype))
    return out


def example_tensors(shapes: Sequence[tuple[str, list[int], Any]]) -> list[Any] | None:
    """Example inputs for a pickled module (random floats, zero integers)."""
    import torch

    if not shapes:
        return None
    return [torch.randn(s).to(d) if d.is_floating_point else torch.zeros(s, dtype=d)
            for _, s, d in shapes]


def parse_key_values(values: Sequence[str], flag: str) -> dict[str, Any]:
    from edgecc.pipeline_text import _interpret

    out: dict[str, Any] = {}
    for text in values:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise EdgeccError(f"{flag} '{text}' must look like key=value")
        out[key] = _interpret(value)
    return out


def _target_options(args: Any) -> dict[str, Any]:
    options = parse_key_values(args.target_option, "--target-option")
    if args.tune is not None:
        if args.tune < 1:
            raise EdgeccError(f"--tune {args.tune}: the trial budget must be >= 1")
        options["tune_trials"] = args.tune
    return options


def type_name(annotation: Any) -> str:
    """``int``, ``one of a|b|c``, ``... or none`` — how an option type reads in `passes`."""
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "|".join(str(a) for a in args)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        inner = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(inner) + (" or none" if type(None) in args else "")
    if origin in (tuple, list):
        return f"list of {type_name(args[0]) if args else 'values'}"
    return getattr(annotation, "__name__", str(annotation)).replace("typing.", "")


# -- commands -------------------------------------------------------------------------------

def cmd_compile(args: argparse.Namespace) -> int:
    import edgecc.compiler as compiler
    from edgecc import distributed

    distributed.init_from_env(distributed.resolve_device(args.device))  # under torchrun
    shapes = parse_input_shapes(args.input_shape)
    example = example_tensors(shapes)
    named = {n: s for n, s, _ in shapes} or None
    calibration = None
    if args.calib:
        probe = compiler.resolve_model(args.model, example, trust_pickle=args.trust_pickle,
                                       input_shapes=named, import_check=False)
        from edgecc.inputs import load_calibration

        calibration = load_calibration(args.calib, probe.input_specs)
    res = compiler.compile(
        args.model,
        input_shapes=named,
        target=args.target,
        pipeline=args.pipeline,
        recipe=args.recipe,
        example_inputs=example,
        calibration=calibration,
        output_dir=args.output,
        force=args.force,
        target_options=_target_options(args),
        verify=not args.no_verify,
        check_each_pass=args.check_each_pass,
        dump_ir=args.dump_ir,
        trust_pickle=args.trust_pickle,
        progress=False if args.json else None,
        import_check=not args.no_import_check,
        device=args.device,
    )
    if not distributed.is_main():  # rank 0 wrote and reports
        return 0
    if args.report:
        from edgecc.report import write_report

        report_path = write_report(args.output)
    if args.json:
        _print_json(res.report)
        return 0
    print(compile_summary(res.report, args.output))
    if args.report:
        print(f"report: {report_path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from edgecc.report import write_report

    print(write_report(args.output_dir))
    return 0


def compile_summary(report: dict[str, Any], output_dir: str) -> str:
    b, a = report["model"]["before"], report["model"]["after"]
    rows = [
        ("parameters", human_count(b["parameters"]), human_count(a["parameters"]),
         _change(b["parameters"], a["parameters"])),
        ("bytes", human_bytes(b["bytes"]), human_bytes(a["bytes"]), _change(b["bytes"], a["bytes"])),
        ("MACs", human_count(b["macs"]), human_count(a["macs"]), _change(b["macs"], a["macs"])),
        ("operators", str(b["operators"]), str(a["operators"]),
         _change(b["operators"], a["operators"])),
    ]
    lines = [f"edgecc {report['edgecc_version']}: {report['source']} -> {output_dir} "
             f"(target {report['target']['name']}, {report['target']['toolchain']})", "",
             table(rows, ("", "before", "after", "change")), ""]
    lines.append(f"pipeline: {report['pipeline']['text'] or '(none)'}")
    for rec in report["pipeline"]["passes"]:
        stats = ", ".join(f"{k}={v}" for k, v in rec["stats"].items()
                          if not isinstance(v, (list, dict)) and v)
        lines.append(f"  {rec['pass']:<34} {rec['seconds'] * 1000:8.1f} ms  {stats}")
        err = rec["stats"].get("error")
        if isinstance(err, dict) and not rec.get("lossless", True):
            lines.append(f"  {'':<34} {'':>11}  error vs input program on {err['on']}: "
                         f"SQNR {err['sqnr_db']} dB, cosine {err['cosine']}, "
                         f"max-abs {err['max_abs']:.3g}")
    v = report["verification"]
    if v.get("performed"):
        verdict = "PASSED" if v["passed"] else "FAILED"
        against = ("the compressed program" if "compressed" in v["reference"]
                   else "the original model")
        lines.append(
            f"verification: {verdict}  max-abs {v['max_abs']:.2e}  max-rel {v['max_rel']:.2e}  "
            f"cosine {v['cosine']:.6f}  against {against} ({v['samples']} fresh random "
            f"inputs, atol {v['atol']:g}, rtol {v['rtol']:g})")
        fid = v.get("fidelity")
        if fid:
            lines.append(f"fidelity to the original model: cosine {fid['cosine']:.6f}  "
                         f"SQNR {fid['sqnr_db']:.1f} dB  max-abs {fid['max_abs']:.3g}  "
                         f"({fid['samples']} {fid['on']})")
    else:
        lines.append(f"verification: not performed ({v['reason']})")
    for item in report.get("not_verified", []):
        lines.append(f"not verified here: {item}")
    for art in report["artifacts"]:
        lines.append(f"artifact: {art['path']}  {human_bytes(art['bytes'])}  "
                     f"sha256 {art['sha256'][:16]}…")
    return "\n".join(lines)


def cmd_inspect(args: argparse.Namespace) -> int:
    from edgecc.accounting import measure
    from edgecc.frontend import load

    shapes = parse_input_shapes(args.input_shape)
    program = load(args.model, trust_pickle=args.trust_pickle,
                   example_inputs=example_tensors(shapes),
                   input_shapes={n: s for n, s, _ in shapes} or None,
                   import_check=not args.no_import_check)
    size = measure(program)
    ops = dict(sorted(program.op_counts().items(), key=lambda kv: (-kv[1], kv[0])))
    data = {"source": args.model, "inputs": [s.to_json() for s in program.input_specs],
            "outputs": [s.to_json() for s in program.output_specs], **size.to_json(),
            "op_counts": ops}
    if "edgecc.import_check" in program.graph_module.meta:
        data["import_check"] = program.graph_module.meta["edgecc.import_check"]
    deploy_text = ""
    if args.target:  # a target's deployability report (where each op would run, and why)
        from edgecc.compiler import resolve_target

        tgt, tgt_options = resolve_target(args.target, parse_key_values(
            args.target_option, "--target-option"))
        if not hasattr(tgt, "deployability"):
            raise EdgeccError(f"target '{tgt.name}' has no deployability report; "
                              "inspect -t works for: npu")
        data["deployability"], deploy_text = tgt.deployability(program, tgt_options)
    if args.json:
        _print_json(data)
        return 0
    print(f"{args.model}")
    for s in program.input_specs:
        print(f"  input   {s.describe()}")
    for s in program.output_specs:
        print(f"  output  {s.describe()}")
    print(f"  parameters {human_count(size.parameters)} ({size.parameters:,})   "
          f"bytes {human_bytes(size.bytes)}   MACs {human_count(size.macs)}   "
          f"operators {size.operators}")
    print(table([(k, str(v)) for k, v in ops.items()], ("operator", "count")))
    if deploy_text:
        print()
        print(deploy_text)
    if args.ir:
        print()
        print(program)
    return 0


def cmd_passes(args: argparse.Namespace) -> int:
    from edgecc.pass_base import option_fields
    from edgecc.pipeline_text import _format_value
    from edgecc.registry import default_pass_registry

    if args.explain:
        return cmd_explain(args)
    registry = default_pass_registry()
    entries = []
    for name, cls in registry.items():
        opts = [{"name": n, "type": type_name(t), "default": d}
                for n, t, d in option_fields(cls.Options)]
        entries.append({"name": name, "summary": cls.summary(), "lossless": cls.lossless,
                        "options": opts, "origin": registry.origin(name),
                        "source": _source_of(cls)})
    if args.json:
        _print_json(entries)
        return 0
    for e in entries:
        kind = "lossless" if e["lossless"] else "lossy"
        print(f"{e['name']:<20} [{kind}] {e['summary']}")
        print(f"{'':<22}source: {e['source']}")
        for o in e["options"]:
            print(f"{'':<22}{o['name']}: {o['type']} = {_format_value(o['default'])}")
        if e["origin"] != "edgecc":
            print(f"{'':<22}(from {e['origin']})")
    return 0


def _source_of(cls: type) -> str:
    """Where a pass is defined: a path relative to the edgecc checkout for edgecc's own
    passes (passes/fold_batchnorm.py), the module file otherwise."""
    import inspect

    path = inspect.getsourcefile(cls) or cls.__module__
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rel = os.path.relpath(path, root)
    return rel if not rel.startswith("..") else path


def cmd_explain(args: argparse.Namespace) -> int:
    """``passes --explain PASS MODEL``: what each of the pass's rules matched or declined."""
    from edgecc.frontend import load
    from edgecc.pipeline_text import PassStep, parse_pipeline
    from edgecc.rewrite import explain, format_explanation, rule_based

    text, model = args.explain
    steps = parse_pipeline(text)
    if len(steps) != 1 or not isinstance(steps[0], PassStep):
        raise EdgeccError(f"--explain takes one pass (options allowed: 'fuse{{attention=false}}'), "
                          f"got '{text}'")
    pass_ = rule_based(steps[0].pass_cls())
    shapes = parse_input_shapes(args.input_shape)
    program = load(model, trust_pickle=args.trust_pickle, example_inputs=example_tensors(shapes),
                   input_shapes={n: s for n, s, _ in shapes} or None)
    data = {"model": model, **explain(pass_, program, steps[0].options)}
    if args.json:
        _print_json(data)
        return 0
    print(f"{data['pass']} on {model}")
    print(format_explanation(data))
    return 0


def cmd_targets(args: argparse.Namespace) -> int:
    from edgecc.pass_base import make_options, option_fields
    from edgecc.registry import default_target_registry

    entries = []
    for name, cls in default_target_registry().items():
        target = cls()
        avail = target.availability()
        entries.append({"name": name, "description": cls.description,
                        "available": avail.available, "detail": avail.detail,
                        "executes_here": target.executes(make_options(cls, {})),
                        "listing": target.listing(),
                        "options": [{"name": n, "default": d}
                                    for n, _, d in option_fields(cls.Options)]})
    if args.json:
        _print_json(entries)
        return 0
    for e in entries:
        state = "available" if e["available"] else "UNAVAILABLE"
        print(f"{e['name']:<10} {state:<12} {e['description']} -- {e['detail']}")
        if e["options"]:
            opts = ", ".join(f"{o['name']}={o['default']!r}" for o in e["options"])
            print(f"{'':<24}options: {opts}")
        for line in e["listing"].splitlines():
            print(f"{'':<24}{line}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import torch

    from edgecc.compiler import load_compiled
    from edgecc.inputs import load_npz_inputs

    manifest, target, specs = load_compiled(args.output_dir)
    if args.inputs:
        inputs = load_npz_inputs(args.inputs, specs)
    else:
        raise InputSpecError(
            "give --inputs FILE.npz with one array per input: "
            + ", ".join(s.describe() for s in specs))
    if len(inputs) != len(specs):
        raise InputSpecError(f"model takes {len(specs)} input(s), '{args.inputs}' has {len(inputs)}")
    for i, (spec, value) in enumerate(zip(specs, inputs)):
        spec.check(value, i)
    runner = target.load(args.output_dir, manifest)
    outputs = runner.run(*inputs)
    names = [s["name"] for s in manifest["outputs"]]
    if args.save:
        np.savez(args.save, **{n: o.numpy() for n, o in zip(names, outputs)})
    summary = [{"name": n, "shape": list(o.shape), "dtype": str(o.dtype).removeprefix("torch."),
                "mean": float(o.double().mean()) if o.numel() else 0.0,
                "min": float(o.min()) if o.numel() else 0.0,
                "max": float(o.max()) if o.numel() else 0.0}
               for n, o in zip(names, outputs) if isinstance(o, torch.Tensor)]
    if args.json:
        _print_json({"outputs": summary, "saved": args.save})
        return 0
    for s in summary:
        print(f"{s['name']}: {s['dtype']}{s['shape']}  mean {s['mean']:.6g}  "
              f"min {s['min']:.6g}  max {s['max']:.6g}")
    if args.save:
        print(f"saved outputs to {args.save}")
    return 0


# -- parser ---------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edgecc", description="Compile neural networks for edge hardware.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"edgecc {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def model_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("model", help="model file: .pt2 (torch.export.save) or .onnx")
        p.add_argument("--trust-pickle", action="store_true",
                       help="allow loading a pickled .pt/.pth nn.Module, or a .pt2 whose entries hold "
                            "pickled Python objects (runs their code!)")
        p.add_argument("--input-shape", action="append", default=[], metavar="NAME:SHAPE[:DTYPE]",
                       help="fix an input's shape (ONNX symbolic dims) or give a pickled "
                       "module's example input, e.g. x:1x3x224x224")
        p.add_argument("--no-import-check", action="store_true",
                       help="(.onnx) skip checking the import against onnxruntime")

    p = sub.add_parser("compile", help="optimize a model and lower it for a target")
    model_args(p)
    p.add_argument("-t", "--target", default=None, metavar="NAME[:PRESET]",
                   help="target name, with a preset (device) where it has them, e.g. "
                        "arm64:raspberry-pi-5 (see 'edgecc targets')")
    group = p.add_mutually_exclusive_group()
    group.add_argument("-p", "--pipeline", default=None,
                       help="pass pipeline text, e.g. 'fold-batchnorm,fuse,dce'")
    group.add_argument("-r", "--recipe", default=None, help="recipe YAML file or built-in name")
    p.add_argument("--calib", default=None, help="calibration data: .npz or folder of .npz")
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.add_argument("--force", action="store_true", help="replace a non-empty output directory")
    p.add_argument("--device", default=None, metavar="DEVICE",
                   help="where calibration / GPTQ / AWQ statistics run: cpu, cuda or cuda:N "
                        "(under torchrun, cuda is each rank's LOCAL_RANK GPU)")
    p.add_argument("--target-option", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--tune", type=int, default=None, metavar="TRIALS",
                   help="MetaSchedule tuning budget (targets with a tune_trials option); "
                        "records are cached and reused, so a second compile does not tune")
    p.add_argument("--no-verify", action="store_true", help="skip running the artifact")
    p.add_argument("--check-each-pass", action="store_true",
                   help="check outputs after every pass and name the pass that breaks them")
    p.add_argument("--dump-ir", default=None, metavar="DIR", help="write the IR after each pass")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.add_argument("--report", action="store_true",
                   help="also write OUT/report.html (what the compile did, with charts)")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("report", help="write OUT/report.html: one page showing what a "
                                      "compile did (sizes, passes, per-layer charts, checks)")
    p.add_argument("output_dir", help="directory written by 'edgecc compile'")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("inspect", help="show a model's inputs, operators, size and MACs")
    model_args(p)
    p.add_argument("--ir", action="store_true", help="also print the program text")
    p.add_argument("--json", action="store_true")
    p.add_argument("-t", "--target", default=None, metavar="NAME[:PRESET]",
                   help="also report where each op would run on this target (npu)")
    p.add_argument("--target-option", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("passes", help="list registered passes and their options")
    p.add_argument("--explain", nargs=2, metavar=("PASS", "MODEL"), default=None,
                   help="run a rule-based pass's rules on MODEL and say what each matched "
                        "and why it declined the rest")
    p.add_argument("--trust-pickle", action="store_true", help="(--explain) as for inspect")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME:SHAPE[:DTYPE]",
                   help="(--explain) as for inspect")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_passes)

    p = sub.add_parser("targets", help="list targets and whether their toolchain is available")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_targets)

    p = sub.add_parser("run", help="run a compiled artifact on inputs from an .npz file")
    p.add_argument("output_dir", help="directory written by 'edgecc compile'")
    p.add_argument("--inputs", default=None, help=".npz with one array per input")
    p.add_argument("--save", default=None, help="write outputs to this .npz")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_run)

    from edgecc.cli_generate import add_generate_parser  # edgecc generate OUT --prompt ...

    add_generate_parser(sub)
    from edgecc.llm_eval.cli import add_eval_ppl_parser  # edgecc eval-ppl MODEL --ctx N

    add_eval_ppl_parser(sub)
    return parser


def _version() -> str:
    from edgecc import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    from edgecc.logs import quiet_third_party_warnings

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        # other libraries' deprecation notices are not the user's concern; edgecc's own
        # warnings still show (filters scoped to the command: main() also runs inside
        # other programs and tests)
        with quiet_third_party_warnings():
            return int(args.func(args) or 0)
    except EdgeccError as exc:
        if args.debug:
            raise
        print(f"edgecc: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edgecc: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug in edgecc: say so, briefly
        if args.debug:
            raise
        from edgecc.errors import one_line

        print(f"edgecc: internal error: {one_line(exc)} (rerun with --debug for the traceback "
              "and report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
