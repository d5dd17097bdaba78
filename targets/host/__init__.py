"""The ``host`` target: this machine's CPU, through Apache TVM Relax (LLVM)."""

from edgecc.targets.host.target import HostOptions, HostTarget

__all__ = ["HostOptions", "HostTarget"]
