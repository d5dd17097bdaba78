"""No code execution from files (issue 20): a ``.pt2`` / ``.pt`` / ``.npz`` / ``.npy``
crafted to run code when unpickled is refused with one line and the code does not run;
with ``trust_pickle`` (``--trust-pickle``) the model files are unpickled as asked (which
shows each payload is real: it does run then)."""

import io
import json
import os
import zipfile

import numpy as np
import pytest
import torch

import edgecc
from edgecc.errors import InputSpecError, ModelLoadError
from edgecc.inputs import load_calibration, load_npz_inputs
from edgecc.program import TensorSpec


class Plant:
    """Unpickling this creates the directory ``marker`` (the code a crafted file runs)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


class M(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(x) + torch.tensor([1.0, 2.0])


@pytest.fixture(scope="module")
def good_pt2(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "m.pt2"
    torch.export.save(torch.export.export(M().eval(), (torch.randn(1, 3),)), str(path))
    return path


def rewrite(src, dst, edit):
    """Copy the zip ``src`` to ``dst``; ``edit(name, data, archive)`` returns the new bytes
    of an entry (or None to keep it)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            new = edit(info.filename, data, zout)
            zout.writestr(info, data if new is None else new)


def torch_saved(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def crafted_sample_inputs(src, dst, marker):
    """sample_inputs/model.pt: torch tries weights_only=True, then falls back to False."""
    rewrite(src, dst, lambda n, d, z: torch_saved((Plant(marker),))
            if n.endswith("sample_inputs/model.pt") else None)


def crafted_pickled_weight(src, dst, marker):
    """The weights config says weight_0 is pickled (use_pickle): torch.load(weights_only=False)."""
    def edit(name, data, z):
        if name.endswith("model_weights_config.json"):
            cfg = json.loads(data)
            cfg["config"]["fc.weight"]["use_pickle"] = True
            return json.dumps(cfg).encode()
        if name.endswith("weights/weight_0"):
            return torch_saved(Plant(marker))
        return None
    rewrite(src, dst, edit)


def crafted_opaque_constant(src, dst, marker):
    """An opaque constant (constants/opaque_obj_0): plain pickle.loads."""
    import pickle

    def edit(name, data, z):
        if name.endswith("model_constants_config.json"):
            cfg = json.loads(data)
            cfg["config"]["lifted_tensor_0"]["path_name"] = "opaque_obj_0"
            folder = name.rpartition("/")[0]
            z.writestr(f"{folder}/opaque_obj_0", pickle.dumps(Plant(marker)))
            return json.dumps(cfg).encode()
        return None
    rewrite(src, dst, edit)


@pytest.mark.parametrize("craft", [crafted_sample_inputs, crafted_pickled_weight,
                                   crafted_opaque_constant])
def test_crafted_pt2_does_not_run_code(craft, good_pt2, tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "bad.pt2"
    craft(good_pt2, bad, marker)
    with pytest.raises(ModelLoadError, match="arbitrary code.*--trust-pickle") as info:
        edgecc.load(bad)
    assert "\n" not in str(info.value)
    assert not marker.exists()
    # the payload is real: trusting the file runs it (torch's loader, as asked)
    try:
        edgecc.load(bad, trust_pickle=True)
    except ModelLoadError:
        pass  # the object is no tensor: the program does not build, but the code ran
    if craft is crafted_opaque_constant and not marker.exists():
        # torch reaches opaque constants only after the graph deserializes, which depends
        # on torch's opaque-type registry: unpickle the entry as torch would
        import pickle

        with zipfile.ZipFile(bad) as z:
            name = next(n for n in z.namelist() if n.endswith("opaque_obj_0"))
            pickle.loads(z.read(name))
    assert marker.exists(), "the crafted file never ran its code: the test cannot fail"


def test_crafted_pt2_refused_on_the_command_line(good_pt2, tmp_path):
    from edgecc.cli import main

    marker = tmp_path / "pwned"
    crafted_sample_inputs(good_pt2, tmp_path / "bad.pt2", marker)
    assert main(["inspect", str(tmp_path / "bad.pt2")]) == 2
    assert not marker.exists()


def test_untouched_pt2_still_loads(good_pt2):
    prog = edgecc.load(good_pt2)
    x = torch.randn(1, 3)
    torch.testing.assert_close(prog.run(x)[0], torch.export.load(str(good_pt2)).module()(x))


def test_crafted_pt_does_not_run_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    torch.save(Plant(marker), path)
    with pytest.raises(ModelLoadError, match="--trust-pickle"):
        edgecc.load(path, example_inputs=(torch.randn(1, 3),))
    assert not marker.exists()
    with pytest.raises(ModelLoadError, match="not a model"):
        edgecc.load(path, trust_pickle=True, example_inputs=(torch.randn(1, 3),))
    assert marker.exists()  # trusted: torch unpickled it, as the user asked


def test_crafted_npz_and_npy_do_not_run_code(tmp_path):
    marker = tmp_path / "pwned"
    payload = np.array([Plant(marker)], dtype=object)
    np.savez(tmp_path / "calib.npz", x=payload)
    specs = [TensorSpec("x", (1, 3), "float32")]
    with pytest.raises(InputSpecError, match="calib.npz"):
        load_calibration(str(tmp_path / "calib.npz"), specs)
    with pytest.raises(InputSpecError):
        load_npz_inputs(str(tmp_path / "calib.npz"), specs)
    folder = tmp_path / "npy"
    folder.mkdir()
    np.save(folder / "x.npy", payload)
    with pytest.raises(InputSpecError, match="x.npy"):
        load_calibration(str(folder), specs)
    assert not marker.exists()
    np.load(folder / "x.npy", allow_pickle=True)  # the payload is real
    assert marker.exists()
