"""``caffelike upgrade_net_proto_text | upgrade_net_proto_binary | upgrade_solver_proto_text``.

Caffe's three upgrade tools (tools/upgrade_*.cpp): read IN, apply the legacy upgrades,
write OUT. A file already in the current format is written unchanged, with an error-level
log line, and the command succeeds, as in Caffe. A file Caffe's upgrade reports problems
with is refused with a one-line error (exit 1) and OUT is not written.
"""
from __future__ import annotations

import argparse

from ..cli import FlagParser
from ..log import get_logger, setup_logging
from ..proto import caffe_pb2

log = get_logger("io")


def _parser(prog: str, what: str, unknown_fields: bool = True) -> FlagParser:
    parser = FlagParser(prog=f"caffelike {prog}", description=f"Upgrade a legacy {what}.",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", metavar="IN", help=f"the legacy {what}")
    parser.add_argument("output", metavar="OUT", help=f"where to write the upgraded {what}")
    if unknown_fields:
        parser.add_argument("--allow-unknown-fields", "--allow_unknown_fields",
                            dest="allow_unknown_fields", action="store_true",
                            help="skip fields of Caffe forks (one warning per field)")
    return parser


def upgrade_net_proto_text(argv: list[str]) -> int:
    """Upgrade a V0/V1 net prototxt to the current format (Caffe's upgrade_net_proto_text)."""
    from .prototxt import SourceMap, read_text_file, parse_text_proto, write_text_proto
    from .upgrade import net_needs_upgrade, upgrade_net

    args = _parser("upgrade_net_proto_text", "net prototxt").parse_args(argv)
    setup_logging(program="upgrade_net_proto_text")
    text = read_text_file(args.input, "NetParameter")
    net = parse_text_proto(text, caffe_pb2.NetParameter, args.input, args.allow_unknown_fields)
    if net_needs_upgrade(net):
        upgrade_net(net, args.input, SourceMap.from_text(text, args.input))
    else:
        log.error("File already in latest proto format: %s", args.input)
    write_text_proto(net, args.output)
    log.info("Wrote upgraded NetParameter text proto to %s", args.output)
    return 0


def upgrade_net_proto_binary(argv: list[str]) -> int:
    """Upgrade a V0/V1 binary net (.caffemodel) (Caffe's upgrade_net_proto_binary)."""
    from .caffemodel import read_binary_net, upgrade_binary_net, write_caffemodel
    from .upgrade import net_needs_upgrade

    args = _parser("upgrade_net_proto_binary", "binary net (.caffemodel)",
                   unknown_fields=False).parse_args(argv)
    setup_logging(program="upgrade_net_proto_binary")
    net = read_binary_net(args.input)
    if net_needs_upgrade(net):
        upgrade_binary_net(net, args.input)
    else:
        log.error("File already in latest proto format: %s", args.input)
    write_caffemodel(net, args.output)
    log.info("Wrote upgraded NetParameter binary proto to %s", args.output)
    return 0


def upgrade_solver_proto_text(argv: list[str]) -> int:
    """Upgrade a solver prototxt (``solver_type`` enum -> ``type``) (Caffe's tool of that name)."""
    from .prototxt import read_text_file, parse_text_proto, write_text_proto
    from .upgrade import solver_needs_upgrade, upgrade_solver

    args = _parser("upgrade_solver_proto_text", "solver prototxt").parse_args(argv)
    setup_logging(program="upgrade_solver_proto_text")
    text = read_text_file(args.input, "SolverParameter")
    solver = parse_text_proto(text, caffe_pb2.SolverParameter, args.input,
                              args.allow_unknown_fields)
    if solver_needs_upgrade(solver):
        upgrade_solver(solver, args.input)
    else:
        log.error("File already in latest proto format: %s", args.input)
    write_text_proto(solver, args.output)
    log.info("Wrote upgraded SolverParameter text proto to %s", args.output)
    return 0
