"""ParseNet's segmentation scoring of a test net (``eval_type: "segmentation"``), as
weiliu89/caffe branch fcn's ``Solver::TestSegmentation`` logs it.

Each test net output is summed over the test batches and read per label c (its channels) as
the counts ParseEvaluate writes: (right, labelled, predicted) = the first three values of
channel c. From them: per-pixel accuracy sum(right) / sum(labelled); per-label accuracy, the
mean of right / labelled over labels with labelled > 0; IoU right / (labelled + predicted -
right), summed over labels with labelled + predicted > 0 and divided by the number of labels
with labelled > 0 (the fork's mean), and weighted by labelled / sum(labelled).
"""
from __future__ import annotations

import numpy as np

from .messages import num
from .scoring import F32, OutputSums


def segmentation_lines(sums: OutputSums, channels: dict[str, int]) -> list[str]:
    """The fork's log lines for summed outputs; ``channels``: each output's label count."""
    lines = []
    names = list(dict.fromkeys(name for name, _ in sums.names))
    for i, name in enumerate(names):
        values = np.array([s for s, (n, _) in zip(sums.sums, sums.names) if n == name], F32)
        stats = values.reshape(channels[name], -1)[:, :3]
        head = f"    Test net output #{i} {name}: "
        right, labelled, predicted = stats[:, 0], stats[:, 1], stats[:, 2]
        total = F32(labelled.sum(dtype=F32))
        if total <= 0:
            lines.append(head + "no valid labels!")
            continue
        valid = labelled != 0
        union = labelled + predicted != 0
        iou = right[union] / (labelled[union] + predicted[union] - right[union])
        n_valid = F32(valid.sum())
        lines += [head + f"per_pixel_acc = {num(F32(right.sum(dtype=F32)) / total)}",
                  head + f"per_label_acc = {num(F32((right[valid] / labelled[valid]).sum(dtype=F32)) / n_valid)}",
                  head + f"iou_acc = {num(F32(iou.sum(dtype=F32)) / n_valid)}",
                  head + f"weighted_iou_acc = {num((iou * labelled[union] / total).sum(dtype=F32))}"]
    return lines
