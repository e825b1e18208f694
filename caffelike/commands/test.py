"""``caffelike test``: score a model over -iterations batches, as ``caffe test``."""
from __future__ import annotations

from ..errors import SolverError
from ..glog import get_logger
from ..solver import messages
from . import options

log = get_logger("solver")


def main(argv: list[str]) -> int:
    """Score a model over -iterations batches (``caffe test``)."""
    parser = options.net_parser("test", "Score a model.")
    parser.add_argument("--model", default="", help="the net prototxt")
    parser.add_argument("--weights", default="", help="trained .caffemodel(s), separated by ','")
    parser.add_argument("--iterations", type=int, default=50, help="number of batches")
    options.add_accel_flags(parser, optimize=True)
    return options.run_net_command(parser, argv, _run)


def _run(args) -> int:
    if not args.model:
        raise SolverError("need a model definition to score: give -model net.prototxt")
    if not args.weights:
        raise SolverError("need model weights to score: give -weights net.caffemodel")
    import torch

    from .. import accel
    from ..net import Net
    from ..solver.scoring import OutputSums

    gpus = options.parse_gpus(args.gpu)
    if gpus:
        log.info(messages.use_gpu(gpus[0]))
        log.info(messages.gpu_device_name(torch.cuda.get_device_name(gpus[0])))
    else:
        log.info(messages.use_cpu())
    device = options.device(gpus)
    net = Net(args.model, 1, level=args.level, stages=options.stages(args.stage), device=device)
    for name in args.weights.split(","):
        net.copy_trained_layers_from(name.strip())
    options.accelerate(net, args, device)
    log.info(messages.running_for(args.iterations))
    sums = OutputSums()
    for i in range(args.iterations):
        with accel.inference(net, args.amp or None):
            blobs = net.run()
            batch = sums.add(net, blobs, net.objective(blobs).float().item())
        for name, value in batch:
            log.info(messages.batch_output(i, name, value))
    log.info(messages.plain_loss(sums.mean_loss()))
    for name, mean, weight in sums.means():
        log.info(messages.mean_output(name, mean, weight))
    return 0
