"""Caffe's image lists: ImageData's ``source``, convert_imageset's LISTFILE, classify's -list.

BVLC's format (the default): one ``path label`` per line, split at the last space so that
paths may hold spaces (Caffe's ``find_last_of(' ')``). The book author's fork
(Caffe_Long, ``ReadImagesList``) reads ``path label1 ... labelK`` instead: the line is split
on whitespace (so paths cannot hold spaces), every line must carry as many labels as the
first, and a layer uses the first K (``image_data_param.label_size``); that format is read
when ``labels=K`` is given. Blank lines are skipped. Every error names the list file and
line, and the layer reading the list when there is one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

from ..errors import DataError, Where
from .where import cwd_hint, source_where

Number = Union[int, float]


@dataclass(frozen=True)
class ListEntry:
    """One line of an image list (``line`` is 1-based; ``label`` is None only for a line
    without one, read with ``labels_required=False``; ``extra_labels`` holds the 2nd..Kth
    labels of the fork's multi-label lines)."""

    path: str
    label: Number | None
    line: int
    extra_labels: tuple[Number, ...] = ()

    @property
    def labels(self) -> tuple[Number, ...]:
        """Every label of the line, first one included."""
        return (() if self.label is None else (self.label,)) + self.extra_labels


def _read_lines(source: str, where: Where | None) -> list[tuple[int, str]]:
    try:
        with open(source, encoding="utf-8", errors="surrogateescape") as handle:
            text = handle.read()
    except OSError as exc:
        raise DataError(f"cannot open image list '{source}'{cwd_hint(source)}: "
                        f"{exc.strerror}", source_where(where, source)) from None
    return [(number, raw.rstrip()) for number, raw in enumerate(text.splitlines(), start=1)
            if raw.strip()]


def read_image_list(source: str, where: Where | None = None, *,
                    labels_required: bool = True, labels: int | None = None,
                    label_type: Callable[[str], Number] = int) -> list[ListEntry]:
    """The entries of an image list; a DataError naming the file and line for a bad line
    and for an empty list.

    ``labels=None``: BVLC's ``path integer`` lines (or, with ``labels_required=False``, a bare
    ``path`` without spaces). ``labels=K``: the fork's ``path l1 l2 ...`` lines with at least
    K numbers of ``label_type`` (``int`` or ``float``), each line as many as the first; the
    entry keeps the first K.
    """
    lines = _read_lines(source, where)
    if labels is not None:
        entries = _read_multi(lines, source, where, labels, label_type)
    else:
        entries = [_read_single(number, line, source, where, labels_required)
                   for number, line in lines]
    if not entries:
        expected = "'path label'" if labels is None else f"'path' and {labels} labels"
        raise DataError(f"image list is empty; expected {expected} lines", source_where(where, source))
    return entries


def _read_single(number: int, line: str, source: str, where: Where | None,
                 labels_required: bool) -> ListEntry:
    path, sep, label = line.rpartition(" ")
    if not sep and not labels_required:
        return ListEntry(line, None, number)
    if not sep or not path:
        raise DataError(f"expected 'path label', got '{line}'", source_where(where, source, number))
    try:
        value = int(label)
    except ValueError:
        raise DataError(f"label '{label}' is not an integer (expected 'path label')",
                        source_where(where, source, number)) from None
    return ListEntry(path, value, number)


def _read_multi(lines: list[tuple[int, str]], source: str, where: Where | None, count: int,
                label_type: Callable[[str], Number]) -> list[ListEntry]:
    kind = "an integer" if label_type is int else "a number"
    entries: list[ListEntry] = []
    first_count: int | None = None
    for number, line in lines:
        at = source_where(where, source, number)
        path, *tokens = line.split()
        values: list[Number] = []
        for token in tokens:
            try:
                values.append(label_type(token))
            except ValueError:
                raise DataError(f"label '{token}' is not {kind} (expected 'path' and {count} "
                                "labels separated by spaces; paths cannot hold spaces here)",
                                at) from None
        if len(values) < count:
            raise DataError(f"expected 'path' and {count} labels, got {len(values)} label"
                            f"{'' if len(values) == 1 else 's'} in '{line}'", at)
        if first_count is None:
            first_count = len(values)
        elif len(values) != first_count:
            raise DataError(f"{len(values)} labels, but the first line has {first_count}; every "
                            "line must carry the same number of labels", at)
        entries.append(ListEntry(path, values[0], number, tuple(values[1:count])))
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
    lines = [FieldLine(tuple(raw.split()), number) for number, raw in _read_lines(source, where)]
    if not lines:
        raise DataError(f"image list is empty; expected '{expected}' lines", source_where(where, source))
    return lines
