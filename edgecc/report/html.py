"""``report.html``: what a compile did, on one self-contained page read from the manifest.

No network: the CSS is inline, the charts are inline SVG drawn by matplotlib
(:mod:`edgecc.report.charts`). Sections (each an element with the id given):

* ``#model``         parameters, bytes, MACs, operators before / after (``#chart-model``)
* ``#pipeline``      each pass: options, time, error it introduced (``#chart-pass-time``)
* ``#layers``        weight SQNR of every layer (``#chart-sqnr``), sensitivity with the chosen
                     precision (``#chart-sensitivity``), pruned channels / sparsity per layer
                     (``#chart-pruned``), size by layer and dtype (``#chart-size``)
* ``#verification``  the check against the reference, fidelity, what was not verified
* ``#placement``     per-op placement (NPU: device per operator; Jetson: precision per layer)
* ``#artifacts``     files with bytes and sha256

A section without data says why (no quantization in this pipeline, ...), never a blank.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Iterable
from typing import Any

from edgecc.manifest import read_manifest
from edgecc.report import charts

REPORT = "report.html"
MAX_BARS = 40  # layers shown per chart (the largest / worst first)

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2733;
background:#f6f7f9}
header{background:#1f3a5f;color:#fff;padding:18px 28px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;opacity:.85}main{padding:8px 28px 40px;max-width:1100px}
section{background:#fff;border:1px solid #dde2e8;border-radius:8px;padding:14px 18px;margin:16px 0}
h2{font-size:17px;margin:0 0 10px}h3{font-size:14px;margin:14px 0 6px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}td,th{border-bottom:1px solid #e6e9ee;
padding:4px 10px;text-align:right;vertical-align:top}td:first-child,th:first-child{text-align:left}
th{background:#f0f3f7}.pass{color:#2e7d32;font-weight:600}.fail{color:#c62828;font-weight:600}
.empty{color:#6b7785;font-style:italic}figure.chart{margin:8px 0}figure.chart svg{max-width:100%;
height:auto}code{font-size:12px}ul{margin:4px 0 4px 18px;padding:0}.mono{font-family:monospace}
"""


def write_report(output_dir: str) -> str:
    """Write ``OUT/report.html`` from ``OUT/manifest.json`` (atomically); returns its path."""
    manifest = read_manifest(output_dir)
    page = render(manifest)
    path = os.path.join(output_dir, REPORT)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(tmp, path)
    return path


def render(m: dict[str, Any]) -> str:
    """The page for manifest ``m`` (a dict as ``manifest.json`` holds)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        from edgecc.errors import EdgeccError

        raise EdgeccError("the report draws its charts with matplotlib, which is not "
                          "installed: pip install 'edgecc[report]'") from None
    target = m.get("target", {})
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>edgecc report: {_e(m.get('source', ''))} for {_e(target.get('name', ''))}</title>",
        f"<style>{CSS}</style></head><body>",
        "<header><h1>edgecc report</h1>",
        f"<p>{_e(m.get('source', ''))} → <b>{_e(target.get('name', ''))}</b> "
        f"({_e(target.get('toolchain', ''))}) · edgecc {_e(m.get('edgecc_version', ''))} · "
        f"{_e(m.get('created', ''))}</p></header><main>",
        _model(m), _pipeline(m), _layers(m), _verification(m), _placement(m), _artifacts(m),
        "</main></body></html>",
    ]
    return "\n".join(parts)


# -- sections -----------------------------------------------------------------------------

def _model(m: dict[str, Any]) -> str:
    b, a = m["model"]["before"], m["model"]["after"]
    keys = ("parameters", "bytes", "macs", "operators")
    rows = [(k, _num(b.get(k, 0)), _num(a.get(k, 0)), _change(b.get(k, 0), a.get(k, 0)))
            for k in keys]
    rel = {"before": [1.0] * 4,
           "after": [a.get(k, 0) / b[k] if b.get(k) else 0.0 for k in keys]}
    chart = charts.grouped_bars(["parameters", "bytes", "MACs", "operators"], rel,
                                ylabel="relative to before")
    return _section("model", "Model before / after",
                    _table(("", "before", "after", "change"), rows) + _figure("chart-model", chart))


def _flat_passes(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in records:
        out += _flat_passes(r["passes"]) if "passes" in r else [r]
    return out


def _pipeline(m: dict[str, Any]) -> str:
    passes = _flat_passes(m["pipeline"].get("passes", []))
    rows = []
    for p in passes:
        err = p.get("stats", {}).get("error")
        error = (f"SQNR {err.get('sqnr_db')} dB, cosine {err.get('cosine')}"
                 if isinstance(err, dict) else ("lossless" if p.get("lossless", True) else "—"))
        rows.append((p["pass"], _e(p.get("options", "")) or "—",
                     "yes" if p.get("modified") else "no", f"{p.get('seconds', 0) * 1000:.1f} ms",
                     error))
    body = (f"<p class='mono'>{_e(m['pipeline'].get('text') or '(no passes)')}</p>"
            + _table(("pass", "options", "changed", "time", "error introduced"), rows,
                     raw=True))
    body += _compile_seconds(m.get("compile_seconds"))
    lowering = m.get("lowering", {}).get("seconds")
    if passes:
        labels = [p["pass"] for p in passes] + (["(lowering)"] if lowering is not None else [])
        values = [p.get("seconds", 0) for p in passes] + ([lowering] if lowering else [])
        lossy = [not p.get("lossless", True) for p in passes] + [False]
        body += _figure("chart-pass-time", charts.hbar(
            labels, values, xlabel="seconds", highlight=lossy,
            note="orange: lossy passes (their error is in the table)"))
    return _section("pipeline", "Pipeline", body)


def _compile_seconds(seconds: dict[str, Any] | None) -> str:
    """One line: the manifest's compile time by stage, and the lowering's parts."""
    if not seconds:
        return ""
    stages = ", ".join(f"{_e(k)} {v:.1f} s" for k, v in seconds.items()
                       if k not in ("total", "parts"))
    parts = seconds.get("parts", {}).get("lowering", {})
    inner = ", ".join(f"{_e(k)} {v:.1f} s" for k, v in parts.items())
    return (f"<p id='compile-seconds'>Compile time {seconds.get('total', 0):.1f} s: {stages}"
            + (f" (lowering: {inner})" if inner else "") + ".</p>")


def _sqnr_profile(sqnr: dict[str, float]) -> str:
    """Every quantized layer's weight SQNR in graph order, the 5 worst in orange; an exact
    (infinite SQNR) layer is drawn at the chart's top and said in the note."""
    import math

    finite = [v for v in sqnr.values() if math.isfinite(v)]
    top = max(finite, default=100.0)
    values = [v if math.isfinite(v) else top for v in sqnr.values()]
    worst = set(sorted(range(len(values)), key=values.__getitem__)[:5]) \
        if len(values) > 5 else set()
    exact = sum(not math.isfinite(v) for v in sqnr.values())
    lo = min(values)
    note = (f"all {len(values)} layers in graph order"
            + ("; orange: the 5 worst" if worst else "")
            + f" (lowest {lo:.1f} dB: {min(sqnr, key=sqnr.__getitem__)})")
    if exact:
        note += f"; {exact} exact (infinite SQNR) drawn at {top:.1f} dB"
    return charts.profile(list(sqnr), values, ylabel="weight SQNR (dB)",
                          highlight=[i in worst for i in range(len(values))], note=note)


def _layers(m: dict[str, Any]) -> str:
    passes = _flat_passes(m["pipeline"].get("passes", []))
    body = "<h3>Weight SQNR per layer</h3>"
    sqnr: dict[str, float] = {}
    complete = False  # every layer (layer_sqnr_db), or only the worst few
    for p in passes:
        stats = p.get("stats", {})
        for key in ("layer_sqnr_db", "worst_layers_sqnr_db"):
            if isinstance(stats.get(key), dict):
                sqnr.update({k: float(v) for k, v in stats[key].items()
                             if isinstance(v, (int, float))})
                complete = key == "layer_sqnr_db"
                break
    if sqnr and complete:
        body += _figure("chart-sqnr", _sqnr_profile(sqnr))
    elif sqnr:
        worst = sorted(sqnr.items(), key=lambda kv: kv[1])[:MAX_BARS]
        body += _figure("chart-sqnr", charts.hbar(
            [k for k, _ in worst], [v for _, v in worst], xlabel="weight SQNR (dB), lowest first",
            note="the layers the quantizer reported (its worst layers)"))
    else:
        body += _empty("no weight quantization in this pipeline")
    body += "<h3>Quantization sensitivity per layer</h3>"
    sens, kept = [], set()
    for p in passes:
        stats = p.get("stats", {})
        entries = stats.get("sensitivity") or stats.get("report")
        if isinstance(entries, list) and entries and isinstance(entries[0], dict) \
                and "layer" in entries[0]:
            sens = entries
            kept = set(stats.get("kept_high_precision", []))
    if sens:
        value_key = "drop" if "drop" in sens[0] else "sqnr_db"
        top = sens[:MAX_BARS]
        body += _figure("chart-sensitivity", charts.hbar(
            [e["layer"] for e in top], [float(e.get(value_key) or 0) for e in top],
            xlabel=f"{value_key} when only this layer is quantized",
            highlight=[e["layer"] in kept for e in top],
            note="orange: kept at higher precision"))
    else:
        body += _empty("no sensitivity analysis in this pipeline (quantize{auto_from=...} "
                       "or quant-sensitivity)")
    body += "<h3>Pruning per layer</h3>"
    pruned = _pruned(passes)
    if pruned:
        labels, values, xlabel = pruned
        body += _figure("chart-pruned", charts.hbar(labels, values, xlabel=xlabel))
    else:
        body += _empty("no pruning in this pipeline")
    body += "<h3>Size by layer and dtype (after)</h3>"
    layers = m.get("layers", {}).get("after")
    if layers:
        per: dict[str, dict[str, int]] = {}
        for name, dtype, _, nbytes in layers:
            per.setdefault(name, {}).setdefault(dtype, 0)
            per[name][dtype] += nbytes
        top = sorted(per, key=lambda n: -sum(per[n].values()))[:MAX_BARS]
        dtypes = sorted({d for n in top for d in per[n]})
        body += _figure("chart-size", charts.stacked_hbar(
            top, {d: [per[n].get(d, 0) / 1024 for n in top] for d in dtypes},
            xlabel=f"KiB (largest {len(top)} of {len(per)} layers)"))
    else:
        body += _empty("this manifest has no per-layer sizes (compiled by an older edgecc)")
    return _section("layers", "Per layer", body)


def _pruned(passes: list[dict[str, Any]]) -> tuple[list[str], list[float], str] | None:
    for p in passes:
        stats = p.get("stats", {})
        if isinstance(stats.get("groups"), list) and stats["groups"]:
            g = stats["groups"][:MAX_BARS]
            return ([x["group"] for x in g],
                    [(x["units"] - x["kept"]) * x.get("channels_per_unit", 1) for x in g],
                    "channels removed")
        if isinstance(stats.get("per_layer"), dict) and stats["per_layer"]:
            items = list(stats["per_layer"].items())[:MAX_BARS]
            return [k for k, _ in items], [float(v) for _, v in items], "sparsity (fraction zero)"
    return None


def _verification(m: dict[str, Any]) -> str:
    v = m.get("verification", {})
    if v.get("performed"):
        verdict = ("<span class='pass'>PASSED</span>" if v.get("passed")
                   else "<span class='fail'>FAILED</span>")
        rows = [("verdict", verdict), ("reference", _e(v.get("reference", ""))),
                ("metric", _e(v.get("metric", ""))), ("samples", _e(v.get("samples", "")))]
        rows += [(k, _e(_num(v[k]))) for k in ("max_abs", "max_rel", "cosine", "sqnr_db",
                                                "atol", "rtol") if k in v]
        body = _table(("", ""), rows, raw=True)
        fid = v.get("fidelity")
        if fid:
            body += "<h3>Fidelity to the original model</h3>" + _table(
                ("on", "samples", "cosine", "SQNR dB", "max-abs"),
                [(fid.get("on"), fid.get("samples"), _num(fid.get("cosine")),
                  _num(fid.get("sqnr_db")), _num(fid.get("max_abs")))])
    else:
        body = f"<p>Not performed: {_e(v.get('reason', 'unknown'))}</p>"
    nv = m.get("not_verified") or []
    body += "<h3>Not verified on this machine</h3>"
    body += ("<ul id='not-verified'>" + "".join(f"<li>{_e(x)}</li>" for x in nv) + "</ul>"
             if nv else _empty("nothing: every check ran here"))
    return _section("verification", "Verification", body)


def _placement(m: dict[str, Any]) -> str:
    low = m.get("lowering", {})
    npu = low.get("npu")
    if isinstance(npu, dict) and isinstance(npu.get("per_op"), list):
        ops = npu["per_op"]
        by_dev: dict[str, list[float]] = {}
        for o in ops:
            d = by_dev.setdefault(o.get("device", "?"), [0, 0])
            d[0] += 1
            d[1] += o.get("macs", 0)
        chart = charts.hbar([f"{d} ({n[0]} ops)" for d, n in by_dev.items()],
                            [n[1] for n in by_dev.values()], xlabel="MACs")
        rows = [(o.get("node"), o.get("op"), o.get("device"), _num(o.get("macs", 0)),
                 o.get("reason", "")) for o in ops]
        body = (f"<p>{_e(npu.get('device', ''))}: {npu.get('npu_ops')} of {npu.get('ops')} ops, "
                f"{100 * float(npu.get('npu_mac_share', 0)):.1f}% of MACs on the NPU</p>"
                + _figure("chart-placement", chart)
                + _table(("node", "op", "device", "MACs", "reason"), rows))
        return _section("placement", "Per-op placement", body)
    place = low.get("placement")
    if isinstance(place, dict) and isinstance(place.get("layers"), dict):
        counts = place.get("counts", {})
        chart = charts.hbar(list(counts), [float(v) for v in counts.values()], xlabel="layers")
        reasons = place.get("float_reasons", {})
        rows = [(n, k, reasons.get(n, "")) for n, k in place["layers"].items()]
        body = _figure("chart-placement", chart) + _table(("layer", "precision", "why float"), rows)
        return _section("placement", "Per-layer precision (TensorRT)", body)
    return _section("placement", "Per-op placement",
                    _empty(f"target '{m.get('target', {}).get('name')}' runs the whole model "
                           "on one device"))


def _artifacts(m: dict[str, Any]) -> str:
    rows = [(a["path"], a.get("kind", ""), _num(a.get("bytes", 0)),
             f"<code>{_e(a.get('sha256', ''))}</code>") for a in m.get("artifacts", [])]
    varies = m.get("lowering", {}).get("varies") or {}
    body = _table(("file", "kind", "bytes", "sha256"), rows, raw=True)
    if varies:
        body += "<p>Files that differ between identical compiles: " + ", ".join(
            f"{_e(k)} ({_e(v)})" for k, v in varies.items()) + "</p>"
    return _section("artifacts", "Artifacts", body)


# -- html helpers -------------------------------------------------------------------------

def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(x: Any) -> str:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:.4g}"


def _change(before: float, after: float) -> str:
    return f"{(after - before) / before * 100:+.1f}%" if before else ""


def _section(ident: str, title: str, body: str) -> str:
    return f"<section id='{ident}'><h2>{_e(title)}</h2>{body}</section>"


def _figure(ident: str, svg: str) -> str:
    return f"<figure class='chart' id='{ident}'>{svg}</figure>"


def _empty(text: str) -> str:
    return f"<p class='empty'>{_e(text)}</p>"


def _table(header: Iterable[Any], rows: Iterable[Iterable[Any]], raw: bool = False) -> str:
    """Rows of cells; with ``raw`` the cells are HTML already (escaped by the caller)."""
    cell = (lambda c: str(c)) if raw else _e
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def to_json(m: dict[str, Any]) -> str:  # for debugging a report: the manifest it read
    return json.dumps(m, indent=2)
