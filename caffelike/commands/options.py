"""What several commands share: ``caffe``'s own flags (gflags style, see
:class:`caffelike.cli.FlagParser`) and reading rules for train/test/time/device_query, the
-gpu flag's devices, and the IN OUT arguments of the upgrade commands."""
from __future__ import annotations

import argparse
import contextlib
from typing import Callable, Iterator, Sequence

from google.protobuf.message import Message

from ..cli import FlagParser
from ..errors import DeviceError
from ..glog import get_logger


def net_parser(prog: str, description: str) -> FlagParser:
    """A parser with the flags every ``caffe`` command has (-gpu, -level, -stage, -log_dir)
    and caffelike's rules for reading untrusted or forked files."""
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


def add_accel_flags(parser: FlagParser, optimize: bool = False) -> None:
    """The speed switches beyond Caffe: -amp, -compile, -channels_last (and -optimize for the
    deploy commands)."""
    parser.add_argument("--amp", default="", help="mixed precision: bf16 or fp16 (fp16 with loss "
                        "scaling; meant for CUDA)")
    parser.add_argument("--compile", action="store_true", help="run the nets through torch.compile")
    parser.add_argument("--channels_last", "--channels-last", dest="channels_last", action="store_true",
                        help="NHWC convolutions (faster for some nets on the CPU, see bench/RESULTS.md)")
    if optimize:
        parser.add_argument("--optimize", action="store_true", help="fold BatchNorm/Scale into "
                            "convolutions and fuse ReLU (deploy use; intermediate blobs change)")


@contextlib.contextmanager
def reading_rules(args) -> Iterator[None]:
    """The context in which a command reads and builds its nets (Python layers, strict paths,
    unknown fields), so that the solver file and every net it names follow the same flags."""
    from ..data.paths import strict_paths
    from ..io.prototxt import unknown_fields_allowed
    from ..layers.python import python_layers

    with python_layers(not args.no_python_layers), strict_paths(args.strict_paths), \
            unknown_fields_allowed(args.allow_unknown_fields):
        yield


def run_net_command(parser: FlagParser, argv: Sequence[str], run: Callable[[argparse.Namespace], int]) -> int:
    """Parse ``argv`` and call ``run(args)`` with logging set up, under the reading rules."""
    from ..glog import setup_logging

    args = parser.parse_args(argv)
    with reading_rules(args):
        setup_logging(args.log_dir)
        return run(args)


def accelerate(net, args, device) -> None:
    """Apply -optimize / -channels_last / -compile to a net built by test or time."""
    from .. import accel
    from ..net.fold import optimize_net

    accel.amp_dtype(args.amp)  # an unknown name is a user error before any work
    if getattr(args, "optimize", False):
        optimize_net(net, channels_last=device.type == "cpu" or bool(args.amp) or args.channels_last)
    elif args.channels_last:
        accel.use_channels_last(net)
    if args.compile:
        accel.compile_net(net, install=True)


def stages(flag: str) -> list[str]:
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


def device(gpus: Sequence[int]):
    """The torch device of the first GPU, else the CPU."""
    import torch

    return torch.device("cuda", gpus[0]) if gpus else torch.device("cpu")


def upgrade_parser(prog: str, what: str, unknown_fields: bool = True) -> FlagParser:
    """The arguments of ``caffelike upgrade_* IN OUT``, Caffe's tools/upgrade_*.cpp.

    Each reads IN, applies the legacy upgrades and writes OUT. A file already in the current
    format is written unchanged, with an error-level log line, and the command succeeds, as
    in Caffe. A file Caffe's upgrade reports problems with is refused with a one-line error
    (exit 1) and OUT is not written.
    """
    parser = FlagParser(prog=f"caffelike {prog}", description=f"Upgrade a legacy {what}.",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", metavar="IN", help=f"the legacy {what}")
    parser.add_argument("output", metavar="OUT", help=f"where to write the upgraded {what}")
    if unknown_fields:
        parser.add_argument("--allow-unknown-fields", "--allow_unknown_fields",
                            dest="allow_unknown_fields", action="store_true",
                            help="skip fields of Caffe forks (one warning per field)")
    return parser


def write_upgraded(message: Message, args: argparse.Namespace, needs_upgrade: Callable[[Message], bool],
                   upgrade: Callable[[Message], object], write: Callable[[Message, str], None],
                   kind: str) -> int:
    """The upgrade commands' common end: upgrade ``message`` (read from IN) in place if it
    needs it, write it to OUT, and log as Caffe does; ``kind`` names the format written."""
    log = get_logger("io")
    if needs_upgrade(message):
        upgrade(message)
    else:
        log.error("File already in latest proto format: %s", args.input)
    write(message, args.output)
    log.info("Wrote upgraded %s to %s", kind, args.output)
    return 0
