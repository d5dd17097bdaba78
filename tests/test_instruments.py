"""The compile clock (``StageClock``, ``stage_timer``); the pass instruments are tested in
test_pass_manager.py and the manifest's ``compile_seconds`` in test_compile_api.py."""

import time

from edgecc.instruments import StageClock, record_stage_part, stage_timer


def test_stages_parts_and_total_add_up():
    with stage_timer("nobody listens"):  # no clock: a no-op
        pass
    with StageClock() as clock:
        clock.begin("load")
        time.sleep(0.01)
        clock.begin("lowering")
        with stage_timer("tvm link"):
            time.sleep(0.01)
        record_stage_part("tvm link", 0.5)
        clock.begin("load")  # a stage that runs twice adds up
        time.sleep(0.01)
    out = clock.to_json()
    assert list(out) == ["load", "lowering", "total", "parts"]
    assert out["load"] >= 0.02 and out["lowering"] >= 0.01
    assert out["load"] + out["lowering"] <= out["total"]
    assert out["parts"] == {"lowering": {"tvm link": out["parts"]["lowering"]["tvm link"]}}
    assert out["parts"]["lowering"]["tvm link"] >= 0.51
    with stage_timer("after"):  # the clock is no longer current
        pass
    assert "other" not in clock.to_json().get("parts", {})


def test_the_report_shows_compile_seconds():
    from edgecc.report.html import _compile_seconds

    line = _compile_seconds({"load": 1.0, "lowering": 2.5, "total": 4.0,
                             "parts": {"lowering": {"tvm link": 0.5}}})
    assert "Compile time 4.0 s: load 1.0 s, lowering 2.5 s (lowering: tvm link 0.5 s)" in line
    assert _compile_seconds(None) == ""  # manifests from before compile_seconds
