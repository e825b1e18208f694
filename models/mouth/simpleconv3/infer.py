#!/usr/bin/env python3
"""The book's inference script (its ``start_test``), run by caffelike with one changed line.

The book's original starts with ``import caffe``; here it is ``import caffelike as caffe`` and
nothing else in the flow changes: ``caffe.Net(deploy, weights, caffe.TEST)``, OpenCV reads
each image (BGR), resizes it to 48x48 with nearest neighbour, a ``caffe.io.Transformer``
subtracts the mean values and turns HWC into CHW, ``net.forward_all(data=...)`` runs the net
and ``out['prob']`` holds the class probabilities.

Usage (from the repository root)::

    python models/mouth/simpleconv3/infer.py \\
        --weights runs/mouth/simpleconv3_iter_600.caffemodel   # val accuracy + confusion matrix
    python models/mouth/simpleconv3/infer.py --weights W.caffemodel data/mouth/1/46smile.jpg
"""
from __future__ import annotations

import argparse
import os
import sys

import cv2
import numpy as np

import caffelike as caffe  # the book: import caffe

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
CLASSES = ["neutral", "smile"]


def start_test(model_proto: str, model_weight: str, images: list[str], testsize: int = 48,
               gpu: int | None = None, crop: bool = False) -> list[np.ndarray]:
    """The book's flow: one image at a time through the deploy net; returns each 'prob' row.

    ``crop`` takes the centre 48x48 instead of resizing: the TEST-phase transform of
    train.prototxt (``crop_size: 48``), i.e. what ``caffe test`` and the training log score.
    """
    if gpu is None:
        caffe.set_mode_cpu()
    else:
        caffe.set_mode_gpu()
        caffe.set_device(gpu)
    net = caffe.Net(model_proto, model_weight, caffe.TEST)
    transformer = caffe.io.Transformer({"data": net.blobs["data"].data.shape})
    transformer.set_mean("data", np.array([104.008, 116.669, 122.675]))
    transformer.set_transpose("data", (2, 0, 1))
    results = []
    for path in images:
        img = cv2.imread(path)
        if img is None:
            raise caffe.errors.DataError(f"{path}: cannot read the image")
        if crop:
            y0, x0 = (img.shape[0] - testsize) // 2, (img.shape[1] - testsize) // 2
            img = img[y0:y0 + testsize, x0:x0 + testsize]
        else:
            img = cv2.resize(img, (testsize, testsize), interpolation=cv2.INTER_NEAREST)
        out = net.forward_all(data=np.asarray([transformer.preprocess("data", img)]))
        results.append(np.array(out["prob"][0]).reshape(-1))
    return results


def _read_list(path: str, root: str) -> tuple[list[str], list[int]]:
    paths, labels = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                name, label = line.split()
                paths.append(os.path.join(root, name))
                labels.append(int(label))
    return paths, labels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="*", help="images to classify (default: the val list)")
    parser.add_argument("--deploy", default=os.path.join(HERE, "deploy.prototxt"))
    parser.add_argument("--weights", required=True)
    parser.add_argument("--list", default=os.path.join(ROOT, "data", "mouth", "val.txt"))
    parser.add_argument("--root", default=os.path.join(ROOT, "data", "mouth"))
    parser.add_argument("-gpu", "--gpu", type=int, default=None, help="GPU id (default: CPU)")
    parser.add_argument("--crop", action="store_true",
                        help="centre-crop 48x48 (the TEST net's transform) instead of the book's resize")
    parser.add_argument("--min-accuracy", type=float, default=None,
                        help="exit with status 1 if the val accuracy is lower")
    args = parser.parse_args(argv)

    from caffelike.inference import confusion_matrix, format_confusion

    if args.images:
        for path, prob in zip(args.images, start_test(args.deploy, args.weights, args.images, gpu=args.gpu, crop=args.crop)):
            k = int(np.argmax(prob))
            sys.stdout.write(f"{path}: {CLASSES[k] if k < len(CLASSES) else k} ({prob[k]:.4f})\n")
        return 0
    paths, labels = _read_list(args.list, args.root)
    probs = start_test(args.deploy, args.weights, paths, gpu=args.gpu, crop=args.crop)
    preds = [int(np.argmax(p)) for p in probs]
    correct = sum(p == t for p, t in zip(preds, labels))
    how = "centre crop 48, as the TEST net" if args.crop else "the book's flow: nearest resize to 48"
    sys.stdout.write(f"val accuracy = {correct / len(labels):.4f} ({correct}/{len(labels)}) [{how}]\n")
    sys.stdout.write("confusion matrix (rows: true class, columns: predicted class):\n")
    sys.stdout.write(format_confusion(confusion_matrix(labels, preds, len(CLASSES)), CLASSES) + "\n")
    if args.min_accuracy is not None and correct / len(labels) < args.min_accuracy:
        sys.stderr.write(f"val accuracy {correct / len(labels):.4f} is below {args.min_accuracy}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
