"""Scoped log and warning filtering: edgecc never changes another library's logger
settings or the process's warning filters for good."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

TORCH_ONNX_REGISTRATION = "torch.onnx._internal.exporter._registration"


@contextlib.contextmanager
def dropping_records(logger_name: str, contains: str) -> Iterator[None]:
    """Drop the named logger's records whose message contains ``contains`` while the block
    runs (a filter added for it and removed after; the logger's level is untouched)."""
    logger = logging.getLogger(logger_name)

    def keep(record: logging.LogRecord) -> bool:
        return contains not in record.getMessage()

    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def without_torchvision_notes() -> contextlib.AbstractContextManager[None]:
    """torch.onnx's exporter warns, for every torchvision operator, that torchvision is
    absent; nothing edgecc exports uses them."""
    return dropping_records(TORCH_ONNX_REGISTRATION, "torchvision")


# A warning is "edgecc's own" when it is attributed to edgecc's code or the examples
# (``warnings.warn`` there, or a deprecated API that code calls, reported at the caller's
# line): edgecc can act on those. Deprecation notices attributed anywhere else (torch's
# ``isinstance(treespec, LeafSpec)``, raised from ``copyreg`` during a deepcopy;
# transformers'; onnxscript's) are about code edgecc does not own.
NOT_EDGECC = r"(?!(edgecc|examples)(\.|$))"
THIRD_PARTY_NOTICES = (FutureWarning, DeprecationWarning, PendingDeprecationWarning)


@contextlib.contextmanager
def quiet_third_party_warnings() -> Iterator[None]:
    """Drop deprecation notices (``FutureWarning``, ``DeprecationWarning``) that other
    libraries raise while the block runs; edgecc's own warnings, and every other category
    (``UserWarning``, ``RuntimeWarning``), still show. For the CLI and the example scripts:
    the library itself never filters warnings."""
    with warnings.catch_warnings():
        for category in THIRD_PARTY_NOTICES:
            warnings.filterwarnings("ignore", category=category, module=NOT_EDGECC)
        yield
