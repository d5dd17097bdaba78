"""edgecc's targets: one sub-package per backend.

``BUILTIN_TARGETS`` is the explicit list the default registry is built from. Backend
libraries (tvm, tensorrt, coremltools) are imported only inside a target's methods, so
listing targets works without any toolchain installed.
"""

from edgecc.targets.apple import AppleTarget
from edgecc.targets.arm import ArmTarget
from edgecc.targets.gguf import GgufTarget
from edgecc.targets.host import HostTarget
from edgecc.targets.jetson import JetsonTarget
from edgecc.targets.npu import NpuTarget
from edgecc.targets.onnx import OnnxTarget

BUILTIN_TARGETS = (HostTarget, OnnxTarget, ArmTarget, JetsonTarget, NpuTarget, GgufTarget,
                   AppleTarget)

__all__ = ["AppleTarget", "ArmTarget", "BUILTIN_TARGETS", "GgufTarget", "HostTarget", "JetsonTarget", "NpuTarget",
           "OnnxTarget"]
