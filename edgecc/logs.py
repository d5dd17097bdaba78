"""Scoped log filtering: edgecc never changes another library's logger settings for good."""

from __future__ import annotations

import contextlib
import logging
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
