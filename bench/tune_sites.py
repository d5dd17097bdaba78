"""The end-to-end stage of ``--tune`` (``targets/tvm/end_to_end.py``) on the issue's CNNs,
without MetaSchedule: which call sites the per-call-site kernel-variant search
(``end_to_end_sites``) changed, what the rule chose, and the site table's ratio to the
default in a confirming pass of the two alone (``CONFIRM_ROUNDS`` interleaved rounds, paired
per round; run here even when the screening did not pass it, so its effect is known).

    python bench/tune_sites.py [--models resnet20,mobilenet_v2] [--modes fp32,int8]

Prints a table and writes bench/results/tune_sites.json. The machine's load (``uptime``) is
recorded: on a shared machine the ratios are noisy (the rule's bound says how much).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import edgecc  # noqa: E402
from bench.tvm_cpu import THREADS, calibration, models  # noqa: E402
from edgecc.targets.tvm import end_to_end  # noqa: E402

PIPELINES = {"fp32": ("fold-batchnorm,fuse,dce", {}),
             "int8": ("fold-batchnorm,quantize{scheme=w8a8},fuse,dce",
                      {"integer_kernels": True})}


class _Captured(Exception):
    pass


def relax_module(model, inputs, mode):
    """The Relax module and target a host compile hands to ``tune_host`` (captured there:
    the compile stops before MetaSchedule)."""
    pipeline, options = PIPELINES[mode]
    got = {}

    def capture(module, target, trials, **_):
        got["module"], got["target"] = module, target
        raise _Captured

    real = end_to_end.tune_host
    end_to_end.tune_host = capture
    try:
        with tempfile.TemporaryDirectory() as d:
            edgecc.compile(model, "host", example_inputs=inputs, pipeline=pipeline,
                           calibration=calibration(inputs) if mode == "int8" else None,
                           output_dir=os.path.join(d, "o"), progress=False,
                           target_options={"num_threads": THREADS, "tune_trials": 1, **options})
    except Exception:  # the compile wraps the capture's exception
        if "module" not in got:
            raise
    finally:
        end_to_end.tune_host = real
    return got["module"], got["target"]


def confirm_table(module, target, settings):
    """The site table against the default: ``CONFIRM_ROUNDS`` interleaved rounds, the rule's
    verdict (ratio, noise, bound)."""
    with tempfile.TemporaryDirectory() as d:
        libs = {}
        for name, s in (("default", end_to_end.KernelSettings()), ("table", settings)):
            path = os.path.join(d, f"{name}.so")
            end_to_end._build(end_to_end.build_module(module, s), target, None, path)
            libs[name] = end_to_end._Library(path, THREADS)
        inputs = end_to_end._inputs(module)
        for lib in libs.values():
            lib.vm.run(*inputs)
        block = end_to_end.block_size(lambda: libs["default"].vm.run(*inputs))
        cands = {"default": (libs["default"], end_to_end.KernelSettings()),
                 "table": (libs["table"], settings)}
        times = end_to_end._time_rounds(cands, list(libs.values()), inputs,
                                        end_to_end.CONFIRM_ROUNDS, block)
        return end_to_end.verdict(times["default"], times["table"])


def search_only(name, mode, module, target, load):
    """The per-call-site kernel-variant search alone, on the wrappers' build."""
    from edgecc.targets.tvm.end_to_end_sites import site_knob_search
    from edgecc.targets.tvm.lowering import hand_written_kernels

    callees = end_to_end.call_sites(hand_written_kernels(module, target))
    zeros = end_to_end.KernelSettings(sites=((0, 0),) * len(callees))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "sites.so")
        end_to_end._build(end_to_end.with_kernel_settings(module, zeros), target, None, path)
        library = end_to_end._Library(path, THREADS)
        inputs = end_to_end._inputs(module)
        for _ in range(2):
            library.vm.run(*inputs)
        block = end_to_end.block_size(lambda: library.vm.run(*inputs))
        _, sk = site_knob_search(library, callees, inputs, block)
    rep = sk.get("replication") or {}
    rep = rep.get("second", rep)
    print(f"{name} {mode} (search only): load {load:.2f}, {sk['changed']}/{sk['sites']} sites "
          f"changed ({sk['screened']} screened; replicated whole: site sums "
          f"{rep.get('total_us')} us off/on, {rep.get('total_wins')} wins), {sk['blocks']} "
          f"blocks of {sk['calls_per_block']} runs, {sk['seconds']} s", flush=True)
    for choice in sk["choices"] or [f"(screened, not replicated) {c}"
                                    for c in sk["screened_choices"]]:
        print("   ", choice)
    return {"model": name, "mode": mode, "load_1min": round(load, 2), "search_only": True,
            "site_knobs": sk}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20,mobilenet_v2")
    parser.add_argument("--modes", default="fp32,int8")
    parser.add_argument("--suffix", default="", help="appended to the JSON's name")
    parser.add_argument("--search-only", action="store_true",
                        help="only the per-site search and its replication (one build: the "
                             "call-site wrappers'), no whole-model candidates")
    args = parser.parse_args()
    table = models()
    rows = []
    for name in args.models.split(","):
        make, inputs, _ = table[name]
        for mode in args.modes.split(","):
            load = os.getloadavg()[0]
            with torch.no_grad():
                module, target = relax_module(make().eval(), inputs, mode)
            start = time.perf_counter()
            if args.search_only:
                rows.append(search_only(name, mode, module, target, load))
                continue
            record = end_to_end.measure(module, target, None, False)
            sk = record["site_knobs"] or {}
            site_names = [k for k in record["ms"] if "per-call-site kernel variants" in k]
            row = {"model": name, "mode": mode, "load_1min": round(load, 2),
                   "chosen": record["chosen"], "default_ms": record["default_ms"],
                   "chosen_ms": record["chosen_ms"], "confirm": record["confirm"],
                   "site_knobs": sk, "seconds": round(time.perf_counter() - start, 1),
                   "site_table_screening": {k: record["verdicts"][k] for k in site_names}}
            for k in site_names:  # the table alone (not a combination) confirmed here
                if not k.startswith(("default, per-call-site kernel variants",)):
                    continue
                settings = end_to_end.KernelSettings(site_knobs=sk["table"])
                row["site_table_confirm"] = confirm_table(module, target, settings)
            rows.append(row)
            rep = sk.get("replication") or {}
            rep = rep.get("second", rep)
            print(f"{name} {mode}: load {load:.2f}, {sk.get('changed', 0)}/{sk.get('sites', 0)} "
                  f"sites changed ({sk.get('screened', 0)} screened; replicated whole: site sums "
                  f"{rep.get('total_us')} us off/on, {rep.get('total_wins')} wins) "
                  f"({sk.get('seconds', 0)} s search); chosen: {record['chosen']} "
                  f"({record['chosen_ms']} vs {record['default_ms']} ms)", flush=True)
            for choice in sk.get("choices", []):
                print("   ", choice)
            for k, v in row["site_table_screening"].items():
                print(f"    screening {k[:60]}...: ratio {v['ratio']} bound {v['bound']}")
            if "site_table_confirm" in row:
                v = row["site_table_confirm"]
                print(f"    table alone, {v['rounds']} rounds: ratio {v['ratio']} noise "
                      f"{v['noise']} bound {v['bound']} wins {v['wins']}")
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                       f"tune_sites{args.suffix}.json")
    with open(out, "w") as f:
        json.dump({"threads": THREADS, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
