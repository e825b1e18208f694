"""``caffelike draw_net NET.prototxt OUT.(png|svg|pdf|dot) [--rankdir LR] [--phase TRAIN|TEST|ALL]``
(see :mod:`caffelike.draw`)."""
from __future__ import annotations

import os

from ..cli import FlagParser
from ..draw import draw
from ..errors import DataError
from ..glog import setup_logging


def main(argv: list[str]) -> int:
    """``caffelike draw_net NET OUT [--rankdir LR] [--phase ALL] [--display_lrm]``."""
    p = FlagParser(prog="caffelike draw_net", description="Draw a net as a graph (Graphviz).")
    p.add_argument("input_net_proto_file")
    p.add_argument("output_image_file")
    p.add_argument("--rankdir", default="LR", choices=["LR", "TB", "BT", "RL"])
    p.add_argument("--phase", default="ALL", choices=["TRAIN", "TEST", "ALL"])
    p.add_argument("--display_lrm", action="store_true", help="show the lr_mult of each layer")
    args = p.parse_args(argv)
    setup_logging()
    if not os.path.isfile(args.input_net_proto_file):
        raise DataError(f"{args.input_net_proto_file}: no such file")
    draw(args.input_net_proto_file, args.output_image_file, args.rankdir, args.phase, args.display_lrm)
    return 0
