"""``caffelike upgrade_net_proto_text IN OUT``: a V0/V1 net prototxt in the current format.

Caffe's tool of that name; see :func:`.options.upgrade_parser` for what the three upgrade
commands share.
"""
from __future__ import annotations

from ..io.prototxt import SourceMap, parse_text_proto, read_text_file, write_text_proto
from ..io.upgrade import net_needs_upgrade, upgrade_net
from ..glog import setup_logging
from ..proto import caffe_pb2
from .options import upgrade_parser, write_upgraded


def main(argv: list[str]) -> int:
    """Upgrade a V0/V1 net prototxt to the current format (Caffe's upgrade_net_proto_text)."""
    args = upgrade_parser("upgrade_net_proto_text", "net prototxt").parse_args(argv)
    setup_logging(program="upgrade_net_proto_text")
    text = read_text_file(args.input, "NetParameter")
    net = parse_text_proto(text, caffe_pb2.NetParameter, args.input, args.allow_unknown_fields)
    source_map = SourceMap.from_text(text, args.input)
    return write_upgraded(net, args, net_needs_upgrade,
                          lambda message: upgrade_net(message, args.input, source_map),
                          write_text_proto, "NetParameter text proto")
