"""``caffelike train | test | time | device_query``: Caffe's tools/caffe.cpp commands.

Same flags as ``caffe`` (gflags style, see :class:`caffelike.cli.FlagParser`) and the same
log lines. ``-gpu N`` that cannot be served is a DeviceError; ``solver_mode: GPU`` in a solver
file on a machine without CUDA falls back to the CPU with one warning, as the book's solvers
all say GPU. ``-gpu 0,1`` / ``-gpu all`` train data-parallel (see :mod:`.distributed`).
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

from ..cli import FlagParser
from ..errors import DeviceError, SolverError
from ..log import get_logger, setup_logging
from . import messages

log = get_logger("solver")

GPU_MODE = 1  # SolverParameter.GPU


def _parser(prog: str, description: str) -> FlagParser:
    parser = FlagParser(prog=f"caffelike {prog}", description=description)
    parser.add_argument("--gpu", default="", help="GPU ids separated by ',' or 'all' (default: CPU)")
    parser.add_argument("--level", type=int, default=0, help="network level (NetState)")
    parser.add_argument("--stage", default="", help="network stages separated by ','")
    parser.add_argument("--log_dir", default=None, help="also write glog-named log files here "
                        "(default $GLOG_log_dir)")
    parser.add_argument("-no-python-layers", "--no-python-layers", dest="no_python_layers",
                        action="store_true", help="refuse nets with Python layers (untrusted files)")
    parser.add_argument("-strict-paths", "--strict-paths", dest="strict_paths", action="store_true",
                        help="refuse list/window file entries that resolve outside root_folder")
    parser.add_argument("-allow-unknown-fields", "--allow-unknown-fields", "--allow_unknown_fields",
                        dest="allow_unknown_fields", action="store_true",
                        help="skip (with a warning) prototxt fields of Caffe forks")
    return parser


def _accel_flags(parser: FlagParser, optimize: bool = False) -> None:
    """The speed switches beyond Caffe: -amp, -compile (and -optimize for deploy commands)."""
    parser.add_argument("--amp", default="", help="mixed precision: bf16 or fp16 (fp16 with loss "
                        "scaling; meant for CUDA)")
    parser.add_argument("--compile", action="store_true", help="run the nets through torch.compile")
    parser.add_argument("--channels_last", "--channels-last", dest="channels_last", action="store_true",
                        help="NHWC convolutions (faster for some nets on the CPU, see bench/RESULTS.md)")
    if optimize:
        parser.add_argument("--optimize", action="store_true", help="fold BatchNorm/Scale into "
                            "convolutions and fuse ReLU (deploy use; intermediate blobs change)")


@contextlib.contextmanager
def _reading_rules(args) -> Iterator[None]:
    """The context in which a command reads and builds its nets (Python layers, strict paths,
    unknown fields), so that the solver file and every net it names follow the same flags."""
    from ..data.paths import strict_paths
    from ..io.prototxt import unknown_fields_allowed
    from ..layers.python import python_layers

    with python_layers(not args.no_python_layers), strict_paths(args.strict_paths), \
            unknown_fields_allowed(args.allow_unknown_fields):
        yield


def _accelerate(net, args, device) -> None:
    """Apply -optimize / -compile to a net built by test or time."""
    from .. import accel
    from ..net.fold import optimize_net

    accel.amp_dtype(args.amp)  # an unknown name is a user error before any work
    if getattr(args, "optimize", False):
        optimize_net(net, channels_last=device.type == "cpu" or bool(args.amp) or args.channels_last)
    elif args.channels_last:
        accel.use_channels_last(net)
    if args.compile:
        accel.compile_net(net, install=True)


def _stages(flag: str) -> list[str]:
    """Caffe splits -stage on ',' (an empty flag gives one empty stage, harmlessly)."""
    return flag.split(",")


def parse_gpus(flag: str) -> list[int]:
    """``-gpu`` as a list of CUDA ids; a DeviceError for ids that cannot be served."""
    import torch

    from ..mode import cuda_device

    flag = flag.strip()
    if not flag:
        return []
    if flag == "all":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceError("-gpu all: no CUDA device is available (this torch build or machine "
                              "has none); drop -gpu to train on the CPU")
        return list(range(count))
    try:
        ids = [int(x) for x in flag.split(",")]
    except ValueError:
        raise DeviceError(f"-gpu '{flag}': expected GPU ids separated by ',' or 'all'") from None
    for i in ids:
        cuda_device(i)
    return ids


def solver_gpus(flag: str, param) -> list[int]:
    """GPUs for ``train``: the -gpu flag, else the solver's solver_mode/device_id (CPU fallback)."""
    import torch

    if flag or not (param.HasField("solver_mode") and param.solver_mode == GPU_MODE):
        return parse_gpus(flag)
    device_id = param.device_id if param.HasField("device_id") else 0
    if not torch.cuda.is_available():
        log.warning("solver_mode is GPU (device_id %d) but no CUDA device is available; "
                    "training on the CPU", device_id)
        return []
    return parse_gpus(str(device_id))


def _announce(gpus: Sequence[int]) -> None:
    import torch

    if not gpus:
        log.info(messages.use_cpu())
        return
    log.info(messages.using_gpus(gpus))
    for i in gpus:
        log.info(messages.gpu_name(i, torch.cuda.get_device_name(i)))


def _device(gpus: Sequence[int]):
    import torch

    return torch.device("cuda", gpus[0]) if gpus else torch.device("cpu")


# ---------------------------------------------------------------------------- train
def train(argv: list[str]) -> int:
    """Train or fine-tune a model (``caffe train``)."""
    parser = _parser("train", "Train or fine-tune a model.")
    parser.add_argument("--solver", default="", help="the solver prototxt")
    parser.add_argument("--weights", default="", help="pretrained .caffemodel(s), separated by ','")
    parser.add_argument("--snapshot", default="", help="a .solverstate to resume from")
    parser.add_argument("--sigint_effect", default="stop", help="stop, snapshot or none")
    parser.add_argument("--sighup_effect", default="snapshot", help="stop, snapshot or none")
    parser.add_argument("-no-nan-guard", "--no-nan-guard", dest="no_nan_guard", action="store_true",
                        help="carry on through NaN/Inf losses as Caffe does (default: stop and "
                        "name the layer)")
    _accel_flags(parser)
    args = parser.parse_args(argv)
    with _reading_rules(args):
        return _train(args, argv)


def _train(args, argv: list[str]) -> int:
    from . import distributed
    from .progress import Progress, wanted as progress_wanted
    from .signals import SignalHandler, check_effect

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
    from .loop import get_solver, read_solver_file

    param = read_solver_file(args.solver)
    param.train_state.level = args.level
    param.train_state.stage.extend(_stages(args.stage))
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
    device = _device(gpus)
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


# ---------------------------------------------------------------------------- test
def test(argv: list[str]) -> int:
    """Score a model over -iterations batches (``caffe test``)."""
    parser = _parser("test", "Score a model.")
    parser.add_argument("--model", default="", help="the net prototxt")
    parser.add_argument("--weights", default="", help="trained .caffemodel(s), separated by ','")
    parser.add_argument("--iterations", type=int, default=50, help="number of batches")
    _accel_flags(parser, optimize=True)
    args = parser.parse_args(argv)
    with _reading_rules(args):
        return _test(args)


def _test(args) -> int:
    setup_logging(args.log_dir)
    if not args.model:
        raise SolverError("need a model definition to score: give -model net.prototxt")
    if not args.weights:
        raise SolverError("need model weights to score: give -weights net.caffemodel")
    import torch

    from .. import accel
    from ..net import Net
    from .scoring import OutputSums

    gpus = parse_gpus(args.gpu)
    if gpus:
        log.info("Use GPU with device ID %d", gpus[0])
        log.info("GPU device name: %s", torch.cuda.get_device_name(gpus[0]))
    else:
        log.info(messages.use_cpu())
    net = Net(args.model, 1, level=args.level, stages=_stages(args.stage), device=_device(gpus))
    for name in args.weights.split(","):
        net.copy_trained_layers_from(name.strip())
    _accelerate(net, args, _device(gpus))
    log.info("Running for %d iterations.", args.iterations)
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


# ---------------------------------------------------------------------------- time
def time(argv: list[str]) -> int:
    """Benchmark the forward and backward time of each layer (``caffe time``)."""
    parser = _parser("time", "Benchmark a model's execution time per layer.")
    parser.add_argument("--model", default="", help="the net prototxt")
    parser.add_argument("--iterations", type=int, default=50, help="number of iterations")
    parser.add_argument("--phase", default="", help="TRAIN (default) or TEST")
    _accel_flags(parser, optimize=True)
    args = parser.parse_args(argv)
    with _reading_rules(args):
        return _time(args)


def _time(args) -> int:
    setup_logging(args.log_dir)
    if not args.model:
        raise SolverError("need a model definition to time: give -model net.prototxt")
    if args.phase not in ("", "TRAIN", "TEST"):
        raise SolverError(f"-phase must be \"TRAIN\" or \"TEST\", got '{args.phase}'")
    from ..net import Net
    from .timing import benchmark

    gpus = parse_gpus(args.gpu)
    if gpus:
        log.info("Use GPU with device ID %d", gpus[0])
    else:
        log.info(messages.use_cpu())
    phase = 1 if args.phase == "TEST" else 0
    net = Net(args.model, phase, level=args.level, stages=_stages(args.stage), device=_device(gpus))
    _accelerate(net, args, _device(gpus))
    benchmark(net, args.iterations, _device(gpus), amp=args.amp or None)
    return 0


# ---------------------------------------------------------------------------- device_query
def device_query(argv: list[str]) -> int:
    """Show diagnostic information for the GPUs in -gpu (``caffe device_query``)."""
    parser = _parser("device_query", "Show diagnostic information for a GPU.")
    args = parser.parse_args(argv)
    setup_logging(args.log_dir)
    import torch

    log.info("Querying GPUs %s", args.gpu)
    for i in parse_gpus(args.gpu):
        p = torch.cuda.get_device_properties(i)
        log.info("Device id:                     %d", i)
        log.info("Major revision number:         %d", p.major)
        log.info("Minor revision number:         %d", p.minor)
        log.info("Name:                          %s", p.name)
        log.info("Total global memory:           %d", p.total_memory)
        log.info("Number of multiprocessors:     %d", p.multi_processor_count)
        log.info("Kernel execution timeout:      %s", "No")
    return 0
