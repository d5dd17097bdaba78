"""The main job: compile a ResNet-20 (CIFAR) for this machine's CPU and verify it.

Writes ``examples/out/resnet20.pt2`` (torch.export) and compiles it with the edgecc CLI:

    edgecc inspect examples/out/resnet20.pt2
    edgecc compile examples/out/resnet20.pt2 -t host -r optimize -o examples/out/resnet20-host --force
"""

from __future__ import annotations

import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from edgecc.cli import main as edgecc  # noqa: E402
from examples.models import resnet20  # noqa: E402


def run() -> int:
    out = os.path.join(HERE, "out")
    os.makedirs(out, exist_ok=True)
    model_path = os.path.join(out, "resnet20.pt2")
    batch = torch.export.Dim("batch", min=1, max=64)
    exported = torch.export.export(resnet20(), (torch.randn(2, 3, 32, 32),),
                                   dynamic_shapes=({0: batch},))
    torch.export.save(exported, model_path)
    print(f"wrote {model_path} (ResNet-20, CIFAR-10 shape, dynamic batch)\n")
    rc = edgecc(["inspect", model_path])
    if rc:
        return rc
    print()
    return edgecc(["compile", model_path, "-t", "host", "-r", "optimize",
                   "-o", os.path.join(out, "resnet20-host"), "--force"])


if __name__ == "__main__":
    sys.exit(run())
