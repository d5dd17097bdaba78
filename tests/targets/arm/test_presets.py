"""arm64 presets: features per core, and clear errors for choices that cannot be."""

from __future__ import annotations

import pytest

from edgecc.targets.arm import ArmOptions
from edgecc.targets.arm.presets import PRESETS, llvm_spec, resolve


def test_presets_map_to_llvm_cpus_and_features():
    assert llvm_spec(resolve("raspberry-pi-5"), "aarch64-linux-gnu") == {
        "kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a76",
        "mattr": ["+neon", "+fullfp16", "+dotprod"]}
    assert "i8mm" in resolve("neoverse-v1").features
    assert "dotprod" not in resolve("cortex-a53").features
    assert resolve("generic", ("+dotprod", "+i8mm")).features == ("neon", "dotprod", "i8mm")
    for name in ("cortex-a53", "cortex-a55", "cortex-a72", "cortex-a76", "cortex-a78",
                 "neoverse-n1", "neoverse-v1", "raspberry-pi-4", "raspberry-pi-5"):
        assert name in PRESETS


def test_every_preset_is_a_cpu_llvm_knows():
    import tvm

    for name, core in PRESETS.items():
        if core.mcpu:
            target = tvm.target.Target(llvm_spec(core, "aarch64-linux-gnu"))
            assert str(target.attrs["mcpu"]) == core.mcpu, name


@pytest.mark.parametrize("kwargs,message", [
    (dict(preset="cortex-a75x"), "unknown arm64 preset 'cortex-a75x'; did you mean"),
    (dict(preset="raspbery-pi-5"), "did you mean 'raspberry-pi-5'"),
    (dict(preset="cortex-a53", features=("+i8mm",)), "cortex-a53 (cortex-a53, Armv8.0-A) has "
                                                      "no +i8mm; presets that have it: "),
    (dict(features=("+avx2",)), "unknown feature '+avx2'"),
    (dict(mtriple="armv7a-linux-gnueabihf", features=("+dotprod",)),
     "triple 'armv7a-linux-gnueabihf' is not AArch64"),
])
def test_bad_choices_fail_with_a_clear_message(kwargs, message):
    with pytest.raises(ValueError) as err:
        ArmOptions(**kwargs)
    assert message in str(err.value)
