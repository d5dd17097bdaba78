"""NPU presets: the shipped NPU descriptions (``devices/*.yaml``), one per device::

    edgecc compile model.pt2 -t npu:ethos-u55-128 -o out   # = --target-option device=ethos-u55-128
    edgecc compile model.pt2 -t npu --target-option description=my-npu.yaml -o out

A user's own NPU is a description file (``description=PATH``; ``generic-int8.yaml`` is the
template), no code. ``cpu`` names where the fallback part runs: ``host`` (this machine), or an
arm64 preset of the ``arm64`` target (``arm64`` = ``arm64:generic``, ``arm64:raspberry-pi-5``,
``cortex-a76``, ...): the library is then cross-compiled for aarch64 and runs here under
qemu-aarch64 (the arm64 target's emulation cache), as on the board.
"""

from __future__ import annotations

from edgecc.targets.npu.description import NpuDescription, list_devices, load_device

CPU_HOST = "host"


def resolve(device: str, description: str = "") -> NpuDescription:
    """The description of ``device`` (a shipped name), or of the file ``description``."""
    return load_device(description or device)


def arm64_preset(cpu: str) -> str | None:
    """The arm64 preset ``cpu`` names (None for ``host``)."""
    if cpu == CPU_HOST:
        return None
    name = cpu.split(":", 1)[1] if cpu.startswith("arm64:") else cpu
    return "generic" if name == "arm64" else name


def check_cpu(cpu: str, desc: NpuDescription | None = None) -> None:
    """``host`` or an arm64 preset (the arm64 target's: ``edgecc targets``); an arm64 CPU
    part needs a codegen whose regions are in the library (``c``): Ethos-U regions run in
    the host runner's simulator, which has no aarch64 build."""
    preset = arm64_preset(cpu)
    if preset is None:
        return
    # the arm64 target owns the presets (the cpu=ARM64_PRESET): one list of cores
    from edgecc.targets.arm.presets import resolve as resolve_arm

    try:
        resolve_arm(preset)
    except ValueError as exc:
        raise ValueError(f"cpu={cpu!r}: {exc} (or cpu=host)") from None
    if desc is not None and desc.codegen != "c":
        raise ValueError(f"cpu={cpu!r} with {desc.name}: its regions are Ethos-U command "
                         "streams run here by edgecc's simulator on the host; an arm64 CPU "
                         "part is built for C-codegen NPUs (generic-int8) only")


def describe() -> str:
    """One line per shipped device, for ``edgecc targets``."""
    lines = []
    for name in list_devices():
        d = load_device(name)
        lines.append(f"{name:<16}{d.codegen:<6}{d.summary}")
    return "\n".join(lines)
