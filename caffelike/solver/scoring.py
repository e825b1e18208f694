"""Averaging a net's outputs over batches, as Caffe's Solver::Test and ``caffe test`` do.

Every element of every output blob is summed in float32 over the batches, then divided by
the number of batches; loss outputs also report ``loss_weight * mean``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import torch

F32 = np.float32


@dataclass
class OutputSums:
    """Running float32 sums of a net's output elements (and of its loss) over batches."""

    names: list[tuple[str, float]] = field(default_factory=list)  # (blob name, loss weight) per element
    sums: list = field(default_factory=list)
    loss: np.float32 = F32(0)
    batches: int = 0

    def add(self, net, blobs: Mapping[str, torch.Tensor], loss: float) -> list[tuple[str, float]]:
        """Add one batch; returns its (name, value) per output element."""
        weights = net.loss_weights
        batch: list[tuple[str, float]] = []
        for name in net.output_names:
            for v in blobs[name].detach().float().reshape(-1).cpu().numpy():
                batch.append((name, v))
        if self.batches == 0:
            self.names = [(name, weights.get(name, 0.0)) for name, _ in batch]
            self.sums = [F32(v) for _, v in batch]
        else:
            self.sums = [F32(s + v) for s, (_, v) in zip(self.sums, batch)]
        self.loss = F32(self.loss + F32(loss))
        self.batches += 1
        return [(name, float(v)) for name, v in batch]

    def means(self) -> list[tuple[str, float, float]]:
        """(name, mean over batches, loss weight) per output element."""
        n = F32(max(1, self.batches))
        return [(name, float(F32(s / n)), w) for s, (name, w) in zip(self.sums, self.names)]

    def mean_loss(self) -> float:
        return float(F32(self.loss / F32(max(1, self.batches))))
