"""``caffelike classify``: run a deploy net with trained weights over images; print top-k classes.

Preprocessing is the book's inference flow (and pycaffe's Transformer with a per-channel
mean): OpenCV reads BGR, each image is resized to the net input's HxW (nearest neighbour by
default), then ``(pixel * raw_scale - mean) * scale`` and HWC -> CHW. With ``-list`` (an
ImageData list, ``path label`` per line) the labels are scored: accuracy and a confusion
matrix are printed as well.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from ..errors import CaffelikeError, DataError
from ..log import get_logger

INTERPOLATIONS = ("nearest", "linear", "cubic", "area", "none")
ENGINES = ("torch", "onnxruntime")


@dataclass(frozen=True)
class Preprocess:
    """How an image file becomes one CxHxW input (BGR channel order, as Caffe's data layers)."""

    height: int
    width: int
    mean: np.ndarray | None = None  # (C,) or (C, H, W)
    interpolation: str = "nearest"
    raw_scale: float = 1.0
    scale: float = 1.0
    channels: int = 3

    def load(self, path: str) -> np.ndarray:
        import cv2

        flag = cv2.IMREAD_COLOR if self.channels == 3 else cv2.IMREAD_GRAYSCALE
        img = cv2.imread(path, flag)
        if img is None:
            raise DataError(f"{path}: cannot read the image (missing file or unknown format)")
        if self.interpolation != "none" and img.shape[:2] != (self.height, self.width):
            inter = {"nearest": cv2.INTER_NEAREST, "linear": cv2.INTER_LINEAR,
                     "cubic": cv2.INTER_CUBIC, "area": cv2.INTER_AREA}[self.interpolation]
            img = cv2.resize(img, (self.width, self.height), interpolation=inter)
        if img.ndim == 2:
            img = img[:, :, None]
        chw = img.astype(np.float32).transpose(2, 0, 1) * self.raw_scale
        if self.mean is not None:
            mean = self.mean if self.mean.ndim == 3 else self.mean[:, None, None]
            chw = chw - mean.astype(np.float32)
        return (chw * self.scale).astype(np.float32)


def read_image_list(path: str, root_folder: str = "") -> list[tuple[str, int | None]]:
    """An ImageData list (``path [label]`` per line) -> (full path, label or None)."""
    items: list[tuple[str, int | None]] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            text = line.strip()
            if not text:
                continue
            name, _, label = text.rpartition(" ")
            if not name:
                name, label = label, ""
            try:
                items.append((os.path.join(root_folder, name), int(label) if label else None))
            except ValueError:
                raise DataError(f"{path}:{lineno}: expected 'path label', got '{text}'") from None
    return items


def confusion_matrix(labels: Sequence[int], predictions: Sequence[int], num_classes: int) -> np.ndarray:
    """Counts[true, predicted]."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    for t, p in zip(labels, predictions):
        cm[int(t), int(p)] += 1
    return cm


def format_confusion(cm: np.ndarray, names: Sequence[str] | None = None) -> str:
    """A confusion matrix as aligned text: rows = true class, columns = predicted class."""
    n = cm.shape[0]
    names = list(names) if names else [str(i) for i in range(n)]
    corner = "true\\pred"
    first = max(len(corner), *(len(s) for s in names)) + 2
    width = max(6, *(len(s) for s in names), len(str(int(cm.max(initial=0))))) + 1
    head = corner.ljust(first) + "".join(s.rjust(width) for s in names)
    rows = [names[i].ljust(first) + "".join(str(int(v)).rjust(width) for v in cm[i]) for i in range(n)]
    return "\n".join([head, *rows])


def predict(net, paths: Sequence[str], prep: Preprocess, output: str | None = None,
            batch_size: int = 64, engine: str = "torch") -> np.ndarray:
    """Class scores (N x classes) of image files through a pycaffe-style Net.

    ``engine="onnxruntime"`` exports the net once per batch shape and runs ONNX Runtime
    (outputs equal the torch path within float tolerance; only the net's outputs can be read).
    """
    in_ = net.inputs[0]
    out_name = output or net.outputs[-1]
    if out_name not in net.blobs:
        raise CaffelikeError(f"output blob '{out_name}' is not in the net; blobs: {', '.join(net.blobs)}")
    if engine not in ENGINES:
        raise CaffelikeError(f"unknown -engine '{engine}'; known: {', '.join(ENGINES)}")
    if engine == "onnxruntime" and out_name not in net.outputs:
        raise CaffelikeError(f"-engine onnxruntime reads only the net's outputs ({', '.join(net.outputs)}), "
                             f"not '{out_name}'")
    sessions: dict[tuple[int, ...], object] = {}
    scores = []
    for start in range(0, len(paths), batch_size):
        batch = np.stack([prep.load(p) for p in paths[start:start + batch_size]])
        if engine == "onnxruntime":
            if batch.shape not in sessions:
                from ..accel import OnnxRuntimeEngine

                net.blobs[in_].reshape(*batch.shape)
                net.reshape()
                sessions[batch.shape] = OnnxRuntimeEngine(net)
            out = sessions[batch.shape].run(**{in_: batch})
        else:
            out = net.forward_all(blobs=[out_name], **{in_: batch})
        scores.append(np.asarray(out[out_name]).reshape(len(batch), -1))
    return np.concatenate(scores) if scores else np.zeros((0, 0), np.float32)


def _parse_floats(text: str | None) -> list[float] | None:
    if not text:
        return None
    try:
        return [float(v) for v in text.replace(" ", ",").split(",") if v]
    except ValueError:
        raise CaffelikeError(f"expected comma-separated numbers, got '{text}'") from None


def _class_names(path: str | None, n: int) -> list[str]:
    if not path:
        return [str(i) for i in range(n)]
    with open(path, encoding="utf-8") as f:
        names = [line.strip() for line in f if line.strip()]
    return names + [str(i) for i in range(len(names), n)]


def main(argv: list[str]) -> int:
    """``caffelike classify -model deploy.prototxt -weights w.caffemodel [images] [-list val.txt]``."""
    from ..cli import FlagParser
    from ..log import setup_logging

    p = FlagParser(prog="caffelike classify", description=__doc__.split("\n\n")[0])
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
        if not os.path.isfile(args.list):
            raise DataError(f"{args.list}: no such image list")
        items += read_image_list(args.list, args.root_folder)
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
    n_classes = scores.shape[1]
    names = _class_names(args.labels, n_classes)
    top = np.argsort(-scores, axis=1, kind="stable")[:, : max(1, args.top_k)]
    lines = []
    if not args.quiet:
        for (path, label), row, idx in zip(items, scores, top):
            best = "  ".join(f"{names[k]} {row[k]:.4f}" for k in idx)
            truth = f"  (label {names[label]})" if label is not None and label < n_classes else ""
            lines.append(f"{path}: {best}{truth}")
    labelled = [(i, label) for i, (_, label) in enumerate(items) if label is not None]
    if labelled:
        truth = [label for _, label in labelled]
        pred = [int(top[i, 0]) for i, _ in labelled]
        acc = float(np.mean([t == q for t, q in zip(truth, pred)]))
        classes = max(n_classes, max(truth) + 1)
        lines.append(f"accuracy = {acc:.4f} ({sum(t == q for t, q in zip(truth, pred))}/{len(truth)})")
        lines.append("confusion matrix (rows: true class, columns: predicted class):")
        lines.append(format_confusion(confusion_matrix(truth, pred, classes), _class_names(args.labels, classes)))
    sys.stdout.write("\n".join(lines) + "\n")
    get_logger("classify").info("classified %d images", len(items))
    return 0
