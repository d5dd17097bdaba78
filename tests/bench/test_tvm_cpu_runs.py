"""bench/tvm_cpu_runs.py: issue 18's goals read across several bench/tvm_cpu.py JSONs."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _module():
    spec = importlib.util.spec_from_file_location(
        "tvm_cpu_runs", os.path.join(ROOT, "bench", "tvm_cpu_runs.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(tmp_path, name, ratios_by_model):
    path = tmp_path / name
    path.write_text(json.dumps({"rows": [{"model": m, "ratios": r}
                                         for m, r in ratios_by_model.items()]}))
    return str(path)


def test_goal_table_medians_and_counts_runs_meeting_the_goal(tmp_path):
    runs_mod = _module()
    paths = [_run(tmp_path, "a.json", {"resnet20": {"edgecc_int8_vs_edgecc_fp32": 0.59}}),
             _run(tmp_path, "b.json", {"resnet20": {"edgecc_int8_vs_edgecc_fp32": 0.68}}),
             _run(tmp_path, "c.json", {"resnet20": {"edgecc_int8_vs_edgecc_fp32": 0.60},
                                       "bert": {"edgecc_int8_vs_edgecc_fp32": 0.40}})]
    runs = [runs_mod.load_run(p) for p in paths]
    rows = runs_mod.goal_table(runs, "edgecc_int8_vs_edgecc_fp32", 0.6, strict=False)
    by_model = {row["model"]: row for row in rows}
    assert by_model["resnet20"]["runs"] == [0.59, 0.68, 0.60]
    assert by_model["resnet20"]["median"] == pytest.approx(0.60)
    assert (by_model["resnet20"]["met"], by_model["resnet20"]["of"]) == (2, 3)
    assert by_model["bert"]["runs"] == [None, None, 0.40]
    assert (by_model["bert"]["met"], by_model["bert"]["of"]) == (1, 1)
    strict = runs_mod.goal_table(runs, "edgecc_int8_vs_edgecc_fp32", 0.6, strict=True)
    assert {r["model"]: r["met"] for r in strict}["resnet20"] == 1


def test_main_writes_json_and_rejects_a_file_that_is_not_a_result(tmp_path, monkeypatch, capsys):
    runs_mod = _module()
    good = _run(tmp_path, "a.json", {"minilm": {"edgecc_fp32_vs_ort_fp32": 0.77}})
    out = tmp_path / "out.json"
    monkeypatch.setattr("sys.argv", ["tvm_cpu_runs.py", good, "--output", str(out)])
    assert runs_mod.main() == 0
    goals = json.loads(out.read_text())["goals"]
    assert [g["key"] for g in goals] == ["edgecc_fp32_vs_ort_fp32"]
    assert goals[0]["rows"][0]["met"] == 1
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    monkeypatch.setattr("sys.argv", ["tvm_cpu_runs.py", str(bad), "--output", str(out)])
    assert runs_mod.main() == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a bench/tvm_cpu.py result" in err[0]
