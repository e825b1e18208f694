"""``caffelike time``: the forward and backward time of each layer, as ``caffe time``."""
from __future__ import annotations

from ..errors import SolverError
from ..glog import get_logger
from ..solver import messages
from . import options

log = get_logger("solver")


def main(argv: list[str]) -> int:
    """Benchmark the forward and backward time of each layer (``caffe time``)."""
    parser = options.net_parser("time", "Benchmark a model's execution time per layer.")
    parser.add_argument("--model", default="", help="the net prototxt")
    parser.add_argument("--iterations", type=int, default=50, help="number of iterations")
    parser.add_argument("--phase", default="", help="TRAIN (default) or TEST")
    options.add_accel_flags(parser, optimize=True)
    return options.run_net_command(parser, argv, _run)


def _run(args) -> int:
    if not args.model:
        raise SolverError("need a model definition to time: give -model net.prototxt")
    if args.phase not in ("", "TRAIN", "TEST"):
        raise SolverError(f"-phase must be \"TRAIN\" or \"TEST\", got '{args.phase}'")
    from ..net import Net
    from ..solver.timing import benchmark

    gpus = options.parse_gpus(args.gpu)
    if gpus:
        log.info(messages.use_gpu(gpus[0]))
    else:
        log.info(messages.use_cpu())
    device = options.device(gpus)
    phase = 1 if args.phase == "TEST" else 0
    net = Net(args.model, phase, level=args.level, stages=options.stages(args.stage), device=device)
    options.accelerate(net, args, device)
    benchmark(net, args.iterations, device, amp=args.amp or None)
    return 0
