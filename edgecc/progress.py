"""Progress for long steps: a bar on a terminal, silent otherwise (or under --json)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any


class Progress:
    """Stage-by-stage progress: ``with Progress(stages) as p: p.stage("lower") ...``."""

    def __init__(self, stages: Sequence[str], *, enabled: bool | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.stages = list(stages)
        self._bar: Any = None

    def __enter__(self) -> Progress:
        if self.enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=len(self.stages), file=sys.stderr, leave=False,
                             bar_format="{desc:<28} {bar:24} {n_fmt}/{total_fmt} [{elapsed}]")
        return self

    def stage(self, name: str) -> None:
        if self._bar is not None:
            if self._bar.desc:
                self._bar.update(1)
            self._bar.set_description_str(name)

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.close()


def progress_iter(items: Iterable[Any], desc: str, *, total: int | None = None,
                  enabled: bool | None = None) -> Iterator[Any]:
    """Iterate ``items`` with a bar (calibration batches, layers, training steps)."""
    if not (sys.stderr.isatty() if enabled is None else enabled):
        yield from items
        return
    from tqdm import tqdm

    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    yield from tqdm(items, desc=desc, total=total, file=sys.stderr, leave=False)
