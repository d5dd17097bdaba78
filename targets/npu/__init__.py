"""The NPU target: NPU abilities from a declarative description, Arm Ethos-U through Vela.

Modules: ``description`` (the NPU description schema and its YAML loader, shipped devices in
``devices/``), ``region`` (an int8 region with TFLite semantics), ``simulator`` (integer-exact
reference), ``tflite_writer`` (region -> .tflite), ``vela_compile`` (Vela 5.2 compile, the
performance report and the driver header). Backend libraries (vela, flatbuffers, litert) are
imported inside functions, so importing this package needs none of them.
"""

from edgecc.targets.npu.target import NpuOptions, NpuTarget

__all__ = ["NpuOptions", "NpuTarget"]
