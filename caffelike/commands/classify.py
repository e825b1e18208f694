"""``caffelike classify -model deploy.prototxt -weights w.caffemodel [IMAGE...] [-list val.txt]``.

Runs a deploy net with trained weights over images and prints the top-k classes, with the
preprocessing of :mod:`caffelike.inference`. With ``-list`` (an ImageData list, ``path
label`` per line; a line may omit the label) the labels are scored: accuracy and a confusion
matrix are printed as well.
"""
from __future__ import annotations

import os
import sys

import numpy as np

from ..cli import FlagParser
from ..errors import CaffelikeError, DataError
from ..inference import ENGINES, INTERPOLATIONS, Preprocess, predict, report
from ..io.image_list import read_image_list
from ..glog import get_logger, setup_logging


def _parse_floats(text: str | None) -> list[float] | None:
    if not text:
        return None
    try:
        return [float(v) for v in text.replace(" ", ",").split(",") if v]
    except ValueError:
        raise CaffelikeError(f"expected comma-separated numbers, got '{text}'") from None


def _read_labels(path: str | None) -> list[str]:
    """The class names of a -labels file, one per non-blank line (none without a file)."""
    if not path:
        return []
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def main(argv: list[str]) -> int:
    """``caffelike classify -model deploy.prototxt -weights w.caffemodel [images] [-list val.txt]``."""
    p = FlagParser(prog="caffelike classify",
                   description="Classify images with a deploy net and trained weights.")
    p.add_argument("images", nargs="*", help="image files to classify")
    p.add_argument("--model", required=True, help="deploy prototxt (an Input layer)")
    p.add_argument("--weights", required=True, help="trained .caffemodel")
    p.add_argument("--list", default=None, help="ImageData list 'path label' (scores accuracy)")
    p.add_argument("--root_folder", default="", help="prefix for the paths in -list")
    p.add_argument("--mean_value", default=None, help="per-channel mean, BGR, e.g. 104.008,116.669,122.675")
    p.add_argument("--mean_file", default=None, help="mean .binaryproto (instead of -mean_value)")
    p.add_argument("--resize", choices=INTERPOLATIONS, default="nearest",
                   help="how images are resized to the input size (default nearest, as the book)")
    p.add_argument("--raw_scale", type=float, default=1.0, help="multiply pixels (0-255) before the mean")
    p.add_argument("--scale", type=float, default=1.0, help="multiply after the mean (transform_param scale)")
    p.add_argument("--output", default=None, help="output blob (default: the net's last output, e.g. prob)")
    p.add_argument("--labels", default=None, help="text file with one class name per line")
    p.add_argument("--top_k", type=int, default=1)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--gpu", default=None, help="GPU id (as caffe's -gpu)")
    p.add_argument("--quiet", action="store_true", help="print only the summary (with -list)")
    p.add_argument("--optimize", action="store_true", help="fold BatchNorm/Scale into convolutions "
                   "and fuse ReLU (same scores within float tolerance)")
    p.add_argument("--engine", choices=ENGINES, default="torch",
                   help="inference engine: torch (default) or onnxruntime (needs the onnx extra)")
    args = p.parse_args(argv)
    setup_logging()

    items: list[tuple[str, int | None]] = [(path, None) for path in args.images]
    if args.list:
        items += [(os.path.join(args.root_folder, entry.path), entry.label)
                  for entry in read_image_list(args.list, labels_required=False)]
    if not items:
        raise CaffelikeError("caffelike classify: no images; give image files or -list")
    for path in (args.model, args.weights):
        if not os.path.isfile(path):
            raise DataError(f"{path}: no such file")

    import caffelike as caffe

    if args.gpu not in (None, "", "-1"):
        caffe.set_mode_gpu()
        caffe.set_device(int(str(args.gpu).split(",")[0]))
    else:
        caffe.set_mode_cpu()
    net = caffe.Net(args.model, caffe.TEST, weights=args.weights, optimize=args.optimize)
    shape = net.blobs[net.inputs[0]].data.shape
    mean = None
    if args.mean_file:
        from ..io.blobs import read_mean_file
        mean = np.asarray(read_mean_file(args.mean_file), dtype=np.float32)
    elif args.mean_value:
        mean = np.asarray(_parse_floats(args.mean_value), dtype=np.float32)
        if mean.size == 1:
            mean = np.repeat(mean, shape[1])
        if mean.size != shape[1]:
            raise CaffelikeError(f"-mean_value has {mean.size} values for {shape[1]} input channels")
    prep = Preprocess(height=int(shape[2]), width=int(shape[3]), mean=mean, interpolation=args.resize,
                      raw_scale=args.raw_scale, scale=args.scale, channels=int(shape[1]))
    scores = predict(net, [path for path, _ in items], prep, args.output, args.batch_size, args.engine)
    lines = report(items, scores, _read_labels(args.labels), args.top_k, per_image=not args.quiet)
    sys.stdout.write("\n".join(lines) + "\n")
    get_logger("classify").info("classified %d images", len(items))
    return 0
