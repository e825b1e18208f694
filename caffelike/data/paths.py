"""Where list-file paths may point: ``--strict-paths`` keeps them under ``root_folder``.

Caffe reads ``root_folder + path`` verbatim, so ``../`` or an absolute path may point anywhere;
the strict switch is for list and window files that are not trusted.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
from typing import Iterator

_STRICT_PATHS: contextvars.ContextVar[bool] = contextvars.ContextVar("strict_paths", default=False)


@contextlib.contextmanager
def strict_paths(enabled: bool = True) -> Iterator[None]:
    """Within this block, data layers built refuse entries that escape ``root_folder``."""
    token = _STRICT_PATHS.set(enabled)
    try:
        yield
    finally:
        _STRICT_PATHS.reset(token)


def paths_are_strict() -> bool:
    """Whether the current block asked for strict paths."""
    return _STRICT_PATHS.get()


def escapes_root(root: str, path: str) -> bool:
    """Whether ``root + path`` resolves (symlinks included) outside ``root``."""
    base = os.path.realpath(root or ".")
    target = os.path.realpath(root + path)
    return os.path.commonpath([base, target]) != base


def strict_path_error(root: str, path: str) -> str | None:
    """The refusal message for a list entry under ``--strict-paths`` (None when it is allowed)."""
    if not paths_are_strict() or not escapes_root(root, path):
        return None
    return f"image '{path}' escapes root_folder '{root or '.'}' (refused under --strict-paths)"
