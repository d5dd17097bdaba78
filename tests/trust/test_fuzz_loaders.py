"""Fuzzed loaders (issue 20): mutated ``.onnx`` (protobuf bytes and structure), ``.pt2``
(zip entries) and ``--calib`` ``.npz`` / ``.npy`` files either load correctly or fail with
one line, an ``EdgeccError`` subclass (CLI exit 2) -- never another exception type, a hang
(each case bounded in time), a crash of the interpreter, or a memory blow-up from a declared
huge shape (the loader process's address space is capped, its peak RSS checked).

The loaders run in a worker process (``fuzz_worker.py``), kept alive across cases (an
interpreter start with torch costs seconds) and restarted after a crash or a hang.
Hypothesis draws the mutations; a failing case is shrunk to the smallest mutation that
fails. Case counts are relative to the profile (CI: derandomized). The count of cases run
is printed at the end of the module (``-s``) and asserted.
"""

from __future__ import annotations

import io
import json
import os
import select
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CASE_SECONDS = 60  # a hang: no answer within this (a clean load takes ~2 s on a busy machine)
RSS_GROWTH_MB = 1024  # peak RSS above the worker's first answer: a memory blow-up
COUNTS = {"onnx": {}, "pt2": {}, "calib": {}}


class Worker:
    """The loader process; ``ask`` returns its answer, or a crash/hang outcome."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.base_rss = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "fuzz_worker.py"), "--mem-mb", "3072"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
        assert json.loads(self._line(120))["ready"]

    def _line(self, timeout: float) -> str:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError
        line = self.proc.stdout.readline()
        if not line:
            raise EOFError
        return line

    def ask(self, request: dict) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        try:
            answer = json.loads(self._line(CASE_SECONDS))
        except TimeoutError:
            self.stop()
            return {"outcome": "hang", "detail": f"no answer in {CASE_SECONDS} s"}
        except EOFError:
            code = self.proc.wait()
            self.proc = None
            return {"outcome": "crash", "detail": f"worker died with exit code {code}"}
        if self.base_rss is None:
            self.base_rss = answer["maxrss_mb"]
        elif answer["maxrss_mb"] > self.base_rss + RSS_GROWTH_MB:
            self.stop()  # start the next case with a fresh peak
            return {"outcome": "memory", "detail": f"peak RSS {answer['maxrss_mb']} MB"}
        return answer

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            self.base_rss = None


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.stop()
    total = sum(sum(c.values()) for c in COUNTS.values())
    print(f"\nfuzzed loader cases: {total} "
          + "; ".join(f"{k}: {v}" for k, v in COUNTS.items()))


def check(worker: Worker, kind: str, path: str, specs=None) -> None:
    req = {"kind": "calib" if kind == "calib" else "model", "path": path,
           "specs": specs or []}
    answer = worker.ask(req)
    COUNTS[kind][answer["outcome"]] = COUNTS[kind].get(answer["outcome"], 0) + 1
    assert answer["outcome"] in ("loaded", "edgecc"), answer


# -- ONNX ------------------------------------------------------------------------------------

def valid_onnx() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype("float32"), n)
             for n, s in (("W", (4, 3, 1, 1)), ("B", (4,)), ("G", (2, 4)))]
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], kernel_shape=[1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "G"], ["y"], transB=1)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


VALID_ONNX = valid_onnx().SerializeToString()
HUGE = [2**31, 2**40, 2**62, 10**12]


def _structured(draw) -> bytes:
    """One semantic mutation of the valid model (what a byte flip rarely reaches)."""
    m = onnx.ModelProto()
    m.ParseFromString(VALID_ONNX)
    g = m.graph
    kind = draw(st.sampled_from([
        "attr_type", "init_dtype", "huge_input_dim", "negative_input_dim", "huge_init_dims",
        "negative_init_dims", "cycle", "self_loop", "dangling", "init_short", "init_long",
        "external_escape", "external_missing", "external_huge", "no_opset", "future_opset",
        "unknown_op", "dup_output", "no_outputs", "empty_graph", "input_rank",
        "huge_attr", "string_init", "init_shadows_input"]))
    node = g.node[draw(st.integers(0, len(g.node) - 1))]
    init = g.initializer[draw(st.integers(0, len(g.initializer) - 1))]
    if kind == "attr_type":
        conv = g.node[0]
        a = conv.attribute[0]
        a.type = draw(st.sampled_from([1, 2, 3, 4, 6, 8]))  # FLOAT, INT, STRING, TENSOR, ...
        if draw(st.booleans()):
            del a.ints[:]
            a.s = b"\xff\xfe"
    elif kind == "init_dtype":
        init.data_type = draw(st.sampled_from([0, 2, 3, 7, 8, 9, 10, 11, 16, 17, 25, 99, -1]))
    elif kind == "huge_input_dim":
        d = g.input[0].type.tensor_type.shape.dim[draw(st.integers(0, 3))]
        d.dim_value = draw(st.sampled_from(HUGE))
    elif kind == "negative_input_dim":
        d = g.input[0].type.tensor_type.shape.dim[draw(st.integers(0, 3))]
        d.dim_value = draw(st.integers(-2**40, -1))
    elif kind == "huge_init_dims":
        init.dims[draw(st.integers(0, len(init.dims) - 1))] = draw(st.sampled_from(HUGE))
    elif kind == "negative_init_dims":
        init.dims[0] = draw(st.integers(-2**40, -1))
    elif kind == "cycle":  # the first node reads the last node's output
        g.node[0].input[0] = g.node[-1].output[0]
    elif kind == "self_loop":
        node.input[0] = node.output[0]
    elif kind == "dangling":
        node.input[draw(st.integers(0, len(node.input) - 1))] = "no_such_value"
    elif kind == "init_short":
        init.raw_data = init.raw_data[: draw(st.integers(0, max(len(init.raw_data) - 1, 0)))]
    elif kind == "init_long":
        init.raw_data = init.raw_data + b"\0" * draw(st.integers(1, 64))
    elif kind.startswith("external"):
        init.ClearField("raw_data")
        init.data_location = TensorProto.EXTERNAL
        location = {"external_escape": draw(st.sampled_from(
                        ["../../../../etc/passwd", "/etc/passwd", "/dev/zero",
                         "../" * 30 + "proc/self/mem"])),
                    "external_missing": "missing.bin",
                    "external_huge": "data.bin"}[kind]
        entries = {"location": location}
        if kind == "external_huge":
            entries.update(offset=str(draw(st.sampled_from(HUGE))), length="16")
        for k, v in entries.items():
            init.external_data.add(key=k, value=v)
    elif kind == "no_opset":
        del m.opset_import[:]
    elif kind == "future_opset":
        m.opset_import[0].version = draw(st.sampled_from([0, 1, 99, 10**9]))
    elif kind == "unknown_op":
        node.op_type = draw(st.sampled_from(["NoSuchOp", "", "Loop", "If", "Scan"]))
    elif kind == "dup_output":
        g.node[1].output[0] = g.node[0].output[0]
    elif kind == "no_outputs":
        del g.output[:]
    elif kind == "empty_graph":
        del g.node[:]
    elif kind == "input_rank":
        del g.input[0].type.tensor_type.shape.dim[draw(st.integers(0, 3))]
    elif kind == "huge_attr":
        g.node[0].attribute[0].ints[0] = draw(st.sampled_from(HUGE + [-1, 0]))
    elif kind == "string_init":
        init.data_type = TensorProto.STRING
        init.string_data.append(b"x" * draw(st.integers(0, 100)))
    elif kind == "init_shadows_input":
        init.name = "x"
    return m.SerializeToString()


@st.composite
def onnx_bytes(draw) -> bytes:
    how = draw(st.sampled_from(["truncate", "flip", "structured", "structured", "splice"]))
    if how == "structured":
        return _structured(draw)
    data = bytearray(VALID_ONNX if draw(st.booleans()) else _structured(draw))
    if how == "truncate":
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    if how == "splice":  # a random run of bytes written over the model
        at = draw(st.integers(0, len(data) - 1))
        chunk = draw(st.binary(min_size=1, max_size=16))
        data[at:at + len(chunk)] = chunk
        return bytes(data)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] ^= draw(st.integers(1, 255))
    return bytes(data)


@settings(max_examples=settings.default.max_examples * 3)
@given(data=onnx_bytes())
def test_fuzzed_onnx_loads_or_fails_in_one_line(worker, tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("onnx")
    (folder / "data.bin").write_bytes(b"\0" * 64)
    path = folder / "model.onnx"
    path.write_bytes(data)
    check(worker, "onnx", str(path))


# -- .pt2 ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def valid_pt2(tmp_path_factory) -> bytes:
    import torch

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 2)
            self.register_buffer("scale", torch.ones(2))

        def forward(self, x):
            return torch.relu(self.fc(x)) * self.scale + torch.tensor([1.0, 2.0])

    path = tmp_path_factory.mktemp("pt2") / "m.pt2"
    batch = torch.export.Dim("batch", min=1, max=8)
    torch.export.save(torch.export.export(M().eval(), (torch.randn(2, 3),),
                                          dynamic_shapes=({0: batch},)), str(path))
    return path.read_bytes()


def _mutate_json(draw, data: bytes) -> bytes:
    """Replace one number in a JSON entry (sizes, strides, offsets, enums) or one string."""
    text = data.decode()
    import re

    spots = [m.span() for m in re.finditer(r"-?\d+", text)]
    if not spots or draw(st.booleans()):
        strings = [m.span() for m in re.finditer(r'"[a-z_]+"', text)]
        if strings:
            a, b = strings[draw(st.integers(0, len(strings) - 1))]
            return (text[:a] + json.dumps(draw(st.sampled_from(
                ["", "x", "as_tensor", "use_pickle", "torch.ops.aten.add.Tensor"])))
                + text[b:]).encode()
        return data
    a, b = spots[draw(st.integers(0, len(spots) - 1))]
    value = draw(st.sampled_from(HUGE + [-1, -2**40, 0, 7, 2**63]))
    return (text[:a] + str(value) + text[b:]).encode()


@st.composite
def pt2_edit(draw, names: list[str]):
    how = draw(st.sampled_from(["remove", "corrupt", "oversize", "truncate_entry", "json",
                                "json", "truncate_archive", "duplicate"]))
    return how, draw(st.sampled_from(names)), draw(st.data())


def apply_pt2_edit(src: bytes, how: str, target: str, data) -> bytes:
    if how == "truncate_archive":
        return src[: data.draw(st.integers(0, len(src) - 1))]
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(src)) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            body = zin.read(info.filename)
            if info.filename == target:
                if how == "remove":
                    continue
                if how == "corrupt" and body:
                    body = bytearray(body)
                    for _ in range(data.draw(st.integers(1, 4))):
                        body[data.draw(st.integers(0, len(body) - 1))] ^= \
                            data.draw(st.integers(1, 255))
                    body = bytes(body)
                elif how == "oversize":
                    body = body + b"\0" * data.draw(st.sampled_from([1, 4096, 8 << 20]))
                elif how == "truncate_entry":
                    body = body[: data.draw(st.integers(0, max(len(body) - 1, 0)))]
                elif how == "json" and target.endswith(".json"):
                    body = _mutate_json(data.draw, body)
                elif how == "duplicate":
                    zout.writestr(info, body)
            zout.writestr(info, body)
    return out.getvalue()


@settings(max_examples=settings.default.max_examples * 2)
@given(data=st.data())
def test_fuzzed_pt2_loads_or_fails_in_one_line(worker, valid_pt2, tmp_path_factory, data):
    names = zipfile.ZipFile(io.BytesIO(valid_pt2)).namelist()
    how, target, inner = data.draw(pt2_edit(names))
    path = tmp_path_factory.mktemp("pt2") / "model.pt2"
    path.write_bytes(apply_pt2_edit(valid_pt2, how, target, inner))
    check(worker, "pt2", str(path))


def test_oversized_zip_entry_is_refused_before_reading(tmp_path, valid_pt2):
    """An entry whose header declares far more bytes than the archive holds (a zip bomb,
    or a lying header) is refused from the central directory, nothing inflated."""
    import edgecc
    from edgecc.errors import ModelLoadError

    path = tmp_path / "bomb.pt2"
    with zipfile.ZipFile(io.BytesIO(valid_pt2)) as zin, \
            zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename))
        zout.writestr(names := "m/data/weights/weight_9", b"\0" * (64 << 20))
    with pytest.raises(ModelLoadError, match="declares"):
        edgecc.load(path)
    assert names


# -- --calib .npz / .npy -----------------------------------------------------------------------

SPECS = [["x", [2, 3], "float32"], ["ids", [2, 4], "int64"]]


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def lying_npy(shape, dtype="<f4", payload=b"\0" * 24) -> bytes:
    """A .npy whose header declares ``shape`` over ``payload`` bytes of data."""
    header = {"descr": dtype, "fortran_order": False, "shape": tuple(shape)}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + payload


@st.composite
def calib_case(draw):
    """(file name, bytes): an .npz of one array per input, or a lone .npy, mutated."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 2, 3)).astype("float32")
    ids = rng.integers(0, 9, (4, 2, 4))
    how = draw(st.sampled_from(["flip", "truncate", "lying_shape", "lying_dtype",
                                "wrong_shape", "wrong_dtype", "keys", "fortran", "npy_flip",
                                "npy_lying", "npy_truncate"]))
    arrays = {"x": npy_bytes(x), "ids": npy_bytes(ids)}
    if how in ("lying_shape", "npy_lying"):
        shape = draw(st.sampled_from([[2**40], [2**31, 2**31], [10**12, 3], [4, 2, 2**33],
                                      [-1, 3], [2**63 - 1]]))
        arrays["x"] = lying_npy(shape)
    elif how == "lying_dtype":
        arrays["x"] = lying_npy([4, 2, 3], draw(st.sampled_from(
            ["|O", "<U1000000", "V8", "<c16", "[('a','<f4')]", "<f2", "|b1", "xx"])), b"\0" * 8)
    elif how == "wrong_shape":
        arrays["x"] = npy_bytes(np.zeros(draw(st.sampled_from([(3,), (2, 3, 4, 5), (0, 2, 3),
                                                               (5, 2, 3), ()])), "float32"))
    elif how == "wrong_dtype":
        arrays["x"] = npy_bytes(np.zeros((4, 2, 3), draw(st.sampled_from(
            ["float64", "int8", "complex64", "bool", "U3"]))))
    elif how == "keys":
        arrays = {draw(st.sampled_from(["y", "arr_0", "x"])): arrays["x"]}
    elif how == "fortran":
        arrays["x"] = npy_bytes(np.asfortranarray(x))
    if how.startswith("npy"):
        name, body = "x.npy", bytearray(arrays["x"])
    else:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for k, v in arrays.items():
                z.writestr(f"{k}.npy", v)
        name, body = "calib.npz", bytearray(buf.getvalue())
    if how in ("flip", "npy_flip"):
        for _ in range(draw(st.integers(1, 4))):
            body[draw(st.integers(0, len(body) - 1))] ^= draw(st.integers(1, 255))
    elif how in ("truncate", "npy_truncate"):
        body = body[: draw(st.integers(0, len(body) - 1))]
    return name, bytes(body)


@settings(max_examples=settings.default.max_examples * 8)
@given(case=calib_case())
def test_fuzzed_calibration_loads_or_fails_in_one_line(worker, tmp_path_factory, case):
    name, body = case
    folder = tmp_path_factory.mktemp("calib")
    (folder / name).write_bytes(body)
    if name.endswith(".npy"):  # a folder of .npy files, one per input
        (folder / "ids.npy").write_bytes(npy_bytes(np.zeros((4, 2, 4), "int64")))
        check(worker, "calib", str(folder), SPECS)
    else:
        check(worker, "calib", str(folder / name), SPECS)


def test_lying_npy_header_refused_without_allocating(tmp_path):
    """A header declaring 8 TB over 24 bytes of data: refused from the header."""
    from edgecc.errors import InputSpecError
    from edgecc.inputs import load_calibration
    from edgecc.program import TensorSpec

    (tmp_path / "x.npy").write_bytes(lying_npy([2**40, 2, 3]))
    with pytest.raises(InputSpecError, match="declares"):
        load_calibration(str(tmp_path), [TensorSpec("x", (2, 3), "float32")])
