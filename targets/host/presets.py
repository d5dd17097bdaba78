"""Host presets: which CPU the library is built for. The host target runs its artifact on
this machine, so a preset is either this CPU exactly or a baseline every CPU of this
architecture has (a library to copy to other machines of the same kind)::

    edgecc compile model.pt2 -t host:generic -o out     # = --target-option preset=generic

``mcpu`` (an LLVM CPU name) overrides the preset's CPU.
"""

from __future__ import annotations

import dataclasses
import difflib


@dataclasses.dataclass(frozen=True)
class HostPreset:
    name: str
    mcpu: str  # LLVM CPU name; "" = this machine's (llvm_get_system_cpu)
    description: str


PRESETS: dict[str, HostPreset] = {p.name: p for p in (
    HostPreset("native", "", "this machine's CPU and every extension it has (the default)"),
    HostPreset("generic", "generic",
               "the architecture's baseline (x86-64: SSE2; AArch64: NEON): runs on any CPU "
               "of this kind, slower"),
)}


def resolve(name: str) -> HostPreset:
    """The preset called ``name``; a ValueError with the closest name otherwise."""
    if name not in PRESETS:
        close = difflib.get_close_matches(name, list(PRESETS), n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ValueError(f"unknown host preset '{name}'; {hint}presets: "
                         + ", ".join(PRESETS))
    return PRESETS[name]


def describe() -> str:
    """One line per preset, for ``edgecc targets``."""
    return "\n".join(f"{p.name:<16}{p.mcpu or 'this CPU':<13}{p.description}"
                     for p in PRESETS.values())
