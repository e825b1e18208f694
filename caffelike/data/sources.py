"""Readers for Caffe's data sources: LMDB (or LevelDB) of Datum, HDF5 file lists (image lists:
:mod:`caffelike.io.image_list`).

Each reader fails with a one-line :class:`~caffelike.errors.DataError` naming the file and
line (or the DB and key). Readers are picklable: database handles are opened lazily in the
process that reads, so they can travel to prefetch workers.
"""
from __future__ import annotations

import os
from typing import Iterator

import numpy as np
from google.protobuf.message import DecodeError

from ..errors import DataError, Where
from ..io.where import cwd_hint, source_where
from ..io.wire import read_varint
from ..proto import caffe_pb2


def parse_datum(key: bytes, value: bytes, where: Where) -> caffe_pb2.Datum:
    """The Datum record stored under ``key``; a DataError naming the key if it is not one."""
    datum = caffe_pb2.Datum()
    try:
        datum.ParseFromString(value)
    except DecodeError:
        raise DataError(f"key '{key.decode(errors='replace')}': value is not a Datum record",
                        where) from None
    return datum


def _int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def datum_labels(value: bytes) -> list[int]:
    """Every ``label`` (field 5) of a serialized Datum, in order.

    BVLC's Datum has one ``optional int32 label``; the book fork's (Caffe_Long) makes it
    ``repeated int32``, written unpacked, so a multi-label record is the same field several
    times on the wire. caffelike keeps BVLC's schema (``datum.label`` stays an int, the last
    one written, as protobuf keeps for a repeated optional field) and reads the fork's labels
    here. Packed encodings are read too. A ValueError for bytes that are not a message.
    """
    labels: list[int] = []
    pos, end = 0, len(value)
    while pos < end:
        key, pos = read_varint(value, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            number, pos = read_varint(value, pos)
            if field == 5:
                labels.append(_int32(number))
        elif wire == 1:
            pos += 8
        elif wire == 2:
            size, pos = read_varint(value, pos)
            if field == 5:
                inner = pos
                while inner < pos + size:
                    number, inner = read_varint(value, inner)
                    labels.append(_int32(number))
            pos += size
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"wire type {wire} of field {field}")
    if pos != end:
        raise ValueError("truncated field")
    return labels


def read_file_list(source: str, what: str, where: Where | None = None) -> list[tuple[str, int]]:
    """A list of file names, one per line (HDF5Data's ``source``): ``[(name, line), ...]``."""
    try:
        with open(source, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise DataError(f"cannot open {what} list '{source}'{cwd_hint(source)}: {exc.strerror}",
                        source_where(where, source)) from None
    names = [(ln.strip(), i) for i, ln in enumerate(lines, start=1) if ln.strip()]
    if not names:
        raise DataError(f"{what} list is empty; expected one file name per line",
                        source_where(where, source))
    return names


class KeyValueDB:
    """A read-only Caffe database (LMDB or LevelDB): keys in the cursor's order, values by index."""

    def __init__(self, path: str, backend: str = "lmdb", where: Where | None = None):
        self.path = path
        self.backend = backend.lower()
        self.where = where
        self._handle = None
        self._pid = -1
        self.keys = self._read_keys()
        if not self.keys:
            raise DataError(f"{self.backend.upper()} '{path}' holds no records", source_where(where, path))

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handle"], state["_pid"] = None, -1
        return state

    def _open(self):
        if self._handle is not None and self._pid == os.getpid():
            return self._handle
        if self.backend == "lmdb":
            self._handle = _open_lmdb(self.path, self.where)
        elif self.backend == "leveldb":
            self._handle = _open_leveldb(self.path, self.where)
        else:
            raise DataError(f"unknown DB backend '{self.backend}' (known: lmdb, leveldb)",
                            source_where(self.where, self.path))
        self._pid = os.getpid()
        return self._handle

    def _read_keys(self) -> list[bytes]:
        handle = self._open()
        if self.backend == "lmdb":
            with handle.begin(buffers=False) as txn:
                return [bytes(k) for k in txn.cursor().iternext(keys=True, values=False)]
        return [bytes(k) for k in handle.iterator(include_value=False)]

    def __len__(self) -> int:
        return len(self.keys)

    def get(self, index: int) -> tuple[bytes, bytes]:
        """``(key, value)`` of record ``index`` (cursor order)."""
        key = self.keys[index]
        handle = self._open()
        if self.backend == "lmdb":
            with handle.begin(buffers=False) as txn:
                value = txn.get(key)
        else:
            value = handle.get(key)
        if value is None:
            raise DataError(f"key '{key.decode(errors='replace')}' vanished from the DB",
                            source_where(self.where, self.path))
        return key, bytes(value)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every ``(key, value)`` in cursor order."""
        for i in range(len(self.keys)):
            yield self.get(i)


_LMDB_ENVS: dict[tuple[str, int], object] = {}


def _open_lmdb(path: str, where: Where | None):
    """A read-only LMDB environment, shared by every reader of ``path`` in this process
    (py-lmdb refuses to open one environment twice in a process)."""
    import lmdb

    subdir = os.path.isdir(path)
    if not (os.path.isfile(os.path.join(path, "data.mdb")) if subdir else os.path.isfile(path)):
        raise DataError(f"cannot open LMDB '{path}'{cwd_hint(path)}: no such database "
                        "(expected a folder holding data.mdb)", source_where(where, path))
    key = (os.path.realpath(path), os.getpid())
    env = _LMDB_ENVS.get(key)
    if env is None:
        try:
            env = lmdb.open(path, readonly=True, lock=False, subdir=subdir, readahead=False,
                            max_readers=512)
        except lmdb.Error as exc:
            raise DataError(f"cannot open LMDB '{path}': {exc}", source_where(where, path)) from None
        _LMDB_ENVS[key] = env
    return env


def _open_leveldb(path: str, where: Where | None):
    if not os.path.isdir(path):
        raise DataError(f"cannot open LevelDB '{path}'{cwd_hint(path)}: no such database",
                        source_where(where, path))
    try:
        import plyvel  # type: ignore[import-not-found]
    except ImportError:
        raise DataError(f"backend LEVELDB needs a LevelDB binding (pip install plyvel), which is "
                        f"not installed; convert '{path}' with 'caffelike convert_imageset "
                        f"-backend lmdb' or use backend: LMDB", source_where(where, path)) from None
    try:
        return plyvel.DB(path, create_if_missing=False)
    except Exception as exc:  # plyvel raises its own error classes
        raise DataError(f"cannot open LevelDB '{path}': {exc}", source_where(where, path)) from None


class HDF5Files:
    """HDF5Data's source: a list of .h5 files, each with one dataset per top (rows on axis 0)."""

    def __init__(self, source: str, datasets: list[str], where: Where | None = None):
        self.source = source
        self.datasets = list(datasets)
        self.where = where
        self.files: list[str] = []
        self.rows: list[int] = []
        self.row_shapes: list[tuple[int, ...]] = []
        self._cache: tuple[int, list[np.ndarray]] | None = None
        for name, line in read_file_list(source, "HDF5 file", where):
            rows, shapes = self._inspect(name, line)
            if rows == 0:
                raise DataError(f"HDF5 file '{name}' has no rows", source_where(where, source, line))
            if self.row_shapes and shapes != self.row_shapes:
                raise DataError(f"'{name}' has rows of shapes {shapes}, the first file has "
                                f"{self.row_shapes}", source_where(where, source, line))
            self.files.append(name)
            self.rows.append(rows)
            self.row_shapes = shapes

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_cache"] = None
        return state

    def _inspect(self, name: str, line: int) -> tuple[int, list[tuple[int, ...]]]:
        import h5py

        if not os.path.isfile(name):
            raise DataError(f"cannot open HDF5 file '{name}'{cwd_hint(name)}: no such file",
                            source_where(self.where, self.source, line))
        try:
            with h5py.File(name, "r") as h5:
                shapes, rows = [], None
                for ds in self.datasets:
                    if ds not in h5:
                        raise DataError(f"HDF5 file '{name}' has no dataset '{ds}' (it has: "
                                        f"{', '.join(sorted(h5.keys()))})",
                                        source_where(self.where, self.source, line))
                    shape = h5[ds].shape
                    if len(shape) < 1 or (rows is not None and shape[0] != rows):
                        raise DataError(f"datasets of '{name}' must share their first "
                                        f"dimension (rows); '{ds}' has shape {shape}",
                                        source_where(self.where, self.source, line))
                    rows = shape[0]
                    shapes.append(tuple(shape[1:]))
        except OSError as exc:
            raise DataError(f"cannot read HDF5 file '{name}': {exc}",
                            source_where(self.where, self.source, line)) from None
        return int(rows or 0), shapes

    def __len__(self) -> int:
        return int(sum(self.rows))

    def locate(self, index: int) -> tuple[int, int]:
        """(file number, row) of global row ``index``."""
        bounds = np.cumsum(self.rows)
        f = int(np.searchsorted(bounds, index, side="right"))
        return f, index - (int(bounds[f - 1]) if f else 0)

    def row(self, index: int) -> list[np.ndarray]:
        """One row of every dataset, as float32 arrays (Caffe's Dtype)."""
        import h5py

        f, r = self.locate(index)
        if self._cache is None or self._cache[0] != f:
            with h5py.File(self.files[f], "r") as h5:
                arrays = [np.asarray(h5[ds][()], dtype=np.float32) for ds in self.datasets]
            self._cache = (f, arrays)
        return [a[r] for a in self._cache[1]]
