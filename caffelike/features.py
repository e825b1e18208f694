"""Blobs of a TEST net over N mini-batches into LMDB or HDF5 (``caffelike extract_features``).

LMDB output is Caffe's: one ``Datum`` per image (``float_data``, channels/height/width from
the blob's legacy 4-D shape), keys ``%010d`` image indices, a new database per blob (it must
not exist yet). HDF5 output (caffelike's addition) is one file per blob holding a float32
dataset named after the blob, shaped ``(images, ...)``.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from .errors import CaffelikeError, DataError
from .glog import get_logger

log = get_logger("extract_features")


class _LmdbSink:
    """Datum records under ``%010d`` keys, committed every 1,000 images (as Caffe)."""

    def __init__(self, path: str):
        try:
            import lmdb
        except ImportError:
            raise CaffelikeError("LMDB output needs the lmdb package: pip install 'caffelike[lmdb]'") from None
        if os.path.exists(path):
            raise DataError(f"{path}: already exists; extract_features creates a new database")
        os.makedirs(path)
        self.env = lmdb.open(path, map_size=1 << 36, subdir=True)
        self.txn = self.env.begin(write=True)
        self.count = 0

    def add(self, feature: np.ndarray) -> None:
        from .proto import caffe_pb2

        # Caffe's legacy accessors: (D,) -> D x 1 x 1, (A, B) -> A x B x 1, (C, H, W) as is
        shape = tuple(int(d) for d in feature.shape) + (1, 1, 1)
        datum = caffe_pb2.Datum()
        datum.channels, datum.height = shape[0], shape[1]
        datum.width = int(np.prod(shape[2:feature.ndim])) if feature.ndim > 2 else 1
        datum.float_data.extend(feature.astype(np.float32).ravel().tolist())
        self.txn.put(f"{self.count:010d}".encode(), datum.SerializeToString())
        self.count += 1
        if self.count % 1000 == 0:
            self.txn.commit()
            self.txn = self.env.begin(write=True)

    def close(self) -> None:
        self.txn.commit()
        self.env.close()


class _Hdf5Sink:
    """One growing float32 dataset named after the blob."""

    def __init__(self, path: str, blob: str):
        try:
            import h5py
        except ImportError:
            raise CaffelikeError("HDF5 output needs h5py: pip install 'caffelike[hdf5]'") from None
        self.file = h5py.File(path, "w")
        self.blob = blob
        self.rows: list[np.ndarray] = []
        self.count = 0

    def add(self, feature: np.ndarray) -> None:
        self.rows.append(feature.astype(np.float32))
        self.count += 1

    def close(self) -> None:
        data = np.stack(self.rows) if self.rows else np.zeros((0,), np.float32)
        self.file.create_dataset(self.blob, data=data)
        self.file.close()


def extract(weights: str, proto: str, blobs: Sequence[str], dbs: Sequence[str], batches: int,
            db_type: str) -> list[int]:
    """Run the TEST net ``batches`` times, storing each image's blob values; returns counts."""
    import torch

    import caffelike as caffe

    if len(blobs) != len(dbs):
        raise CaffelikeError(f"{len(blobs)} blob names but {len(dbs)} database names; they must be equal")
    net = caffe.Net(proto, caffe.TEST, weights=weights)
    for name in blobs:
        if name not in net.blobs:
            raise CaffelikeError(f"{proto}: unknown feature blob name '{name}'; blobs: {', '.join(net.blobs)}")
    kind = db_type.lower()
    if kind not in ("lmdb", "hdf5"):
        raise CaffelikeError(f"unknown db type '{db_type}'; known: lmdb, hdf5")
    sinks = [_LmdbSink(db) if kind == "lmdb" else _Hdf5Sink(db, blob) for blob, db in zip(blobs, dbs)]
    log.info("Extracting Features")
    try:
        with torch.no_grad():
            for _ in range(batches):
                net.forward()
                for blob, sink in zip(blobs, sinks):
                    values = np.asarray(net.blobs[blob].data)
                    if values.ndim == 0:
                        values = values.reshape(1)
                    for feature in values:
                        sink.add(np.asarray(feature))
    finally:
        for sink in sinks:
            sink.close()
    for blob, sink in zip(blobs, sinks):
        log.info("Extracted features of %d query images for feature blob %s", sink.count, blob)
    return [s.count for s in sinks]

