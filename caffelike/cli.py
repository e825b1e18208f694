"""``caffelike <command> [flags]``: the command table, Caffe's flag syntax and the dispatch.

Command ``name`` is ``main(argv: list[str]) -> int`` in ``caffelike.commands.<name>``,
imported only when the command runs (so ``caffelike parse_log`` does not pay for importing
torch). Flags follow Caffe's gflags style: ``-solver x``, ``--solver=x`` and ``--solver x``
are the same.
"""
from __future__ import annotations

import argparse
import importlib
import re
import sys
from typing import Callable, Sequence

from .errors import CaffelikeError

# command -> one-line summary; the code is in caffelike/commands/<command>.py
COMMANDS: dict[str, str] = {
    "train": "train or fine-tune a model (-solver, -weights, -snapshot, -gpu)",
    "test": "score a model (-model, -weights, -iterations)",
    "time": "benchmark a model's layers (-model, -iterations)",
    "device_query": "show diagnostic information for a GPU (-gpu)",
    "upgrade_net_proto_text": "upgrade a V0/V1 net prototxt: IN OUT",
    "upgrade_net_proto_binary": "upgrade a V0/V1 binary net (.caffemodel): IN OUT",
    "upgrade_solver_proto_text": "upgrade a solver prototxt (solver_type enum -> type): IN OUT",
    "parse_log": "parse a training log into <log>.train and <log>.test CSV files",
    "plot": "plot loss/accuracy curves of one or more logs to PNG/SVG",
    "convert_imageset": "convert an image list into an LMDB of Datum records",
    "compute_image_mean": "compute the mean image of an LMDB into a .binaryproto",
    "classify": "classify images with a deploy net and weights",
    "export": "export a deploy net and weights to ONNX, plain PyTorch or torch.export (pt2)",
    "extract_features": "extract blobs of a net into LMDB or HDF5",
    "draw_net": "draw a net as a graph (needs graphviz)",
}


def load(name: str) -> Callable[[list[str]], int]:
    """The entry function of command ``name`` (a key of COMMANDS)."""
    return importlib.import_module(f"{__package__}.commands.{name}").main


_SINGLE_DASH_FLAG = re.compile(r"^-([A-Za-z_][A-Za-z0-9_]+)(=.*)?$")


def normalize_flags(argv: Sequence[str]) -> list[str]:
    """Turn gflags' ``-name value`` / ``-name=value`` into argparse's ``--name``."""
    return ["-" + a if _SINGLE_DASH_FLAG.match(a) else a for a in argv]


class FlagParser(argparse.ArgumentParser):
    """argparse with Caffe's single-dash long flags and errors raised, not printed."""

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        return super().parse_args(normalize_flags(sys.argv[1:] if args is None else args), namespace)

    def error(self, message: str):  # type: ignore[override]
        raise CaffelikeError(f"{self.prog}: {message} (see '{self.prog} --help')")


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: caffelike <command> [flags]", "",
             "Caffe, on PyTorch. Commands (caffelike <command> --help for their flags):"]
    lines += [f"  {name.ljust(width)}  {summary}" for name, summary in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``caffelike`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "-help", "--help", "help"):
        print(_usage())
        return 0 if args else 1
    name, rest = args[0], args[1:]
    if name in ("-version", "--version"):
        from . import __version__
        print(f"caffelike {__version__}")
        return 0
    if name not in COMMANDS:
        print(f"caffelike: error: unknown command '{name}'\n\n{_usage()}", file=sys.stderr)
        return 1
    try:
        return int(load(name)(rest) or 0)
    except CaffelikeError as exc:
        print(f"caffelike {name}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"caffelike {name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
