"""TensorBoard scalars of a training run: the numbers of Caffe's log lines, as event files.

``caffelike train -tensorboard DIR`` / ``Solver(..., tensorboard=DIR)`` (issue 18) write, through
``torch.utils.tensorboard.SummaryWriter``, one scalar per value the log shows, at the line's
iteration: ``lr`` for ``Iteration N, lr = X``, ``train/<output>`` for ``Train net output``,
``test/<output>`` for ``Test net output`` (``test<k>/<output>`` with several test nets). The
value is the float the line prints (:func:`messages.shown`), so a curve read back equals the
log's digits. An output blob of several elements gives several lines of the same name; those
become ``<prefix>/<output>/<j>``, j the element's index in the blob. The ``tensorboard``
package is an optional extra (``pip install "caffelike[tensorboard]"``).
"""
from __future__ import annotations

import os
from collections import Counter
from typing import Any, Sequence

from ..errors import CaffelikeError
from . import messages

INSTALL_HINT = 'pip install "caffelike[tensorboard]"'


def summary_writer_class() -> type:
    """``torch.utils.tensorboard.SummaryWriter``, or a user error naming the extra to install."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise CaffelikeError(f"TensorBoard logging (-tensorboard) needs the tensorboard package: "
                             f"{INSTALL_HINT}") from None
    return SummaryWriter


def output_tags(prefix: str, names: Sequence[str]) -> list[str]:
    """One tag per output line: ``prefix/name``, or ``prefix/name/j`` for a blob of several elements."""
    counts = Counter(names)
    seen: Counter = Counter()
    tags = []
    for name in names:
        tags.append(f"{prefix}/{name}" if counts[name] == 1 else f"{prefix}/{name}/{seen[name]}")
        seen[name] += 1
    return tags


class ScalarSink:
    """Where the solver hands the numbers of its lr and output log lines; this one drops them."""

    def lr(self, it: int, rate: float) -> None:
        """``Iteration it, lr = rate``."""

    def outputs(self, it: int, rows: Sequence[tuple[str, float]], test_net: int | None = None) -> None:
        """One display's ``Train net output`` lines (``test_net=None``) or one test's ``Test net
        output`` lines of test net ``test_net``: (name, value) in line order."""

    def flush(self) -> None:
        """Called at the end of each ``Solver.step``."""

    def close(self) -> None:
        """Called at the end of ``Solver.solve``, also after a stop request or an error."""


class TensorBoardSink(ScalarSink):
    """Writes the log lines' values as TensorBoard scalars to event files under ``logdir``."""

    def __init__(self, logdir: str | os.PathLike, test_nets: int = 1):
        self._writer: Any = summary_writer_class()(log_dir=os.fspath(logdir))
        self._several_tests = test_nets > 1

    def _write(self, tag: str, value: float, step: int) -> None:
        self._writer.add_scalar(tag, messages.shown(value), global_step=step)

    def lr(self, it: int, rate: float) -> None:
        self._write("lr", rate, it)

    def outputs(self, it: int, rows: Sequence[tuple[str, float]], test_net: int | None = None) -> None:
        if test_net is None:
            prefix = "train"
        else:
            prefix = f"test{test_net}" if self._several_tests else "test"
        for tag, (_, value) in zip(output_tags(prefix, [name for name, _ in rows]), rows):
            self._write(tag, value, it)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
