"""``caffelike device_query -gpu N``: diagnostic information for GPUs, as ``caffe device_query``."""
from __future__ import annotations

from ..glog import get_logger, setup_logging
from . import options

log = get_logger("solver")


def main(argv: list[str]) -> int:
    """Show diagnostic information for the GPUs in -gpu (``caffe device_query``)."""
    parser = options.net_parser("device_query", "Show diagnostic information for a GPU.")
    args = parser.parse_args(argv)
    setup_logging(args.log_dir)
    import torch

    log.info("Querying GPUs %s", args.gpu)
    for i in options.parse_gpus(args.gpu):
        p = torch.cuda.get_device_properties(i)
        log.info("Device id:                     %d", i)
        log.info("Major revision number:         %d", p.major)
        log.info("Minor revision number:         %d", p.minor)
        log.info("Name:                          %s", p.name)
        log.info("Total global memory:           %d", p.total_memory)
        log.info("Number of multiprocessors:     %d", p.multi_processor_count)
        log.info("Kernel execution timeout:      %s", "No")
    return 0
