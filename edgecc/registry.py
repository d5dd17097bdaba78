"""Explicit registries of passes and targets.

Nothing registers itself on import. The default registries are assembled on first use from
edgecc's built-in lists (``edgecc.passes.BUILTIN_PASSES``, ``edgecc.targets.BUILTIN_TARGETS``)
plus third-party packages that declare entry points::

    [project.entry-points."edgecc.passes"]
    my-pass = "my_package.passes:MyPass"

A duplicate name is an error, wherever it comes from.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import metadata
from typing import Generic, TypeVar

from edgecc.errors import DuplicateNameError, EdgeccError, UnknownNameError, one_line

T = TypeVar("T")

PASS_ENTRY_POINTS = "edgecc.passes"
TARGET_ENTRY_POINTS = "edgecc.targets"


class Registry(Generic[T]):
    """Name -> class, with a kind for error messages."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._origin: dict[str, str] = {}

    def register(self, item: T, *, origin: str = "edgecc") -> T:
        name = getattr(item, "name", "")
        if not name:
            raise EdgeccError(f"cannot register {item!r} as a {self.kind}: it has no name")
        if name in self._items:
            raise DuplicateNameError(
                f"{self.kind} name '{name}' is registered twice "
                f"({self._origin[name]} and {origin}): rename one of them"
            )
        self._items[name] = item
        self._origin[name] = origin
        return item

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self._items) from None

    def origin(self, name: str) -> str:
        return self._origin[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())


def _load_entry_points(registry: Registry, group: str) -> None:
    for ep in metadata.entry_points(group=group):
        try:
            item = ep.load()
        except Exception as exc:
            raise EdgeccError(
                f"plugin entry point '{ep.name} = {ep.value}' in group '{group}' failed to "
                f"load: {one_line(exc)}; fix or uninstall the package that declares it"
            ) from exc
        dist = getattr(ep, "dist", None)
        origin = f"plugin {dist.name}" if dist is not None else f"plugin {ep.value}"
        registry.register(item, origin=origin)


_default_passes: Registry | None = None
_default_targets: Registry | None = None


def default_pass_registry() -> Registry:
    """Built-in passes plus entry-point plugins (built once, on first use)."""
    global _default_passes
    if _default_passes is None:
        from edgecc.passes import BUILTIN_PASSES

        registry: Registry = Registry("pass")
        for cls in BUILTIN_PASSES:
            registry.register(cls)
        _load_entry_points(registry, PASS_ENTRY_POINTS)
        _default_passes = registry
    return _default_passes


def default_target_registry() -> Registry:
    """Built-in targets plus entry-point plugins (built once, on first use)."""
    global _default_targets
    if _default_targets is None:
        from edgecc.targets import BUILTIN_TARGETS

        registry: Registry = Registry("target")
        for cls in BUILTIN_TARGETS:
            registry.register(cls)
        _load_entry_points(registry, TARGET_ENTRY_POINTS)
        _default_targets = registry
    return _default_targets


def register_pass(pass_cls: T, *, registry: Registry | None = None) -> T:
    """Register a pass class (usable as a decorator) in ``registry`` or the default one."""
    (registry or default_pass_registry()).register(pass_cls, origin=pass_cls.__module__)
    return pass_cls


def register_target(target_cls: T, *, registry: Registry | None = None) -> T:
    """Register a target class in ``registry`` or the default one."""
    (registry or default_target_registry()).register(target_cls, origin=target_cls.__module__)
    return target_cls
