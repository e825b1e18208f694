"""The mean image of a DB of Datum records (``caffelike compute_image_mean``, Caffe's tool).

The mean of every Datum (encoded ones decoded with their own channels) as a BlobProto
``1 x C x H x W`` written to OUTPUT_FILE (.binaryproto), and the per-channel means logged as
``mean_value channel [c]: v``. Sums are exact (float64); the division is Caffe's float one.
"""
from __future__ import annotations

import numpy as np

from ..errors import DataError, Where
from ..io.atomic import atomic_write
from ..glog import get_logger
from ..proto import caffe_pb2
from .images import datum_to_image
from .sources import KeyValueDB, parse_datum

log = get_logger("compute_image_mean")


def compute_mean(db_path: str, backend: str = "lmdb") -> np.ndarray:
    """The float32 ``(C, H, W)`` mean image of a DB of Datum records."""
    db = KeyValueDB(db_path, backend)
    where = Where(file=db_path)
    total: np.ndarray | None = None
    count = 0
    for key, value in db.items():
        name = key.decode(errors="replace")
        datum = parse_datum(key, value, where)
        if count == 0 and datum.encoded:
            log.info("Decoding Datum")
        img = datum_to_image(datum)
        if img is None:
            raise DataError(f"key '{name}': cannot decode its image", where)
        chw = img.transpose(2, 0, 1).astype(np.float64)
        if total is None:
            total = np.zeros_like(chw)
            log.info("Starting iteration")
        elif chw.shape != total.shape:
            raise DataError(f"key '{name}': image is {_dims(chw.shape)}, the first was "
                            f"{_dims(total.shape)}; all images must have one size", where)
        total += chw
        count += 1
        if count % 10000 == 0:
            log.info("Processed %d files.", count)
    if count % 10000:
        log.info("Processed %d files.", count)
    assert total is not None  # KeyValueDB refuses an empty DB
    return total.astype(np.float32) / np.float32(count)


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def write_mean(mean: np.ndarray, path: str) -> None:
    """Write a ``(C, H, W)`` mean as Caffe's BlobProto (num 1, legacy 4-d dims)."""
    blob = caffe_pb2.BlobProto()
    blob.num, (blob.channels, blob.height, blob.width) = 1, mean.shape
    blob.data.extend(np.asarray(mean, dtype=np.float32).ravel().tolist())
    with atomic_write(path, "wb") as handle:
        handle.write(blob.SerializeToString())

