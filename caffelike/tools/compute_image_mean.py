"""``caffelike compute_image_mean [-backend lmdb] INPUT_DB [OUTPUT_FILE]``: Caffe's tool.

The mean of every Datum (encoded ones decoded with their own channels) as a BlobProto
``1 x C x H x W`` written to OUTPUT_FILE (.binaryproto), and the per-channel means logged as
``mean_value channel [c]: v``. Sums are exact (float64); the division is Caffe's float one.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from google.protobuf.message import DecodeError

from ..data.images import datum_to_image
from ..data.sources import KeyValueDB
from ..errors import DataError, Where
from ..io.atomic import atomic_write
from ..log import get_logger
from ..proto import caffe_pb2

log = get_logger("compute_image_mean")


def compute_mean(db_path: str, backend: str = "lmdb") -> np.ndarray:
    """The float32 ``(C, H, W)`` mean image of a DB of Datum records."""
    db = KeyValueDB(db_path, backend)
    where = Where(file=db_path)
    total: np.ndarray | None = None
    count = 0
    for key, value in db.items():
        name = key.decode(errors="replace")
        datum = caffe_pb2.Datum()
        try:
            datum.ParseFromString(value)
        except DecodeError:
            raise DataError(f"key '{name}': value is not a Datum record", where) from None
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


def main(argv: Sequence[str]) -> int:
    """Entry point of ``caffelike compute_image_mean``."""
    from ..cli import FlagParser
    from ..log import setup_logging

    parser = FlagParser(prog="caffelike compute_image_mean",
                        description="Compute the mean image of the images in an lmdb/leveldb.")
    parser.add_argument("input_db")
    parser.add_argument("output_file", nargs="?", default=None)
    parser.add_argument("--backend", default="lmdb", help="lmdb (default) or leveldb")
    args = parser.parse_args(list(argv))
    setup_logging()
    mean = compute_mean(args.input_db, args.backend)
    if args.output_file:
        log.info("Write to %s", args.output_file)
        write_mean(mean, args.output_file)
    log.info("Number of channels: %d", mean.shape[0])
    for c, value in enumerate(mean.reshape(mean.shape[0], -1).mean(axis=1, dtype=np.float64)):
        log.info("mean_value channel [%d]: %g", c, value)
    return 0
