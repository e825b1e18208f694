"""Writing Caffe databases (LMDB, or LevelDB with ``plyvel``) for the dataset tools.

Also :func:`split_bool_flags`, which turns gflags' ``-flag=true/false`` spelling of boolean
flags into what argparse's ``store_true`` understands.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from typing import Iterator, Sequence

from ..errors import DataError, Where

_TRUE = {"true", "1", "yes", "t", "y"}
_FALSE = {"false", "0", "no", "f", "n"}


def split_bool_flags(argv: Sequence[str], names: Sequence[str]) -> list[str]:
    """``-gray=true`` -> ``-gray``; ``-gray=false`` / ``-nogray`` -> dropped (gflags' forms)."""
    out: list[str] = []
    for arg in argv:
        bare = arg.lstrip("-")
        if arg.startswith("-") and bare.startswith("no") and bare[2:] in names:
            continue
        name, sep, value = bare.partition("=")
        if arg.startswith("-") and sep and name in names:
            if value.lower() in _TRUE:
                out.append("--" + name)
                continue
            if value.lower() in _FALSE:
                continue
            raise DataError(f"flag -{name} takes true or false, got '{value}'")
        out.append(arg)
    return out


class LmdbWriter:
    """Puts records into a new LMDB, growing its map when full; commit() ends a transaction."""

    def __init__(self, path: str):
        import lmdb

        self._lmdb = lmdb
        self.map_size = 1 << 26
        self.env = lmdb.open(path, map_size=self.map_size, subdir=True, meminit=False,
                             map_async=True)
        self.pending: list[tuple[bytes, bytes]] = []

    def put(self, key: bytes, value: bytes) -> None:
        self.pending.append((key, value))

    def commit(self) -> None:
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    for key, value in self.pending:
                        txn.put(key, value)
                break
            except self._lmdb.MapFullError:
                self.map_size *= 2
                self.env.set_mapsize(self.map_size)
        self.pending.clear()

    def close(self) -> None:
        self.commit()
        self.env.sync()
        self.env.close()


class LevelDBWriter:
    """Puts records into a new LevelDB (needs ``plyvel``)."""

    def __init__(self, path: str):
        import plyvel  # type: ignore[import-not-found]

        self.db = plyvel.DB(path, create_if_missing=True, error_if_exists=True)
        self.batch = self.db.write_batch()

    def put(self, key: bytes, value: bytes) -> None:
        self.batch.put(key, value)

    def commit(self) -> None:
        self.batch.write()
        self.batch = self.db.write_batch()

    def close(self) -> None:
        self.commit()
        self.db.close()


@contextlib.contextmanager
def open_db_writer(path: str, backend: str = "lmdb") -> Iterator[LmdbWriter | LevelDBWriter]:
    """A writer for a new DB at ``path`` (which must not exist yet, as Caffe's ``db::NEW``)."""
    backend = backend.lower()
    where = Where(file=path)
    if backend not in ("lmdb", "leveldb"):
        raise DataError(f"unknown backend '{backend}' (known: lmdb, leveldb)", where)
    if os.path.exists(path):
        raise DataError(f"DB '{path}' already exists; remove it or choose another name", where)
    if backend == "leveldb":
        try:
            import plyvel  # type: ignore[import-not-found]  # noqa: F401
        except ImportError:
            raise DataError("backend leveldb needs a LevelDB binding (pip install plyvel), "
                            "which is not installed; use -backend lmdb", where) from None
        writer: LmdbWriter | LevelDBWriter = LevelDBWriter(path)
    else:
        writer = LmdbWriter(path)
    try:
        yield writer
    except BaseException:
        writer.close()
        shutil.rmtree(path, ignore_errors=True)  # no half-written DB under the final name
        raise
    writer.close()
