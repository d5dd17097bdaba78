"""Arm64 CPU presets: a board or core name → the LLVM CPU and the features it has.

``resolve(preset, features, triple)`` validates a choice and returns the ``Core`` with the
final feature set; :func:`llvm_spec` turns it into TVM's JSON target. Features are the
AArch64 extensions that matter for inference kernels:

* ``neon`` (Advanced SIMD, every AArch64 core), ``fullfp16`` (fp16 arithmetic),
* ``dotprod`` (``sdot``/``udot``: int8 4-way dot products into int32 lanes, Armv8.2+),
* ``i8mm`` (``smmla``: int8 2x8 · 8x2 matrix multiply-accumulate, Armv8.6 / some v8.2+),
* ``bf16``, ``sve``, ``sve2``.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

FEATURES = ("neon", "fullfp16", "dotprod", "i8mm", "bf16", "sve", "sve2")


@dataclasses.dataclass(frozen=True)
class Core:
    name: str  # preset name
    mcpu: str  # LLVM CPU ("" = generic Armv8-A)
    arch: str  # architecture version, for messages
    features: tuple[str, ...]
    description: str = ""


def _core(mcpu: str, arch: str, features: str, description: str = "") -> dict[str, Any]:
    return {"mcpu": mcpu, "arch": arch, "features": tuple(features.split()),
            "description": description}


_CORES = {
    "generic": _core("", "Armv8-A", "neon", "any 64-bit Arm CPU"),
    "cortex-a53": _core("cortex-a53", "Armv8.0-A", "neon", "in-order, Raspberry Pi 3"),
    "cortex-a57": _core("cortex-a57", "Armv8.0-A", "neon", "Jetson Nano / TX1 / TX2"),
    "cortex-a55": _core("cortex-a55", "Armv8.2-A", "neon fullfp16 dotprod", "little core"),
    "cortex-a72": _core("cortex-a72", "Armv8.0-A", "neon", "Raspberry Pi 4"),
    "cortex-a76": _core("cortex-a76", "Armv8.2-A", "neon fullfp16 dotprod", "Raspberry Pi 5"),
    "cortex-a78": _core("cortex-a78", "Armv8.2-A", "neon fullfp16 dotprod",
                        "phones 2021, Jetson Orin's cores (A78AE)"),
    "cortex-x1": _core("cortex-x1", "Armv8.2-A", "neon fullfp16 dotprod"),
    "cortex-a710": _core("cortex-a710", "Armv9.0-A", "neon fullfp16 dotprod i8mm bf16 sve2"),
    "neoverse-n1": _core("neoverse-n1", "Armv8.2-A", "neon fullfp16 dotprod",
                         "AWS Graviton2, Ampere Altra"),
    "neoverse-v1": _core("neoverse-v1", "Armv8.4-A", "neon fullfp16 dotprod i8mm bf16 sve",
                         "AWS Graviton3"),
    "neoverse-n2": _core("neoverse-n2", "Armv9.0-A", "neon fullfp16 dotprod i8mm bf16 sve2"),
}
_BOARDS = {
    "raspberry-pi-3": "cortex-a53",
    "raspberry-pi-4": "cortex-a72",
    "raspberry-pi-5": "cortex-a76",
    "jetson-nano": "cortex-a57",
    "jetson-orin": "cortex-a78",
    "graviton2": "neoverse-n1",
    "graviton3": "neoverse-v1",
}
PRESETS: dict[str, Core] = {
    **{n: Core(n, **c) for n, c in _CORES.items()},
    **{b: dataclasses.replace(Core(b, **_CORES[c]),
                              description=f"{c}" + (f", {_CORES[c]['description']}"
                                                     if _CORES[c]["description"] else ""))
       for b, c in _BOARDS.items()},
}


def resolve(preset: str, features: tuple[str, ...] = (), triple: str = "aarch64-linux-gnu"
            ) -> Core:
    """The preset with ``features`` added; a clear ValueError for what cannot be."""
    if preset not in PRESETS:
        close = difflib.get_close_matches(preset, list(PRESETS), n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ValueError(f"unknown arm64 preset '{preset}'; {hint}`edgecc targets` lists them")
    core = PRESETS[preset]
    extra = [f.lstrip("+") for f in features]
    for f in extra:
        if f not in FEATURES:
            raise ValueError(f"unknown feature '+{f}'; AArch64 features edgecc knows: "
                             + ", ".join("+" + x for x in FEATURES))
    if not triple.startswith(("aarch64", "arm64")):
        named = ", ".join("+" + f for f in extra) or "its features"
        raise ValueError(f"triple '{triple}' is not AArch64: the arm64 target builds 64-bit "
                         f"Arm code, and {named} are AArch64 features; use "
                         "aarch64-linux-gnu")
    if core.mcpu:
        missing = [f for f in extra if f not in core.features]
        if missing:
            having = [n for n, c in PRESETS.items() if all(f in c.features for f in missing)]
            raise ValueError(
                f"{preset} ({core.mcpu}, {core.arch}) has no "
                f"{', '.join('+' + f for f in missing)}; presets that have it: "
                f"{', '.join(having[:5]) or 'none'}")
    return dataclasses.replace(core, features=tuple(dict.fromkeys((*core.features, *extra))))


def llvm_spec(core: Core, triple: str, num_cores: int = 0) -> dict[str, Any]:
    spec: dict[str, Any] = {"kind": "llvm", "mtriple": triple,
                            "mattr": ["+" + f for f in core.features]}
    if core.mcpu:
        spec["mcpu"] = core.mcpu
    if num_cores:
        spec["num-cores"] = num_cores
    return spec


def describe() -> str:
    """One line per preset, for ``edgecc targets``."""
    return "\n".join(f"{n:<16}{c.mcpu or 'generic':<13}{' '.join('+' + f for f in c.features):<46}"
                     f"{c.description}" for n, c in PRESETS.items())
