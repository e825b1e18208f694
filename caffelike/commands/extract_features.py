"""``caffelike extract_features``: blobs of a TEST net over N mini-batches into LMDB or HDF5
(see :mod:`caffelike.features`).

Same arguments as Caffe's ``extract_features`` tool::

    caffelike extract_features WEIGHTS NET_PROTO BLOB[,BLOB...] DB[,DB...] NUM_MINI_BATCHES lmdb|hdf5 [CPU|GPU] [DEVICE_ID]

LMDB output is Caffe's: one ``Datum`` per image (``float_data``, channels/height/width from
the blob's legacy 4-D shape), keys ``%010d`` image indices, a new database per blob (it must
not exist yet). HDF5 output (caffelike's addition) is one file per blob holding a float32
dataset named after the blob, shaped ``(images, ...)``.
"""
from __future__ import annotations

import os
import sys

from ..errors import CaffelikeError, DataError
from ..features import extract
from ..glog import get_logger, setup_logging

log = get_logger("extract_features")
USAGE = ("caffelike extract_features WEIGHTS NET_PROTO BLOB[,BLOB...] DB[,DB...] NUM_MINI_BATCHES "
         "lmdb|hdf5 [CPU|GPU] [DEVICE_ID]")


def main(argv: list[str]) -> int:
    """Caffe's positional arguments (see the module docstring)."""
    if any(a in ("-h", "--help", "-help") for a in argv):
        sys.stdout.write(f"usage: {USAGE}\n\n{__doc__}\n")
        return 0
    if len(argv) < 6:
        raise CaffelikeError(f"usage: {USAGE}")
    setup_logging()
    weights, proto, blob_arg, db_arg, n_arg, db_type = argv[:6]
    mode = argv[6].upper() if len(argv) > 6 else "CPU"
    import caffelike as caffe
    if mode == "GPU":
        caffe.set_mode_gpu()
        caffe.set_device(int(argv[7]) if len(argv) > 7 else 0)
    try:
        batches = int(n_arg)
    except ValueError:
        raise CaffelikeError(f"NUM_MINI_BATCHES must be an integer, got '{n_arg}'") from None
    for path in (weights, proto):
        if not os.path.isfile(path):
            raise DataError(f"{path}: no such file")
    extract(weights, proto, blob_arg.split(","), db_arg.split(","), batches, db_type)
    log.info("Successfully extracted the features!")
    return 0
