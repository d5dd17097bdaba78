"""``-t arm64``: 64-bit Arm CPUs (TVM, aarch64 cross-compilation, qemu verification)."""

from edgecc.targets.arm.target import ArmOptions, ArmTarget

__all__ = ["ArmOptions", "ArmTarget"]
