"""``caffelike upgrade_net_proto_binary IN OUT``: a V0/V1 binary net (.caffemodel) in the
current format.

Caffe's tool of that name; see :func:`.options.upgrade_parser` for what the three upgrade
commands share.
"""
from __future__ import annotations

from ..io.caffemodel import read_binary_net, upgrade_binary_net, write_caffemodel
from ..io.upgrade import net_needs_upgrade
from ..glog import setup_logging
from .options import upgrade_parser, write_upgraded


def main(argv: list[str]) -> int:
    """Upgrade a V0/V1 binary net (.caffemodel) (Caffe's upgrade_net_proto_binary)."""
    args = upgrade_parser("upgrade_net_proto_binary", "binary net (.caffemodel)",
                          unknown_fields=False).parse_args(argv)
    setup_logging(program="upgrade_net_proto_binary")
    return write_upgraded(read_binary_net(args.input, tolerant=False), args, net_needs_upgrade,
                          lambda message: upgrade_binary_net(message, args.input),
                          write_caffemodel, "NetParameter binary proto")
