"""Caffe's running sums (BatchNorm's statistics blobs): ``sum = factor*sum + value``.

Each BatchNorm in training adds its batch statistics to its blobs. Inside a training step every
small operation costs several microseconds, so a pass (``net.graph``'s run) opens a batch
with :func:`deferred`: the layers' updates are queued and applied together at its end, one
multiply and one add over all blobs of the pass. Outside a batch, :func:`update` applies at once.

The values are the same: ``factor*sum`` is rounded before the sum, as Caffe's axpby. A blob
queued twice in one batch (two layers sharing it) is applied before it is queued again, and
:func:`flush` runs before anything reads the blobs in the middle of a pass.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import torch

from ..foreach import mul_

_open = threading.local()  # .batch: the batch open in this thread, if any


def _open_batch() -> "_Batch | None":
    """The batch open in this thread (none while torch.compile traces: updates apply at once)."""
    return None if torch.compiler.is_compiling() else getattr(_open, "batch", None)


class _Batch:
    def __init__(self) -> None:
        self.groups: dict[tuple, tuple[list, list]] = {}  # (factor, dtype, device) -> (sums, values)
        self.queued: set[int] = set()  # ids of the blobs and value buffers queued

    def apply(self) -> None:
        for (factor, _, _), (sums, values) in self.groups.items():
            mul_(sums, factor)
            torch._foreach_add_(sums, values)
        self.groups.clear()
        self.queued.clear()


def update(sums: list[torch.Tensor], values: list[torch.Tensor], factor: float,
           buffer: torch.Tensor | None = None) -> None:
    """``sums[i] = factor*sums[i] + values[i]``, now or at the end of the open batch; ``buffer``:
    the tensor holding the values (its owner calls :func:`release` before rewriting it)."""
    batch = _open_batch()
    if batch is None:
        mul_(sums, factor)
        torch._foreach_add_(sums, values)
        return
    if any(id(s) in batch.queued for s in sums):  # a blob queued by another layer
        batch.apply()
    first = sums[0]
    group = batch.groups.setdefault((factor, first.dtype, first.device), ([], []))
    group[0].extend(sums)
    group[1].extend(values)
    batch.queued.update(id(s) for s in sums)
    if buffer is not None:
        batch.queued.add(id(buffer))


def release(buffer: torch.Tensor) -> None:
    """Apply the open batch if it still holds values in ``buffer`` (about to be rewritten)."""
    batch = _open_batch()
    if batch is not None and id(buffer) in batch.queued:
        batch.apply()


def flush() -> None:
    """Apply the updates queued so far (before reading the blobs in the middle of a pass)."""
    batch = _open_batch()
    if batch is not None:
        batch.apply()


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Queue the updates made inside the block and apply them at its end (nested blocks join
    the outermost one)."""
    if torch.compiler.is_compiling() or getattr(_open, "batch", None) is not None:
        yield
        return
    _open.batch = batch = _Batch()
    try:
        yield
    finally:
        _open.batch = None
        batch.apply()
