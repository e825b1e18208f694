"""``caffelike <command> [flags]``: the command table and Caffe's flag syntax.

Each command is a function ``main(argv: list[str]) -> int`` in its own module, imported only
when the command runs (so ``caffelike parse_log`` does not pay for importing torch). Flags
follow Caffe's gflags style: ``-solver x``, ``--solver=x`` and ``--solver x`` are the same.
"""
from __future__ import annotations

import argparse
import importlib
import re
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

from .errors import CaffelikeError


@dataclass(frozen=True)
class Command:
    """One CLI command: where its entry function lives and a one-line summary."""

    target: str  # "module:function"
    summary: str

    def load(self) -> Callable[[list[str]], int]:
        module_name, func = self.target.split(":")
        return getattr(importlib.import_module(module_name), func)


COMMANDS: dict[str, Command] = {
    "train": Command("caffelike.solver.cli:train", "train or fine-tune a model (-solver, -weights, -snapshot, -gpu)"),
    "test": Command("caffelike.solver.cli:test", "score a model (-model, -weights, -iterations)"),
    "time": Command("caffelike.solver.cli:time", "benchmark a model's layers (-model, -iterations)"),
    "device_query": Command("caffelike.solver.cli:device_query", "show diagnostic information for a GPU (-gpu)"),
    "upgrade_net_proto_text": Command("caffelike.io.upgrade_cli:upgrade_net_proto_text", "upgrade a V0/V1 net prototxt: IN OUT"),
    "upgrade_net_proto_binary": Command("caffelike.io.upgrade_cli:upgrade_net_proto_binary", "upgrade a V0/V1 binary net (.caffemodel): IN OUT"),
    "upgrade_solver_proto_text": Command("caffelike.io.upgrade_cli:upgrade_solver_proto_text", "upgrade a solver prototxt (solver_type enum -> type): IN OUT"),
    "parse_log": Command("caffelike.tools.parse_log:main", "parse a training log into <log>.train and <log>.test CSV files"),
    "plot": Command("caffelike.tools.plot:main", "plot loss/accuracy curves of one or more logs to PNG/SVG"),
    "convert_imageset": Command("caffelike.tools.convert_imageset:main", "convert an image list into an LMDB of Datum records"),
    "compute_image_mean": Command("caffelike.tools.compute_image_mean:main", "compute the mean image of an LMDB into a .binaryproto"),
    "classify": Command("caffelike.tools.classify:main", "classify images with a deploy net and weights"),
    "export": Command("caffelike.tools.export_onnx:main", "export a deploy net and weights to ONNX"),
    "extract_features": Command("caffelike.tools.extract_features:main", "extract blobs of a net into LMDB or HDF5"),
    "draw_net": Command("caffelike.tools.draw_net:main", "draw a net as a graph (needs graphviz)"),
}

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
    lines += [f"  {name.ljust(width)}  {cmd.summary}" for name, cmd in COMMANDS.items()]
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
    command = COMMANDS.get(name)
    if command is None:
        print(f"caffelike: error: unknown command '{name}'\n\n{_usage()}", file=sys.stderr)
        return 1
    try:
        func = command.load()
    except (ModuleNotFoundError, AttributeError) as exc:
        if "caffelike" not in str(exc):
            raise
        print(f"caffelike: error: command '{name}' is not built yet", file=sys.stderr)
        return 1
    try:
        return int(func(rest) or 0)
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
