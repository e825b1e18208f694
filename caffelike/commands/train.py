"""``caffelike train``: train or fine-tune a model, as ``caffe train`` (tools/caffe.cpp).

Same flags and log lines as Caffe. ``-gpu N`` that cannot be served is a DeviceError;
``solver_mode: GPU`` in a solver file on a machine without CUDA falls back to the CPU with one
warning, as the book's solvers all say GPU. ``-gpu 0,1`` / ``-gpu all`` train data-parallel
(see :mod:`caffelike.solver.distributed`). ``-tensorboard DIR`` also writes the log's lr, train
and test values as TensorBoard scalars (see :mod:`caffelike.solver.tensorboard`).
"""
from __future__ import annotations

from typing import Sequence

from ..errors import SolverError
from ..glog import get_logger, setup_logging
from ..solver import messages
from . import options

log = get_logger("solver")

GPU_MODE = 1  # SolverParameter.GPU


def solver_gpus(flag: str, param) -> list[int]:
    """GPUs for ``train``: the -gpu flag, else the solver's solver_mode/device_id (CPU fallback)."""
    import torch

    if flag or not (param.HasField("solver_mode") and param.solver_mode == GPU_MODE):
        return options.parse_gpus(flag)
    device_id = param.device_id if param.HasField("device_id") else 0
    if not torch.cuda.is_available():
        log.warning("solver_mode is GPU (device_id %d) but no CUDA device is available; "
                    "training on the CPU", device_id)
        return []
    return options.parse_gpus(str(device_id))


def _announce(gpus: Sequence[int]) -> None:
    import torch

    if not gpus:
        log.info(messages.use_cpu())
        return
    log.info(messages.using_gpus(gpus))
    for i in gpus:
        log.info(messages.gpu_name(i, torch.cuda.get_device_name(i)))


def main(argv: list[str]) -> int:
    """Train or fine-tune a model (``caffe train``)."""
    parser = options.net_parser("train", "Train or fine-tune a model.")
    parser.add_argument("--solver", default="", help="the solver prototxt")
    parser.add_argument("--weights", default="", help="pretrained .caffemodel(s), separated by ','")
    parser.add_argument("--snapshot", default="", help="a .solverstate to resume from")
    parser.add_argument("--sigint_effect", default="stop", help="stop, snapshot or none")
    parser.add_argument("--sighup_effect", default="snapshot", help="stop, snapshot or none")
    parser.add_argument("-no-nan-guard", "--no-nan-guard", dest="no_nan_guard", action="store_true",
                        help="carry on through NaN/Inf losses as Caffe does (default: stop and "
                        "name the layer)")
    parser.add_argument("--tensorboard", default="", metavar="DIR",
                        help="also write the log's lr, train and test values to DIR as TensorBoard "
                        'scalars (pip install "caffelike[tensorboard]")')
    options.add_accel_flags(parser)
    args = parser.parse_args(argv)
    with options.reading_rules(args):
        return _run(args, argv)


def _run(args, argv: list[str]) -> int:
    from ..solver import distributed
    from ..solver.progress import Progress, wanted as progress_wanted
    from ..solver.signals import SignalHandler, check_effect

    rank = distributed.from_environment()
    setup_logging(args.log_dir)
    if rank is not None and rank.rank > 0:
        import logging
        get_logger().setLevel(max(get_logger().level, logging.WARNING))
    if not args.solver:
        raise SolverError("need a solver definition to train: give -solver solver.prototxt")
    if args.snapshot and args.weights:
        raise SolverError("give a snapshot to resume training or weights to fine-tune, but not "
                          "both (-snapshot and -weights)")
    check_effect("sigint_effect", args.sigint_effect)
    check_effect("sighup_effect", args.sighup_effect)
    if args.tensorboard:
        from ..solver.tensorboard import summary_writer_class
        summary_writer_class()  # the missing package is a user error before any work
    from ..solver.loop import get_solver, read_solver_file

    param = read_solver_file(args.solver)
    param.train_state.level = args.level
    param.train_state.stage.extend(options.stages(args.stage))
    gpus = solver_gpus(args.gpu, param)
    if rank is None and len(gpus) > 1:
        _announce(gpus)
        return distributed.launch(argv, [str(g) for g in gpus])
    if rank is not None and (len(gpus) > 1 or (gpus and not args.gpu)):
        # under torchrun: one GPU per process, picked by LOCAL_RANK
        gpus = [gpus[rank.local_rank % len(gpus)]] if len(gpus) > 1 else [rank.local_rank]
    _announce(gpus)
    if gpus:
        param.device_id = gpus[0]
    device = options.device(gpus)
    if args.snapshot:
        param.ClearField("weights")
    elif args.weights:
        param.ClearField("weights")
        param.weights.append(args.weights)
    if rank is not None:
        distributed.init_group(rank, device)
    try:
        with SignalHandler(args.sigint_effect, args.sighup_effect) as handler:
            solver = get_solver(param, device=device, action=handler.action, solver_file=args.solver,
                                nan_guard=not args.no_nan_guard, amp=args.amp or None,
                                compile=args.compile, channels_last=args.channels_last or None,
                                tensorboard=args.tensorboard or None,
                                rank=rank.rank if rank else 0,
                                world_size=rank.world_size if rank else 1)
            if rank is not None:
                solver.add_callback(distributed.GradientAverager(solver))
            if args.snapshot:
                log.info(messages.resuming_from(args.snapshot))
                solver.restore(args.snapshot)
            bar = Progress(solver) if (rank is None or rank.rank == 0) and progress_wanted() else None
            if bar is not None:
                solver.add_callback(bar)
            log.info(messages.starting())
            try:
                solver.solve()
            finally:
                if bar is not None:
                    bar.close()
            log.info(messages.done())
        if rank is not None:
            distributed.shutdown()  # the other ranks wait for rank 0's last snapshot and test
    except BaseException:
        if rank is not None:
            distributed.shutdown(wait=False)
        raise
    return 0
