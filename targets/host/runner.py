"""How a host artifact runs here: ``model.so`` in this process's TVM Relax VM
(``edgecc.targets.tvm.runner``), with the thread count it was compiled with."""

from __future__ import annotations

import os
from typing import Any

from edgecc.targets.host.lower import LIBRARY
from edgecc.targets.tvm.runner import VmRunner


def load_runner(output_dir: str, manifest: dict[str, Any]) -> VmRunner:
    threads = manifest["target"]["options"].get("num_threads") or 0
    return VmRunner(os.path.join(output_dir, LIBRARY), threads)
