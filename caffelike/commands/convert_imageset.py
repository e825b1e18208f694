"""``caffelike convert_imageset [FLAGS] ROOTFOLDER/ LISTFILE DB_NAME``: Caffe's tool
(see :mod:`caffelike.data.imageset`)."""
from __future__ import annotations

from typing import Sequence

from ..cli import FlagParser
from ..data.dbwrite import split_bool_flags
from ..data.imageset import convert
from ..glog import setup_logging

BOOL_FLAGS = ("gray", "shuffle", "check_size", "encoded")


def main(argv: Sequence[str]) -> int:
    """Entry point of ``caffelike convert_imageset``."""
    parser = FlagParser(prog="caffelike convert_imageset",
                        description="Convert a set of images to the lmdb/leveldb format used "
                                    "as input for Caffe: ROOTFOLDER/ LISTFILE DB_NAME")
    parser.add_argument("root_folder")
    parser.add_argument("list_file")
    parser.add_argument("db_name")
    parser.add_argument("--gray", action="store_true", help="treat images as grayscale")
    parser.add_argument("--shuffle", action="store_true", help="shuffle the list order")
    parser.add_argument("--backend", default="lmdb", help="lmdb (default) or leveldb")
    parser.add_argument("--resize_width", type=int, default=0)
    parser.add_argument("--resize_height", type=int, default=0)
    parser.add_argument("--check_size", action="store_true",
                        help="check that all the datums have the same size")
    parser.add_argument("--encoded", action="store_true", help="store encoded images")
    parser.add_argument("--encode_type", default="", help="encoding: png, jpg, ...")
    parser.add_argument("--random_seed", type=int, default=None,
                        help="seed of -shuffle (caffelike extension)")
    args = parser.parse_args(split_bool_flags(argv, BOOL_FLAGS))
    setup_logging()
    convert(args.root_folder, args.list_file, args.db_name,
            resize_height=args.resize_height, resize_width=args.resize_width, gray=args.gray,
            shuffle=args.shuffle, encoded=args.encoded or bool(args.encode_type),
            encode_type=args.encode_type, backend=args.backend, check_size=args.check_size,
            seed=args.random_seed)
    return 0
