"""``caffelike export -model deploy.prototxt -weights w.caffemodel [-format onnx|pytorch|pt2] -o OUT``
(see :mod:`caffelike.export`).

``onnx`` (the default) writes an ONNX file (``--check`` compares onnxruntime with caffelike),
``pytorch`` writes ``OUT/model.py`` and ``OUT/weights.pth``, ``pt2`` a ``torch.export`` program.
"""
from __future__ import annotations

import os
import sys

from ..cli import FlagParser
from ..errors import CaffelikeError, DataError
from ..glog import setup_logging

FORMATS = ("onnx", "pytorch", "pt2")


def _net(model: str, weights: str | None):
    import caffelike as caffe

    return caffe.Net(model, caffe.TEST, weights=weights) if weights else caffe.Net(model, caffe.TEST)


def main(argv: list[str]) -> int:
    """``caffelike export -model deploy.prototxt -weights w.caffemodel [-format F] -o OUT``."""
    p = FlagParser(prog="caffelike export",
                   description="Export a deploy net and its weights to ONNX, plain PyTorch or torch.export.")
    p.add_argument("--model", required=True, help="deploy prototxt")
    p.add_argument("--weights", default=None, help=".caffemodel (default: the fillers' initial values)")
    p.add_argument("--format", default="onnx", choices=FORMATS,
                   help="onnx (a .onnx file), pytorch (a folder: model.py + weights.pth), pt2 (torch.export)")
    p.add_argument("-o", "--output", required=True, help="file to write (onnx, pt2) or folder (pytorch)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset")
    p.add_argument("--batch", type=int, default=None, help="batch size traced, onnx (default: the prototxt's)")
    p.add_argument("--static_batch", action="store_true", help="fix the batch dimension (onnx, pt2)")
    p.add_argument("--outputs", default=None, help="comma-separated blobs to export, onnx (default: net outputs)")
    p.add_argument("--check", action="store_true", help="compare onnxruntime with caffelike afterwards (onnx)")
    args = p.parse_args(argv)
    setup_logging()
    for path in filter(None, (args.model, args.weights)):
        if not os.path.isfile(path):
            raise DataError(f"{path}: no such file")
    if args.format != "onnx" and (args.check or args.outputs or args.batch):
        raise CaffelikeError(f"--check, --outputs and --batch are for -format onnx, not {args.format}")
    if args.format == "pytorch":
        from ..export import export_pytorch

        export_pytorch(_net(args.model, args.weights), args.output)
        return 0
    if args.format == "pt2":
        from ..export import export_pt2, to_torch

        net = _net(args.model, args.weights)
        export_pt2(to_torch(net), [net.blobs[n].data.shape for n in net.inputs], args.output, args.static_batch)
        return 0
    from ..export import check, export

    outs = [s for s in args.outputs.split(",") if s] if args.outputs else None
    export(args.model, args.weights, args.output, args.opset, args.batch, not args.static_batch, outs)
    if args.check:
        err = check(args.model, args.weights, args.output)
        sys.stdout.write(f"onnxruntime vs caffelike: max relative difference {err:.3g}\n")
        if err > 1e-4:
            raise CaffelikeError(f"{args.output}: onnxruntime differs from caffelike by {err:.3g} (> 1e-4)")
    return 0
