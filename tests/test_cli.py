"""The CLI: commands, --json, and one-line errors with exit code 2.

Most cases call ``edgecc.cli.main`` (what the console script runs) in this process with
stdout / stderr captured — the same exit code and output without paying an interpreter
start (torch + TVM imports, ~4 s) per call; ``process=True`` runs ``python -m edgecc.cli``
for the cases about the real process (the round trip's compile, --debug's traceback)."""

import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

import edgecc


def edgecc_cli(*args, cwd=None, process=False):
    if process:
        return subprocess.run([sys.executable, "-m", "edgecc.cli", *args],
                              capture_output=True, text=True, cwd=cwd)
    from edgecc.cli import main

    out, err, here = io.StringIO(), io.StringIO(), os.getcwd()
    try:
        if cwd:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse errors (usage) exit 2
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    path = str(d / "net.pt2")
    batch = torch.export.Dim("batch", min=1, max=8)
    torch.export.save(torch.export.export(Net().eval(), (torch.randn(2, 3, 8, 8),),
                                          dynamic_shapes=({0: batch},)), path)
    return path


def test_compile_run_inspect_round_trip(model_file, tmp_path):
    out = str(tmp_path / "build")
    r = edgecc_cli("compile", model_file, "-t", "host", "-p", "fold-batchnorm,fuse,dce", "-o", out,
                   process=True)
    assert r.returncode == 0, r.stderr
    assert "verification: PASSED" in r.stdout and "parameters" in r.stdout
    assert "\x1b" not in r.stderr  # no progress bar when not a terminal
    x = np.random.randn(3, 3, 8, 8).astype("float32")
    np.savez(tmp_path / "x.npz", x=x)
    r = edgecc_cli("run", out, "--inputs", str(tmp_path / "x.npz"), "--save",
                   str(tmp_path / "y.npz"), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["outputs"][0]["shape"] == [3, 2]
    y = np.load(tmp_path / "y.npz")["output"]
    program = edgecc.load(model_file)
    np.testing.assert_allclose(y, program(torch.from_numpy(x))[0].numpy(), atol=1e-5, rtol=1e-5)

    r = edgecc_cli("inspect", model_file, "--json")
    data = json.loads(r.stdout)
    assert data["op_counts"]["aten.convolution"] == 1
    assert data["parameters"] == 3 * 4 * 9 + 4 + 4 * 4 + 1 + 4 * 2 + 2
    assert data["macs"] > 0 and data["inputs"][0]["dtype"] == "float32"


def test_compile_json_prints_the_manifest(model_file, tmp_path):
    r = edgecc_cli("compile", model_file, "-o", str(tmp_path / "o"), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["verification"]["passed"] is True


def test_passes_and_targets_list_everything():
    r = edgecc_cli("passes", "--json")
    entries = json.loads(r.stdout)
    names = {p["name"] for p in entries}
    assert names >= {"fold-batchnorm", "constant-fold", "dce", "eliminate-identity", "cse", "fuse"}
    # a pass is found from its CLI name in one step: the listing names its source file
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for p in entries:
        assert os.path.isfile(os.path.join(root, p["source"])), p
    source = {p["name"]: p["source"] for p in entries}
    assert source["fold-batchnorm"] == "passes/fold_batchnorm.py"
    assert source["apply-masks"] == "passes/prune/unstructured.py"
    text = edgecc_cli("passes").stdout
    assert "activations: list of str" in text and "[lossless]" in text
    targets = json.loads(edgecc_cli("targets", "--json").stdout)
    host = next(t for t in targets if t["name"] == "host")
    assert host["available"] and "apache-tvm" in host["detail"]


def _one_line_error(r, *words):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_bad_inputs_give_one_line_and_exit_2(model_file, tmp_path):
    out = str(tmp_path / "o")
    _one_line_error(edgecc_cli("compile", str(tmp_path / "missing.pt2"), "-o", out),
                    "does not exist")
    truncated = tmp_path / "trunc.pt2"
    truncated.write_bytes(open(model_file, "rb").read()[:500])
    _one_line_error(edgecc_cli("compile", str(truncated), "-o", out), "truncated")
    corrupt = tmp_path / "corrupt.pt2"
    corrupt.write_bytes(b"PK\x03\x04" + os.urandom(300))
    _one_line_error(edgecc_cli("compile", str(corrupt), "-o", out), "torch.export.save")
    unknown = tmp_path / "model.tflite"
    unknown.write_bytes(b"x")
    _one_line_error(edgecc_cli("compile", str(unknown), "-o", out), "unknown model file extension")
    _one_line_error(edgecc_cli("compile", model_file, "-t", "hots", "-o", out),
                    "did you mean 'host'")
    _one_line_error(edgecc_cli("compile", model_file, "-p", "fuse,dcee", "-o", out),
                    "character 6", "did you mean 'dce'")
    _one_line_error(edgecc_cli("compile", model_file, "-p", "fuse{attention=maybe}", "-o", out),
                    "true or false")
    _one_line_error(edgecc_cli("compile", model_file, "-p", "fuse{", "-o", out), "character")
    _one_line_error(edgecc_cli("compile", model_file, "-o", out, "--target-option", "nope"),
                    "key=value")
    assert not os.path.exists(out)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".o.")]


def test_existing_output_dir_needs_force(model_file, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    _one_line_error(edgecc_cli("compile", model_file, "-o", str(out)), "--force")
    assert (out / "mine.txt").read_text() == "keep"
    r = edgecc_cli("compile", model_file, "-o", str(out), "--force")
    assert r.returncode == 0 and not (out / "mine.txt").exists()


def test_pickled_models_need_explicit_trust(tmp_path):
    model = Net().eval()
    full = tmp_path / "full.pt"
    torch.save(model, full)
    out = str(tmp_path / "o")
    _one_line_error(edgecc_cli("compile", str(full), "-o", out),
                    "pickled model", "torch.export.save", "--trust-pickle")
    _one_line_error(edgecc_cli("compile", str(full), "-o", out, "--trust-pickle"),
                    "--input-shape")
    r = edgecc_cli("compile", str(full), "-o", out, "--trust-pickle",
                   "--input-shape", "x:2x3x8x8")
    assert r.returncode == 0, r.stderr
    weights = tmp_path / "weights.pth"
    torch.save(model.state_dict(), weights)
    _one_line_error(edgecc_cli("compile", str(weights), "-o", out + "2"), "weights only",
                    "edgecc.trace")


def test_run_rejects_wrong_inputs(model_file, tmp_path):
    out = str(tmp_path / "b")
    assert edgecc_cli("compile", model_file, "-o", out).returncode == 0
    np.savez(tmp_path / "bad.npz", x=np.zeros((2, 3, 9, 9), "float32"))
    _one_line_error(edgecc_cli("run", out, "--inputs", str(tmp_path / "bad.npz")), "shape")
    np.savez(tmp_path / "dtype.npz", x=np.zeros((2, 3, 8, 8), "float64"))
    _one_line_error(edgecc_cli("run", out, "--inputs", str(tmp_path / "dtype.npz")), "dtype")
    np.savez(tmp_path / "two.npz", a=np.zeros(1), b=np.zeros(1))
    _one_line_error(edgecc_cli("run", out, "--inputs", str(tmp_path / "two.npz")), "holds")
    _one_line_error(edgecc_cli("run", str(tmp_path), "--inputs", str(tmp_path / "bad.npz")),
                    "not an edgecc output directory")


def test_debug_shows_the_traceback(tmp_path):
    r = edgecc_cli("--debug", "compile", str(tmp_path / "missing.pt2"), "-o", str(tmp_path / "o"),
                   process=True)
    assert r.returncode != 0 and "Traceback" in r.stderr


# -- quantization from the command line -------------------------------------------------------

def test_quantize_with_calibration_npz_of_stacked_samples(model_file, tmp_path):
    np.savez(tmp_path / "calib.npz", x=np.random.randn(4, 2, 3, 8, 8).astype("float32"))
    out = str(tmp_path / "q")
    r = edgecc_cli("compile", model_file, "-t", "host", "-p",
                   "fold-batchnorm,quantize{scheme=w8a8},fuse,dce", "--calib",
                   str(tmp_path / "calib.npz"), "-o", out)
    assert r.returncode == 0, r.stderr
    assert "error vs input program on calibration batches" in r.stdout
    assert "against the compressed program" in r.stdout and "fidelity" in r.stdout
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    q = [p for p in manifest["pipeline"]["passes"] if p["pass"] == "quantize"][0]
    assert q["stats"]["error"]["samples"] == 4 and q["lossless"] is False


def test_calibration_folder_of_npy_files(model_file, tmp_path):
    d = tmp_path / "calib"
    d.mkdir()
    for i in range(3):
        np.save(d / f"b{i}.npy", np.random.randn(2, 3, 8, 8).astype("float32"))
    r = edgecc_cli("compile", model_file, "-t", "host", "-p", "quantize{scheme=w8a8}",
                   "--calib", str(d), "-o", str(tmp_path / "q"), "--json")
    assert r.returncode == 0, r.stderr
    q = json.loads(r.stdout)["pipeline"]["passes"][0]
    assert q["stats"]["error"]["samples"] == 3


@pytest.mark.parametrize("case,expected", [
    ("shape", "calibration batch 0"),
    ("dtype", "calibration batch 0"),
    ("empty", "holds no .npz or .npy files"),
    ("missing", "needs calibration data"),
    ("scheme", "stores weights as float8_e4m3fn"),
    ("pattern", "matches no quantizable layer"),
    ("sparsity", "sparsity must be in [0, 1), got 1.5"),
    ("ratio", "ratio must be in [0, 1), got 1.0"),
    ("prune-pattern", "include pattern 'decoder.*' matches no prunable layer"),
])
def test_bad_quantization_input_fails_cleanly(model_file, tmp_path, case, expected, capsys):
    """In-process (``edgecc.cli.main``, what the console script calls): the same exit code
    and stderr as a subprocess, without paying the interpreter start per case."""
    out = tmp_path / "q"
    pipeline = "fold-batchnorm,quantize{scheme=w8a8}"
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.randn(2, 3, 8, 8).astype("float32"))
    extra = ["--calib", str(calib)]
    if case == "shape":
        np.savez(calib, x=np.random.randn(2, 3, 9, 9).astype("float32"))
    elif case == "dtype":
        np.savez(calib, x=np.random.randn(2, 3, 8, 8).astype("float64"))
    elif case == "empty":
        (tmp_path / "empty").mkdir()
        extra = ["--calib", str(tmp_path / "empty")]
    elif case == "missing":
        extra = []
    elif case == "scheme":
        pipeline = "quantize{scheme=fp8}"
        extra += ["-t", "onnx"]
    elif case == "pattern":
        pipeline = "quantize{scheme=w8a8,exclude=decoder.*}"
    elif case == "sparsity":
        pipeline = "prune{sparsity=1.5}"
    elif case == "ratio":
        pipeline = "prune-structured{ratio=1.0}"
    elif case == "prune-pattern":
        pipeline = "prune-structured{include=[decoder.*]}"
    args = ["compile", model_file, "-p", pipeline, "-o", str(out), *extra]
    if "-t" not in extra:
        args += ["-t", "host"]
    from edgecc.cli import main

    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert expected in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_structured_pruning_on_the_command_line(model_file, tmp_path):
    out = str(tmp_path / "p")
    r = edgecc_cli("compile", model_file, "-t", "host", "-p",
                   "prune-structured{ratio=0.5},fold-batchnorm,dce", "-o", out, "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    stats = report["pipeline"]["passes"][0]["stats"]
    assert stats["parameter_reduction"] > 0.3 and report["verification"]["passed"]
