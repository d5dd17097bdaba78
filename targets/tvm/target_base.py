"""``TvmTarget``: what every target that lowers through TVM Relax + LLVM shares.

A TVM target (``host``, ``arm64``, next ``npu``) inherits the availability check (is
apache-tvm importable, and which version), the support table and the legalization passes
(``partition``), and the unsupported-node check that runs before any lowering. What it
adds is what differs: its presets and options, how it lowers (``lowering``, ``tuning``
with its own LLVM target and runner) and how its artifact runs.
"""

from __future__ import annotations

import functools
from typing import Any

import torch.fx as fx

from edgecc.errors import LoweringError
from edgecc.pipeline_text import PassStep
from edgecc.program import Program
from edgecc.target import Availability, Support, Target
from edgecc.targets.tvm import partition

TVM_INSTALL = ("apache-tvm is not installed: pip install -c constraints.txt "
               "'apache-tvm==0.27.0.post1' 'apache-tvm-ffi==0.1.14.post0'")


@functools.lru_cache(maxsize=1)
def tvm_version() -> str | None:
    """The installed apache-tvm's version, or None when it cannot be imported."""
    try:
        import tvm
    except Exception:  # noqa: BLE001 - a broken install is as missing as an absent one
        return None
    return str(tvm.__version__)


def check_common_options(options: Any) -> None:
    """The checks every TVM target's options share (``num_threads``, ``tune_trials``)."""
    if options.num_threads < 0:
        raise ValueError("num_threads must be >= 0")
    if options.tune_trials < 0:
        raise ValueError("tune_trials must be >= 0 (0 = no tuning)")


class TvmTarget(Target):
    """Base class of the targets that lower through TVM Relax (see the module docstring)."""

    def availability(self) -> Availability:
        version = tvm_version()
        if version is None:
            return Availability(False, TVM_INSTALL)
        return Availability(True, f"apache-tvm {version}")

    def supports(self, node: fx.Node) -> Support:
        return partition.supports(node)

    def legalization(self, options: Any) -> tuple[PassStep, ...]:
        return partition.LEGALIZATION

    def check_lowerable(self, program: Program) -> None:
        """One ``LoweringError`` naming the nodes (the first ten) this target cannot lower."""
        bad = self.unsupported_nodes(program)
        if bad:
            listed = "; ".join(f"{n} ({op}): {why}" for n, op, why in bad[:10])
            raise LoweringError(f"{self.name} target cannot lower {len(bad)} node(s): {listed}")
