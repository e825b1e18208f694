#!/usr/bin/env python3
"""Writes a small face-segmentation dataset for ``models/face_seg`` from the bundled mouth crops.

    python models/face_seg/make_data.py                 # -> runs/face_seg/data/{train,val}.txt
    python models/face_seg/make_data.py --out DIR --train 64 --val 16 --mouth data/mouth

The book's face-parsing data (8 classes) is not public. This stands in for it: each mouth crop of
``data/mouth`` is resized to 320 x 320 (the net's TEST size, so the TEST layer's resize changes
nothing; the fork resizes label maps bilinearly, which would blend labels) and gets a generated
label map of 8 classes: the crop's grey level cut into 8 bands at its quantiles, the darkest band
(the lips) the highest class, with a 2-pixel border of 255 (``ignore_label``). Lists are
ImageSegData's ``image labelmap`` lines, relative to the output folder (the net's ``root_folder``).
"""
from __future__ import annotations

import argparse
import os
import sys

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MOUTH = os.path.join(ROOT, "data", "mouth")
CLASSES = 8
IGNORE = 255


def label_map(image: np.ndarray, classes: int = CLASSES) -> np.ndarray:
    """A label map from a BGR crop: ``classes`` grey-level quantile bands, 255 on a 2-pixel border."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    edges = np.quantile(grey, np.linspace(0, 1, classes + 1)[1:-1])
    label = (classes - 1 - np.digitize(grey, edges)).astype(np.uint8)
    label[:2], label[-2:], label[:, :2], label[:, -2:] = IGNORE, IGNORE, IGNORE, IGNORE
    return label


def write_split(mouth: str, out: str, split: str, names: list[str], size: int) -> str:
    """Images, label maps and the list of one split; returns the list's path."""
    for sub in ("images", "labels"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    lines = []
    for i, name in enumerate(names):
        image = cv2.imread(os.path.join(mouth, name), cv2.IMREAD_COLOR)
        if image is None:
            raise SystemExit(f"{mouth}/train.txt: cannot read image '{name}'")
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
        stem = f"{split}_{i:04d}.png"
        cv2.imwrite(os.path.join(out, "images", stem), image)
        cv2.imwrite(os.path.join(out, "labels", stem), label_map(image))
        lines.append(f"images/{stem} labels/{stem}")
    path = os.path.join(out, f"{split}.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/face_seg/data", help="output folder (the net's root_folder)")
    parser.add_argument("--train", type=int, default=64, help="training images")
    parser.add_argument("--val", type=int, default=16, help="validation images")
    parser.add_argument("--mouth", default=MOUTH, help="the mouth crops (data/mouth of this repository)")
    parser.add_argument("--size", type=int, default=320, help="image side (the net's TEST new_height/new_width)")
    args = parser.parse_args(argv)
    listing = os.path.join(args.mouth, "train.txt")
    if not os.path.isfile(listing):
        raise SystemExit(f"{listing}: no such file; pass --mouth with the folder of the mouth crops")
    with open(listing, encoding="utf-8") as f:
        names = [line.split()[0] for line in f if line.strip()]
    if args.train + args.val > len(names):
        raise SystemExit(f"{listing} has {len(names)} images; asked for {args.train + args.val}")
    write_split(args.mouth, args.out, "train", names[:args.train], args.size)
    write_split(args.mouth, args.out, "val", names[args.train:args.train + args.val], args.size)
    print(f"wrote {args.train} training and {args.val} validation images to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
