"""Caffe's image lists: ImageData's ``source``, convert_imageset's LISTFILE, classify's -list.

One ``path label`` per line, split at the last space so that paths may hold spaces (Caffe's
``find_last_of(' ')``); blank lines are skipped. Every error names the list file and line,
and the layer reading the list when there is one.

:func:`read_field_list` reads the lists of the book fork's (Caffe_Long) data layers, which
split each line on whitespace (``iss >> field``), so their paths cannot hold spaces.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import DataError, Where
from .where import cwd_hint, source_where


@dataclass(frozen=True)
class ListEntry:
    """One line of an image list (``line`` is 1-based; ``label`` is None only for a line
    without one, read with ``labels_required=False``)."""

    path: str
    label: int | None
    line: int


def _read_list_text(source: str, where: Where | None) -> str:
    try:
        with open(source, encoding="utf-8", errors="surrogateescape") as handle:
            return handle.read()
    except OSError as exc:
        raise DataError(f"cannot open image list '{source}'{cwd_hint(source)}: "
                        f"{exc.strerror}", source_where(where, source)) from None


def read_image_list(source: str, where: Where | None = None, *,
                    labels_required: bool = True) -> list[ListEntry]:
    """The entries of an image list; a DataError for a line that is not ``path integer``
    (or, with ``labels_required=False``, a bare ``path`` without spaces) and for an empty list."""
    text = _read_list_text(source, where)
    entries: list[ListEntry] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        if not line:
            continue
        path, sep, label = line.rpartition(" ")
        if not sep and not labels_required:
            entries.append(ListEntry(line, None, number))
            continue
        if not sep or not path:
            raise DataError(f"expected 'path label', got '{line}'", source_where(where, source, number))
        try:
            value = int(label)
        except ValueError:
            raise DataError(f"label '{label}' is not an integer (expected 'path label')",
                            source_where(where, source, number)) from None
        entries.append(ListEntry(path, value, number))
    if not entries:
        raise DataError("image list is empty; expected 'path label' lines", source_where(where, source))
    return entries


@dataclass(frozen=True)
class FieldLine:
    """One non-blank line of a whitespace-split list: its fields and its 1-based ``line``."""

    fields: tuple[str, ...]
    line: int


def read_field_list(source: str, where: Where | None, expected: str) -> list[FieldLine]:
    """The whitespace-split lines of a list (the fork's ``iss >> field`` reading); blank lines
    are skipped. ``expected`` (e.g. ``'image labelmap'``) names a line's form in the error
    for an empty list; each caller checks its own field counts."""
    text = _read_list_text(source, where)
    lines = [FieldLine(tuple(raw.split()), number)
             for number, raw in enumerate(text.splitlines(), start=1) if raw.strip()]
    if not lines:
        raise DataError(f"image list is empty; expected '{expected}' lines", source_where(where, source))
    return lines
