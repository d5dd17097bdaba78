"""edgecc: a compiler that puts neural networks on edge hardware.

    import edgecc
    prog = edgecc.trace(module, (x,))                        # nn.Module -> Program
    res = edgecc.compile(prog, target="host", pipeline="fold-batchnorm,fuse,dce",
                         output_dir="build/")
    res.report, res.run(x)
"""

from edgecc.compiler import CompileResult, compile
from edgecc.errors import EdgeccError
from edgecc.frontend import load, trace
from edgecc.pass_base import NoOptions, Pass, PassContext, PassResult, function_pass
from edgecc.pass_manager import PassManager
from edgecc.program import Program, TensorSpec
from edgecc.registry import register_pass, register_target
from edgecc.target import Artifact, Availability, Lowered, Support, Target

__version__ = "0.1.0"

__all__ = [
    "Artifact",
    "Availability",
    "CompileResult",
    "EdgeccError",
    "Lowered",
    "NoOptions",
    "Pass",
    "PassContext",
    "PassManager",
    "PassResult",
    "Program",
    "Support",
    "Target",
    "TensorSpec",
    "__version__",
    "compile",
    "function_pass",
    "load",
    "register_pass",
    "register_target",
    "trace",
]
