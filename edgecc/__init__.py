"""edgecc: a compiler that puts neural networks on edge hardware.

    import edgecc
    prog = edgecc.trace(module, (x,))                        # nn.Module -> Program
    res = edgecc.compile(prog, target="host", pipeline="fold-batchnorm,fuse,dce",
                         output_dir="build/")
    res.report, res.run(x)
"""

from edgecc.errors import EdgeccError
from edgecc.frontend import load, trace
from edgecc.program import Program, TensorSpec

__version__ = "0.1.0"

__all__ = ["EdgeccError", "Program", "TensorSpec", "__version__", "load", "trace"]
