"""Issue 18's goals over several runs of ``bench/tvm_cpu.py``: one goal's paired ratio read from
each run's JSON side by side, with the median over runs and how many runs met the goal. On this
shared 2-vCPU machine a model's ratio moves 0.1-0.4 between rounds (``ratio_quartiles``) and a few
percent between runs, so a goal at the line is judged on several runs, not on one.

    python bench/tvm_cpu_runs.py bench/results/tvm_cpu.json bench/results/tvm_cpu_run2.json ...

Prints a table per goal (models as rows, runs as columns) and writes
``bench/results/tvm_cpu_runs.json`` (``--output``). Goals (issue 18):

======================================  =========  ==========================================
ratio key in each row's ``ratios``      goal       meaning
======================================  =========  ==========================================
``edgecc_fp32_vs_ort_fp32``             <= 1.0     default build vs onnxruntime fp32
``edgecc_fp32_tuned_vs_ort_fp32``       <= 0.8     ``--tune`` build vs onnxruntime fp32
``edgecc_int8_vs_edgecc_fp32``          <= 0.6     w8a8 integer kernels vs edgecc fp32 (VNNI)
``edgecc_int8_vs_ort_int8``             < 1.0      w8a8 vs onnxruntime's QDQ int8
``edgecc_w4a16_vs_edgecc_fp32``         <= 1.0     weight-only int4 vs edgecc fp32
======================================  =========  ==========================================

A run without a column (no ``--tune``, no w4a16 for CNNs) shows ``-`` there and does not count.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (ratio key, limit, strictly below the limit?, label)
GOALS = (
    ("edgecc_fp32_vs_ort_fp32", 1.0, False, "default fp32 / ort fp32"),
    ("edgecc_fp32_tuned_vs_ort_fp32", 0.8, False, "tuned fp32 / ort fp32"),
    ("edgecc_int8_vs_edgecc_fp32", 0.6, False, "w8a8 / edgecc fp32"),
    ("edgecc_int8_vs_ort_int8", 1.0, True, "w8a8 / ort int8"),
    ("edgecc_w4a16_vs_edgecc_fp32", 1.0, False, "w4a16 / edgecc fp32"),
)


def load_run(path: str) -> dict[str, dict[str, float]]:
    """``{model: {ratio key: paired ratio}}`` of one ``tvm_cpu.py`` JSON."""
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path} as JSON ({exc}); pass the JSON files "
                         "bench/tvm_cpu.py writes (bench/results/tvm_cpu*.json)")
    if not isinstance(data, dict) or "rows" not in data:
        raise ValueError(f"{path} is not a bench/tvm_cpu.py result (no 'rows'); "
                         "pass the JSON files that bench writes")
    return {row["model"]: dict(row.get("ratios", {})) for row in data["rows"]}


def goal_table(runs: list[dict[str, dict[str, float]]], key: str, limit: float,
               strict: bool) -> list[dict]:
    """One row per model: the ratio in each run (None where absent), median, runs meeting it."""
    models: list[str] = []
    for run in runs:
        models += [m for m in run if m not in models]
    rows = []
    for model in models:
        values = [run.get(model, {}).get(key) for run in runs]
        present = [v for v in values if v is not None]
        if not present:
            continue
        met = sum(v < limit if strict else v <= limit for v in present)
        rows.append({"model": model, "runs": values, "median": statistics.median(present),
                     "met": met, "of": len(present)})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="bench/tvm_cpu.py JSON files, one per run")
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                         "tvm_cpu_runs.json"))
    args = parser.parse_args()
    try:
        runs = [load_run(path) for path in args.results]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    names = [os.path.basename(path) for path in args.results]
    out = {"benchmark": "issue 18 goals over several bench/tvm_cpu.py runs", "runs": names,
           "goals": []}
    for key, limit, strict, label in GOALS:
        rows = goal_table(runs, key, limit, strict)
        if not rows:
            continue
        print(f"\n{label} (goal {'<' if strict else '<='} {limit}); runs: "
              + ", ".join(names))
        for row in rows:
            cells = " ".join("   -  " if v is None else f"{v:6.3f}" for v in row["runs"])
            print(f"  {row['model']:<18} {cells}   median {row['median']:.3f}   "
                  f"met {row['met']}/{row['of']}")
        out["goals"].append({"key": key, "goal": limit, "label": label, "rows": rows})
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump(out, handle, indent=1)
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
