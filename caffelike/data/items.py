"""Item loaders of the data layers: how one item of a source becomes arrays (one per top).

Each loader is picklable (it travels to prefetch workers) and has ``fetch(index)``, run in
the layer's process (cheap: DB bytes, or just the index), and ``load(payload, rng)``, run in
a worker (decode, transform). Errors are one-line DataErrors naming list line or DB key.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import numpy as np

from ..errors import DataError, Where
from ..io.image_list import ListEntry
from ..io.where import source_where
from ..proto import caffe_pb2
from .images import datum_to_image, read_image
from .paths import paths_are_strict, strict_path_error
from .sources import HDF5Files, KeyValueDB, datum_labels, parse_datum
from .transformer import DataTransformer, TransformFailure
from .windows import WindowFile, crop_window


class ImageListItems:
    """ImageData items: read ``root_folder + path`` (colour or grey, optional resize), transform.

    The label is a scalar (BVLC), or with ``label_size > 1`` the fork's ``(label_size, 1, 1)``.
    """

    def __init__(self, entries: list[ListEntry], source: str, root: str, new_height: int,
                 new_width: int, is_color: bool, transformer: DataTransformer, where: Where,
                 label_size: int = 1):
        self.entries = entries
        self.label_size = label_size
        self.source = source
        self.root = root
        self.new_height, self.new_width, self.is_color = new_height, new_width, is_color
        self.transformer = transformer
        self.where = where
        for index, entry in enumerate(entries if paths_are_strict() else ()):
            refusal = strict_path_error(root, entry.path)
            if refusal:
                raise DataError(refusal, self._where(index))

    def __len__(self) -> int:
        return len(self.entries)

    def _where(self, index: int) -> Where:
        return source_where(self.where, self.source, self.entries[index].line)

    def describe(self, index: int) -> str:
        return f"{self.source}:{self.entries[index].line}: image '{self.root + self.entries[index].path}'"

    def image(self, index: int) -> np.ndarray:
        """The untransformed image of list entry ``index`` (HxWxC, BGR)."""
        path = self.root + self.entries[index].path
        img = read_image(path, self.new_height, self.new_width, self.is_color)
        if img is None:
            hint = "" if os.path.isabs(path) else f" (relative to {os.getcwd()})"
            reason = "no such file" if not os.path.exists(path) else "not a readable image"
            raise DataError(f"cannot read image '{path}'{hint}: {reason}", self._where(index))
        return img

    def fetch(self, index: int) -> int:
        return index

    @property
    def fits_to_first(self) -> bool:
        """See :attr:`DataTransformer.fits_to_first` (the prefetcher asks)."""
        return self.transformer.fits_to_first

    def load(self, index: int, rng: np.random.Generator,
             fit: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        img = self.image(index)
        with self._failure_at(index):
            data = self.transformer(img, rng, fit)
        entry = self.entries[index]
        if self.label_size > 1:  # the fork's (label_size, 1, 1) per image
            label = np.asarray(entry.labels[:self.label_size], dtype=np.float32).reshape(-1, 1, 1)
        else:
            label = np.asarray(entry.label, dtype=np.float32)
        return data, label

    def output_shape(self, index: int = 0) -> tuple[int, int, int]:
        """Caffe's InferBlobShape from item ``index``: a too-small image fails here, at set-up."""
        img = self.image(index)
        with self._failure_at(index):
            return self.transformer.output_shape(*img.shape)

    @contextlib.contextmanager
    def _failure_at(self, index: int) -> Iterator[None]:
        try:
            yield
        except TransformFailure as exc:
            raise DataError(f"image '{self.root + self.entries[index].path}': {exc}",
                            self._where(index)) from None


class DatumItems:
    """Data-layer items: Datum records of an LMDB/LevelDB, decoded and transformed.

    ``label_count`` (the labels of the first record, as the book fork's Data layer reads
    them): 1 gives BVLC's scalar label; K > 1 (the fork's repeated ``Datum.label``) a
    ``(K,)`` label per item, every record holding K.
    """

    def __init__(self, db: KeyValueDB, transformer: DataTransformer, with_label: bool, where: Where,
                 label_count: int = 1):
        self.db = db
        self.transformer = transformer
        self.with_label = with_label
        self.where = where
        self.label_count = label_count

    def labels(self, record: tuple[bytes, bytes]) -> list[int]:
        """Every label of a record (the fork's repeated ``Datum.label``; see :func:`datum_labels`)."""
        try:
            return datum_labels(record[1])
        except ValueError:
            raise DataError(f"key '{record[0].decode(errors='replace')}': value is not a Datum "
                            "record", source_where(self.where, self.db.path)) from None

    def __len__(self) -> int:
        return len(self.db)

    def describe(self, index: int) -> str:
        return f"{self.db.path}: key '{self.db.keys[index].decode(errors='replace')}'"

    def fetch(self, index: int) -> tuple[bytes, bytes]:
        return self.db.get(index)

    def datum(self, record: tuple[bytes, bytes]) -> tuple[caffe_pb2.Datum, np.ndarray]:
        """Parse and decode one ``(key, value)`` record: the Datum and its HxWxC image."""
        key, value = record
        where = source_where(self.where, self.db.path)
        name = key.decode(errors="replace")
        datum = parse_datum(key, value, where)
        img = datum_to_image(datum, self.transformer.force_color, self.transformer.force_gray)
        if img is None:
            what = "encoded image cannot be decoded" if datum.encoded else \
                f"raw Datum holds no {datum.channels}x{datum.height}x{datum.width} pixels"
            raise DataError(f"key '{name}': {what}", where)
        return datum, img

    def load(self, record: tuple[bytes, bytes], rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        datum, img = self.datum(record)
        with self._failure_at(record):
            data = self.transformer(img, rng)
        if not self.with_label:
            return (data,)
        if self.label_count <= 1:
            return data, np.asarray(datum.label, dtype=np.float32)
        labels = self.labels(record)
        if len(labels) != self.label_count:
            raise DataError(f"key '{record[0].decode(errors='replace')}': {len(labels)} label"
                            f"{'' if len(labels) == 1 else 's'}, but "
                            f"the first record has {self.label_count}; every record must carry "
                            "the same number", source_where(self.where, self.db.path))
        return data, np.asarray(labels, dtype=np.float32)

    def output_shape(self, record: tuple[bytes, bytes]) -> tuple[int, int, int]:
        """Caffe's InferBlobShape from ``record``: a too-small image fails here, at set-up."""
        _, img = self.datum(record)
        with self._failure_at(record):
            return self.transformer.output_shape(*img.shape)

    @contextlib.contextmanager
    def _failure_at(self, record: tuple[bytes, bytes]) -> Iterator[None]:
        try:
            yield
        except TransformFailure as exc:
            raise DataError(f"key '{record[0].decode(errors='replace')}': {exc}",
                            source_where(self.where, self.db.path)) from None


class HDF5Items:
    """HDF5Data items: one row of every dataset named by the tops (no transform, as Caffe)."""

    def __init__(self, files: HDF5Files):
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def describe(self, index: int) -> str:
        f, r = self.files.locate(index)
        return f"{self.files.files[f]}: row {r}"

    def fetch(self, index: int) -> int:
        return index

    def load(self, index: int, rng: np.random.Generator) -> list[np.ndarray]:
        return self.files.row(index)


class WindowItems:
    """WindowData items: slot ``i`` of a batch is background for i < batch - num_fg, else
    foreground; the window and mirror are drawn from the item's generator."""

    def __init__(self, windows: WindowFile, batch_size: int, fg_fraction: float, crop: int,
                 context_pad: int, square: bool, mirror: bool, scale: float,
                 transformer: DataTransformer, where: Where):
        self.windows = windows
        self.batch_size = batch_size
        self.num_fg = int(np.float32(batch_size) * np.float32(fg_fraction))
        self.crop, self.context_pad, self.square = crop, context_pad, square
        self.mirror, self.scale = mirror, scale
        self.mean_values = transformer.mean_values
        self.mean_file = None if transformer.mean_file is None else \
            np.ascontiguousarray(transformer.mean_file.transpose(2, 0, 1))
        self.where = where

    def __len__(self) -> int:
        return self.batch_size

    def fetch(self, slot: int) -> int:
        return slot

    def load(self, slot: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        pool = self.windows.foreground if slot >= self.batch_size - self.num_fg else \
            self.windows.background
        win = pool[int(rng.integers(len(pool)))]
        mirror = bool(rng.integers(2)) if self.mirror else False
        path = self.windows.images[win.image]
        img = read_image(path, is_color=True)
        if img is None:
            raise DataError(f"cannot read image '{path}' of image #{win.image}", self.where)
        try:
            data = crop_window(img, win, self.crop, self.context_pad, self.square, mirror,
                               self.scale, self.mean_values, self.mean_file)
        except ValueError as exc:
            raise DataError(f"image '{path}': {exc}", self.where) from None
        return data, np.asarray(win.label, dtype=np.float32)
