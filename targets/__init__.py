"""edgecc's targets: one sub-package per backend.

``BUILTIN_TARGETS`` is the explicit list the default registry is built from. Backend
libraries (tvm, tensorrt, coremltools) are imported only inside a target's methods, so
listing targets works without any toolchain installed.
"""

from edgecc.targets.host import HostTarget

BUILTIN_TARGETS = (HostTarget,)

__all__ = ["BUILTIN_TARGETS", "HostTarget"]
