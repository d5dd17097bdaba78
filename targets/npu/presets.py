"""NPU presets: the shipped NPU descriptions (``devices/*.yaml``), one per device::

    edgecc compile model.pt2 -t npu:ethos-u55-128 -o out   # = --target-option device=ethos-u55-128
    edgecc compile model.pt2 -t npu --target-option description=my-npu.yaml -o out

A user's own NPU is a description file (``description=PATH``; ``generic-int8.yaml`` is the
template), no code. ``cpu`` names where the fallback part runs: ``host`` (this machine; an arm64 CPU part is
not built yet).
"""

from __future__ import annotations

from edgecc.targets.npu.description import NpuDescription, list_devices, load_device

CPU_HOST = "host"


def resolve(device: str, description: str = "") -> NpuDescription:
    """The description of ``device`` (a shipped name), or of the file ``description``."""
    return load_device(description or device)


def check_cpu(cpu: str) -> None:
    """Where the fallback part runs. Only ``host`` is built so far: an arm64 CPU part (the
    issue's ``cpu=ARM64_PRESET``) is refused with that said, rather than built for the wrong
    machine."""
    if cpu != CPU_HOST:
        raise ValueError(f"cpu={cpu!r}: the npu target builds its CPU part for 'host' only so "
                         "far (an arm64 CPU part is not implemented yet)")


def describe() -> str:
    """One line per shipped device, for ``edgecc targets``."""
    lines = []
    for name in list_devices():
        d = load_device(name)
        lines.append(f"{name:<16}{d.codegen:<6}{d.summary}")
    return "\n".join(lines)
