"""``caffelike compute_image_mean [-backend lmdb] INPUT_DB [OUTPUT_FILE]``: Caffe's tool
(see :mod:`caffelike.data.image_mean`)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..cli import FlagParser
from ..data.image_mean import compute_mean, write_mean
from ..glog import get_logger, setup_logging

log = get_logger("compute_image_mean")


def main(argv: Sequence[str]) -> int:
    """Entry point of ``caffelike compute_image_mean``."""
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
