"""``edgecc report`` / ``compile --report`` (issue 20): OUT/report.html is one self-contained
page with the model before/after, the pipeline, per-layer charts, verification and the
NPU placement; it renders in headless Chromium without console errors and shows the charts.
"""

import os
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")

CHARTS = ("chart-model", "chart-pass-time", "chart-sqnr", "chart-pruned", "chart-size",
          "chart-placement")


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = torch.nn.Conv2d(16, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.c2(torch.relu(self.c(x)))).mean((2, 3)))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """An NPU compile with pruning and int8 quantization, through the CLI with --report."""
    from edgecc.cli import main

    d = tmp_path_factory.mktemp("report")
    torch.manual_seed(0)
    torch.export.save(torch.export.export(Net().eval(), (torch.randn(1, 3, 16, 16),)),
                      str(d / "net.pt2"))
    np.savez(d / "calib.npz", x=np.random.default_rng(0).standard_normal(
        (4, 1, 3, 16, 16)).astype("float32"))
    out = d / "out"
    code = main(["compile", str(d / "net.pt2"), "-t", "npu:ethos-u55-128", "-p",
                 "prune-structured{ratio=0.25},quantize{scheme=w8a8}", "--calib",
                 str(d / "calib.npz"), "-o", str(out), "--report"])
    assert code == 0
    return out


def test_report_has_every_section_and_chart(compiled):
    page = (compiled / "report.html").read_text()
    for ident in ("model", "pipeline", "layers", "verification", "placement", "artifacts"):
        assert f"<section id='{ident}'>" in page
    for chart in CHARTS:
        figure = re.search(rf"<figure class='chart' id='{chart}'>(.*?)</figure>", page, re.S)
        assert figure and "<svg" in figure.group(1) and "<path" in figure.group(1), chart
    assert "prune-structured" in page and "quantize" in page and "PASSED" in page
    assert "ethos-u55-128" in page and "Vela" in page  # the not-verified item
    # self-contained: nothing fetched (SVG's xmlns is a name, not a request)
    assert not re.search(r"""(src|href)\s*=\s*["'](https?:)?//""", page)
    assert "<script" not in page and "<link" not in page


def test_report_command_rewrites_the_page_and_refuses_non_outputs(compiled, tmp_path):
    from edgecc.cli import main

    (compiled / "report.html").unlink()
    assert main(["report", str(compiled)]) == 0
    assert (compiled / "report.html").stat().st_size > 10_000
    assert main(["report", str(tmp_path)]) == 2


def test_sizes_group_quantized_constants_by_layer():
    from edgecc.report.sizes import layer_of

    assert layer_of("encoder.fc.weight") == "encoder.fc"
    assert layer_of("c2_qweight") == layer_of("c2_w_scale") == "c2"
    assert layer_of("lifted_tensor_0") == "lifted_tensor_0"


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed "
                    "(Debian: apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(compiled, tmp_path):
    from PIL import Image

    url = (compiled / "report.html").resolve().as_uri()
    common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              "--host-resolver-rules=MAP * ~NOTFOUND",  # a fetch would fail loudly
              "--enable-logging=stderr", "--v=0", "--window-size=1200,4000"]
    shot = tmp_path / "shot.png"
    r = subprocess.run([*common, f"--screenshot={shot}", url], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    console = [line for line in r.stderr.splitlines()
               if "CONSOLE" in line or "Failed to load resource" in line
               or "Uncaught" in line]
    assert not console, console
    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert image.shape[0] >= 4000 and image.std() > 10  # not blank
    blue = np.abs(image - np.array([0x3B, 0x6E, 0xA8])).sum(-1) < 30  # the bars' colours
    orange = np.abs(image - np.array([0xE0, 0x8A, 0x2C])).sum(-1) < 30
    assert blue.sum() > 5000 and orange.sum() > 2000, (blue.sum(), orange.sum())
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True,
                         timeout=120).stdout
    for chart in CHARTS:  # the browser parsed each chart into an SVG element
        assert re.search(rf'<figure class="chart" id="{chart}"><svg', dom), chart


def _bars(page: str, chart: str) -> int:
    figure = re.search(rf"<figure class='chart' id='{chart}'>(.*?)</figure>", page, re.S)
    assert figure, chart
    # each bar is a <g id="patch_N"> whose path is filled with a bar colour (blue, orange)
    patches = re.findall(r'<g id="patch_\d+">(.*?)</g>', figure.group(1), re.S)
    return sum(("#3b6ea8" in g or "#e08a2c" in g) and "fill:" in g for g in patches)


def test_sqnr_chart_shows_every_layer(compiled):
    """quantize records every layer's weight SQNR (not only the 5 worst), and the chart
    draws one bar per layer in graph order, however many layers there are."""
    import json

    from edgecc.report.html import render

    manifest = json.loads((compiled / "manifest.json").read_text())
    stats = next(p["stats"] for p in manifest["pipeline"]["passes"]
                 if p["pass"] == "quantize")
    assert list(stats["layer_sqnr_db"]) == ["c", "c2", "fc"]  # graph order, all of them
    assert all(v > 30 for v in stats["layer_sqnr_db"].values())  # int8 per channel
    page = (compiled / "report.html").read_text()
    assert _bars(page, "chart-sqnr") == 3 and "all 3 layers" in page
    many = {f"model.layers.{i // 7}.proj{i % 7}": 20.0 + (i % 13) for i in range(154)}
    many["model.layers.3.proj2"] = float("inf")  # an exact layer is drawn, not dropped
    stats["layer_sqnr_db"] = many
    page = render(manifest)
    assert _bars(page, "chart-sqnr") == 154 and "all 154 layers" in page
    assert "1 exact (infinite SQNR)" in page
