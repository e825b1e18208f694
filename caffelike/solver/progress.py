"""A progress line for ``caffelike train`` on a terminal, under Caffe's unchanged log lines.

Shown only when stderr is a TTY (so redirected logs, which parse_log.py reads, never see it)
and ``CAFFELIKE_PROGRESS`` is not ``0``. It is redrawn at most a few times a second.
"""
from __future__ import annotations

import os
import sys
import time

from ..glog import clear_status, show_status


def wanted(stream=None) -> bool:
    """Whether a progress line belongs on ``stream`` (default stderr)."""
    stream = stream if stream is not None else sys.stderr
    if os.environ.get("CAFFELIKE_PROGRESS", "1") in ("0", "false", "no"):
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class Progress:
    """A solver callback (``on_start`` each iteration) drawing ``iter i/max (rate, ETA, loss)``."""

    def __init__(self, solver, stream=None, interval: float = 0.25):
        self.solver = solver
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self._start_iter = solver.iter
        self._start = self._last = time.perf_counter()

    def on_start(self) -> None:
        now = time.perf_counter()
        if now - self._last < self.interval:
            return
        self._last = now
        solver = self.solver
        done = solver.iter - self._start_iter
        total = max(1, solver.param.max_iter)
        rate = done / max(now - self._start, 1e-9)
        eta = (total - solver.iter) / rate if rate > 0 else 0.0
        loss = getattr(solver, "_smoothed", None)
        text = (f"[caffelike] iter {solver.iter}/{total} ({100.0 * solver.iter / total:.1f}%)  "
                f"{rate:.2f} it/s  ETA {_duration(eta)}" + (f"  loss {float(loss):.4g}" if done else ""))
        show_status(text, self.stream)

    def on_gradients_ready(self) -> None:
        pass

    def close(self) -> None:
        clear_status()
