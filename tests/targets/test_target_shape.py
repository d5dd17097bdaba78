"""What every target shares: one folder shape, ``-t NAME:PRESET`` for the targets with
presets, the lowering report returned by ``lower`` (no hidden files in the bundle), a
README in every bundle, and options instead of environment variables."""

from __future__ import annotations

import json
import pathlib
import warnings

import pytest
import torch

import edgecc
import edgecc.targets
from edgecc.compiler import resolve_target
from edgecc.errors import OptionError, UnknownNameError

TARGETS = pathlib.Path(edgecc.targets.__file__).parent
SHAPE = ("presets.py", "partition.py", "lower.py", "runner.py", "README.txt")


@pytest.mark.parametrize("folder", ["host", "arm", "onnx"])
def test_every_target_folder_has_the_same_shape(folder):
    import importlib

    present = {p.name for p in (TARGETS / folder).iterdir()}
    assert set(SHAPE) <= present, set(SHAPE) - present
    assert callable(importlib.import_module(f"edgecc.targets.{folder}.lower").lower_program)
    assert callable(importlib.import_module(f"edgecc.targets.{folder}.runner").load_runner)


def test_target_spec_fills_the_preset_option():
    target, options = resolve_target("arm64:raspberry-pi-5", None)
    assert target.name == "arm64" and options.preset == "raspberry-pi-5"
    assert resolve_target("host:generic", {})[1].preset == "generic"
    assert resolve_target("host", {})[1].preset == "native"
    # the spec's preset is the caller's: it overrides a recipe's, agrees with the same one
    assert resolve_target("arm64:cortex-a76", None, {"preset": "cortex-a53"})[1].preset == \
        "cortex-a76"
    assert resolve_target("arm64:cortex-a76", {"preset": "cortex-a76"})[1].preset == \
        "cortex-a76"


@pytest.mark.parametrize("spec,options,error,message", [
    ("onnx:opset18", None, OptionError, "target 'onnx' has no presets: write '-t onnx'"),
    ("arm64:", None, OptionError, "'-t arm64:' names no preset"),
    ("arm64:cortex-a76", {"preset": "cortex-a53"}, OptionError,
     "the arm64 preset is given twice: '-t arm64:cortex-a76' and preset='cortex-a53'"),
    ("arm64:cortex-a75x", None, OptionError, "did you mean"),
    ("host:nativ", None, OptionError, "unknown host preset 'nativ'; did you mean 'native'"),
    ("hots:native", None, UnknownNameError, "did you mean 'host'"),
])
def test_bad_target_specs_say_what_to_write(spec, options, error, message):
    with pytest.raises(error) as err:
        resolve_target(spec, options)
    assert message in str(err.value)


def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
                               torch.nn.Linear(16, 4)).eval()


def test_compile_with_a_preset_spec_and_the_bundle_readme(tmp_path):
    res = edgecc.compile(_mlp(), target="host:generic", example_inputs=(torch.randn(2, 8),),
                         pipeline="fuse", output_dir=str(tmp_path / "o"))
    target = res.report["target"]
    assert target["name"] == "host" and target["options"]["preset"] == "generic"
    library, readme = res.report["artifacts"]
    assert "llvm generic" in library["description"]
    assert readme["path"] == "README.txt"
    text = (tmp_path / "o" / "README.txt").read_text()
    assert "llvm generic (preset generic)" in text and "input: float32[2,8]" in text
    # the lowering report travels in the return value, not in a hidden file
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "README.txt", "manifest.json", "model.so"]
    assert set(res.report["lowering"]) == {"seconds"}
    assert res.report["verification"]["passed"]


def test_cli_target_spec_and_no_global_warning_filters(tmp_path, capsys):
    from edgecc.cli import main

    path = tmp_path / "m.pt2"
    edgecc.trace(_mlp(), (torch.randn(2, 8),)).save(str(path))
    before = list(warnings.filters)
    code = main(["compile", str(path), "-t", "host:native", "-p", "fuse", "-o",
                 str(tmp_path / "o"), "--json"])
    assert code == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["target"]["options"]["preset"] == "native"
    assert warnings.filters == before  # main() scopes its filters to the command
    code = main(["compile", str(path), "-t", "onnx:x", "-o", str(tmp_path / "p")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "has no presets" in err
    assert not (tmp_path / "p").exists()


def test_emulator_cache_is_an_option(tmp_path):
    from edgecc.targets.arm import ArmOptions, ArmTarget

    options = ArmOptions(emulator_cache=str(tmp_path / "nowhere"))
    assert not ArmTarget().executes(options)
    (reason,) = ArmTarget().not_verified(options)
    assert str(tmp_path / "nowhere") in reason
