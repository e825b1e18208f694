"""``caffelike export -model deploy.prototxt -weights w.caffemodel -o model.onnx [--check]``
(see :mod:`caffelike.export`)."""
from __future__ import annotations

import os
import sys

from ..cli import FlagParser
from ..errors import CaffelikeError, DataError
from ..export import check, export
from ..glog import setup_logging


def main(argv: list[str]) -> int:
    """``caffelike export -model deploy.prototxt -weights w.caffemodel -o model.onnx``."""
    p = FlagParser(prog="caffelike export", description="Export a deploy net and its weights to ONNX.")
    p.add_argument("--model", required=True, help="deploy prototxt")
    p.add_argument("--weights", default=None, help=".caffemodel (default: the fillers' initial values)")
    p.add_argument("-o", "--output", required=True, help="ONNX file to write")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--batch", type=int, default=None, help="batch size traced (default: the prototxt's)")
    p.add_argument("--static_batch", action="store_true", help="fix the batch dimension")
    p.add_argument("--outputs", default=None, help="comma-separated blobs to export (default: net outputs)")
    p.add_argument("--check", action="store_true", help="compare onnxruntime with caffelike afterwards")
    args = p.parse_args(argv)
    setup_logging()
    for path in filter(None, (args.model, args.weights)):
        if not os.path.isfile(path):
            raise DataError(f"{path}: no such file")
    outs = [s for s in args.outputs.split(",") if s] if args.outputs else None
    export(args.model, args.weights, args.output, args.opset, args.batch, not args.static_batch, outs)
    if args.check:
        err = check(args.model, args.weights, args.output)
        sys.stdout.write(f"onnxruntime vs caffelike: max relative difference {err:.3g}\n")
        if err > 1e-4:
            raise CaffelikeError(f"{args.output}: onnxruntime differs from caffelike by {err:.3g} (> 1e-4)")
    return 0
