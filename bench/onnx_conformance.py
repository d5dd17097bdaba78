"""ONNX conformance report: every backend test case shipped in the onnx wheel
(pytorch-converted, pytorch-operator, simple) through edgecc's importer, in PyTorch eager and
on the host target, against the stored outputs. Prints the pass rate and the failures;
writes ``bench/results/onnx_conformance.json``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)

from tests.frontends.onnx.backend_cases import SUITES, cases, run_case  # noqa: E402


def main() -> int:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, path) in enumerate(cases()):
            eager = run_case(path)
            host = run_case(path, "host", os.path.join(tmp, f"c{i}")) if eager == "pass" else eager
            rows.append({"case": name, "eager": eager, "host": host})
    total = len(rows)
    summary = {}
    for suite in SUITES:
        mine = [r for r in rows if r["case"].startswith(suite + "/")]
        summary[suite] = {"cases": len(mine),
                          "eager_pass": sum(r["eager"] == "pass" for r in mine),
                          "host_pass": sum(r["host"] == "pass" for r in mine)}
    print(f"{'suite':<20}{'cases':>7}{'eager':>8}{'host':>8}")
    for suite, s in summary.items():
        print(f"{suite:<20}{s['cases']:>7}{s['eager_pass']:>8}{s['host_pass']:>8}")
    eager_ok = sum(r["eager"] == "pass" for r in rows)
    host_ok = sum(r["host"] == "pass" for r in rows)
    print(f"{'total':<20}{total:>7}{eager_ok:>8}{host_ok:>8}   "
          f"({100 * host_ok / total:.1f}% through the host target)")
    for r in rows:
        if r["host"] != "pass":
            print(f"  FAIL {r['case']}: {r['host'][:140]}")
    out = os.path.join(ROOT, "bench", "results", "onnx_conformance.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"summary": summary, "rows": rows}, f, indent=2)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
