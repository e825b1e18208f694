"""Classifying image files with a deploy net: the book's preprocessing, class scores and
confusion matrices (what ``caffelike classify`` and the examples' inference scripts use).

Preprocessing is the book's inference flow (and pycaffe's Transformer with a per-channel
mean): OpenCV reads BGR, each image is resized to the net input's HxW (nearest neighbour by
default), then ``(pixel * raw_scale - mean) * scale`` and HWC -> CHW.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .errors import CaffelikeError, DataError

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
                from .accel import OnnxRuntimeEngine

                net.blobs[in_].reshape(*batch.shape)
                net.reshape()
                sessions[batch.shape] = OnnxRuntimeEngine(net)
            out = sessions[batch.shape].run(**{in_: batch})
        else:
            out = net.forward_all(blobs=[out_name], **{in_: batch})
        scores.append(np.asarray(out[out_name]).reshape(len(batch), -1))
    return np.concatenate(scores) if scores else np.zeros((0, 0), np.float32)



def class_names(names: Sequence[str], n: int) -> list[str]:
    """``names`` followed by the numbers of the classes it does not name, up to ``n``."""
    return list(names) + [str(i) for i in range(len(names), n)]


def report(items: Sequence[tuple[str, int | None]], scores: np.ndarray, names: Sequence[str] = (),
           top_k: int = 1, per_image: bool = True) -> list[str]:
    """The lines ``caffelike classify`` prints: per image (``per_image``) its ``top_k``
    classes and scores, then, for the images with a label, the accuracy and the confusion
    matrix. ``items`` are (path, label or None) in the order of the ``scores`` rows."""
    n_classes = scores.shape[1]
    shown = class_names(names, n_classes)
    top = np.argsort(-scores, axis=1, kind="stable")[:, : max(1, top_k)]
    lines = []
    if per_image:
        for (path, label), row, idx in zip(items, scores, top):
            best = "  ".join(f"{shown[k]} {row[k]:.4f}" for k in idx)
            truth = f"  (label {shown[label]})" if label is not None and label < n_classes else ""
            lines.append(f"{path}: {best}{truth}")
    labelled = [(i, label) for i, (_, label) in enumerate(items) if label is not None]
    if labelled:
        truth = [label for _, label in labelled]
        pred = [int(top[i, 0]) for i, _ in labelled]
        acc = float(np.mean([t == q for t, q in zip(truth, pred)]))
        classes = max(n_classes, max(truth) + 1)
        lines.append(f"accuracy = {acc:.4f} ({sum(t == q for t, q in zip(truth, pred))}/{len(truth)})")
        lines.append("confusion matrix (rows: true class, columns: predicted class):")
        lines.append(format_confusion(confusion_matrix(truth, pred, classes), class_names(names, classes)))
    return lines
