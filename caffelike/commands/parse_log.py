"""``caffelike parse_log LOG OUTDIR``: a training log -> ``<log>.train`` / ``<log>.test`` CSV
files with the columns of Caffe's ``tools/extra/parse_log.py`` (see :mod:`caffelike.logs.parse`)."""
from __future__ import annotations

import os

from ..cli import FlagParser
from ..errors import DataError
from ..glog import setup_logging
from ..logs.parse import parse_log, save_tables


def main(argv: list[str]) -> int:
    """``caffelike parse_log LOG OUTDIR [--delimiter ,] [--verbose]``."""
    parser = FlagParser(prog="caffelike parse_log",
                        description="Parse a Caffe training log into <log>.train and <log>.test CSV files.")
    parser.add_argument("logfile_path", help="the training log")
    parser.add_argument("output_dir", help="folder for the CSV files")
    parser.add_argument("--delimiter", default=",", help="column delimiter (default ',')")
    parser.add_argument("--verbose", action="store_true", help="log the names of the files written")
    args = parser.parse_args(argv)
    if len(args.delimiter) != 1:
        raise DataError(f"caffelike parse_log: --delimiter must be one character, got {args.delimiter!r}")
    if not os.path.isfile(args.logfile_path):
        raise DataError(f"{args.logfile_path}: no such log file")
    setup_logging()
    train, test = parse_log(args.logfile_path)
    save_tables(args.logfile_path, args.output_dir, train, test, args.delimiter, args.verbose)
    return 0
