"""``caffelike upgrade_solver_proto_text IN OUT``: a solver prototxt's ``solver_type`` enum as
the ``type`` string.

Caffe's tool of that name; see :func:`.options.upgrade_parser` for what the three upgrade
commands share.
"""
from __future__ import annotations

from ..io.prototxt import parse_text_proto, read_text_file, write_text_proto
from ..io.upgrade import solver_needs_upgrade, upgrade_solver
from ..glog import setup_logging
from ..proto import caffe_pb2
from .options import upgrade_parser, write_upgraded


def main(argv: list[str]) -> int:
    """Upgrade a solver prototxt (``solver_type`` enum -> ``type``) (Caffe's tool of that name)."""
    args = upgrade_parser("upgrade_solver_proto_text", "solver prototxt").parse_args(argv)
    setup_logging(program="upgrade_solver_proto_text")
    text = read_text_file(args.input, "SolverParameter")
    solver = parse_text_proto(text, caffe_pb2.SolverParameter, args.input, args.allow_unknown_fields)
    return write_upgraded(solver, args, solver_needs_upgrade,
                          lambda message: upgrade_solver(message, args.input),
                          write_text_proto, "SolverParameter text proto")
