"""A small named registry with "did you mean" lookups.

Used where classes or functions register themselves beside their code: layer types
(:data:`caffelike.layers.base.LAYERS`) and filler types (:data:`caffelike.fillers.FILLERS`).
Closed sets kept in one module (lr policies, update rules) are plain dicts.
"""
from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from .errors import CaffelikeError, Where

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps a Caffe name (e.g. ``"ReLU"``) to an object; registering a name twice is an error."""

    def __init__(self, kind: str, error: type[CaffelikeError] = CaffelikeError):
        self.kind = kind
        self.error = error
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.kind} '{name}' registered twice")
        self._items[name] = obj
        return obj

    def decorator(self, name: str) -> Callable[[T], T]:
        def wrap(obj: T) -> T:
            return self.register(name, obj)

        return wrap

    def get(self, name: str, where: Where | None = None) -> T:
        """Return the entry, or raise ``self.error`` with a "did you mean" and the known names."""
        try:
            return self._items[name]
        except KeyError:
            pass
        known = sorted(self._items)
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        lowered = [k for k in known if k.lower() == name.lower()]
        hint = lowered[0] if lowered else (close[0] if close else None)
        msg = f"unknown {self.kind} '{name}'"
        if hint:
            msg += f"; did you mean '{hint}'?"
        msg += f" (known: {', '.join(known)})"
        raise self.error(msg, where)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())
