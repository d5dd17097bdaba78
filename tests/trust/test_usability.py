"""Smaller things users trip on (issue 20): ``CompileResult.run`` takes numpy as well as
torch and answers in kind; third-party deprecation notices are silenced in the CLI and the
main job, edgecc's own warnings are kept."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

import edgecc
from edgecc.errors import InputSpecError
from edgecc.logs import quiet_third_party_warnings


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 3)

    def forward(self, x, y):
        return self.fc(x) * 2, y + 1


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    torch.manual_seed(0)
    ex = (torch.randn(2, 6), torch.randn(2, 3))
    return edgecc.compile(Net().eval(), "onnx", pipeline="dce", example_inputs=ex,
                          output_dir=str(tmp_path_factory.mktemp("b") / "o"))


def test_run_takes_numpy_and_returns_numpy(compiled):
    x, y = np.random.randn(2, 6).astype("float32"), np.random.randn(2, 3).astype("float32")
    out = compiled.run(x, y)
    assert all(isinstance(o, np.ndarray) for o in out)
    ref = compiled.original.run(torch.from_numpy(x), torch.from_numpy(y))
    np.testing.assert_allclose(out[0], ref[0].numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(out[1], y + 1, atol=1e-6)
    # a non-contiguous (transposed) array is accepted too
    xt = np.asfortranarray(x)
    np.testing.assert_allclose(compiled.run(xt, y)[0], out[0], atol=1e-6)


def test_run_takes_torch_and_returns_torch(compiled):
    x, y = torch.randn(2, 6), torch.randn(2, 3)
    out = compiled.run(x, y)
    assert all(isinstance(o, torch.Tensor) for o in out)
    torch.testing.assert_close(out[1], y + 1)


def test_run_checks_numpy_inputs_like_tensors(compiled):
    with pytest.raises(InputSpecError, match="dtype"):
        compiled.run(np.zeros((2, 6), "float64"), np.zeros((2, 3), "float32"))
    with pytest.raises(InputSpecError, match="shape"):
        compiled.run(np.zeros((2, 7), "float32"), np.zeros((2, 3), "float32"))


def _emit(module, category, text):
    warnings.warn_explicit(text, category, "f.py", 1, module=module)


def test_third_party_notices_dropped_edgecc_warnings_kept():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_third_party_warnings():
            _emit("copyreg", FutureWarning, "isinstance(treespec, LeafSpec) is deprecated")
            _emit("transformers.modeling_utils", DeprecationWarning, "old api")
            _emit("torch.onnx", FutureWarning, "old exporter")
            _emit("edgecc.targets.tvm.lowering", FutureWarning, "edgecc's own notice")
            _emit("examples.minilm", DeprecationWarning, "example's own notice")
            _emit("torch", UserWarning, "a user warning from torch")
            _emit("edgecc_plugin", FutureWarning, "not edgecc (prefix only)")
        _emit("torch", FutureWarning, "after the block")  # the filter is scoped
    assert [str(w.message) for w in seen] == [
        "edgecc's own notice", "example's own notice", "a user warning from torch",
        "after the block"]


def test_cli_shows_no_third_party_future_warnings(tmp_path):
    from edgecc.cli import main

    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(Net().eval(), (torch.randn(2, 6), torch.randn(2, 3))),
                      str(path))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")  # every warning shown, as a user's python would
        edgecc.load(str(path)).copy()  # without the filter torch's notice is raised
        assert any(issubclass(w.category, FutureWarning) for w in seen), "test cannot fail"
        seen.clear()
        assert main(["compile", str(path), "-t", "onnx", "-p", "dce",
                     "-o", str(tmp_path / "o")]) == 0
    notices = [f"{w.category.__name__}: {w.message}" for w in seen
               if issubclass(w.category, (FutureWarning, DeprecationWarning))]
    assert not notices, notices
