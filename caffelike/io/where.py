"""Where a data source's errors point: the file (and line) read, under the layer reading it."""
from __future__ import annotations

import os

from ..errors import Where


def source_where(where: Where | None, file: str, line: int | None = None) -> Where:
    """The layer of ``where`` (if any), placed at ``file`` (and ``line``) of the source it reads."""
    base = where if where is not None else Where()
    return Where(file=file, line=line, layer=base.layer, type=base.type)


def cwd_hint(path: str) -> str:
    """`` (relative to the current directory ...)`` for a relative path, else nothing."""
    return "" if os.path.isabs(path) else f" (relative to the current directory {os.getcwd()})"
