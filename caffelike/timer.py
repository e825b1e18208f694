"""pycaffe's ``caffe.Timer``: ``start()``, ``stop()`` and the elapsed milliseconds ``ms``.

As Caffe's Timer: ``start`` on a running timer and ``stop`` on a stopped one do nothing;
reading ``ms`` stops a running timer, and gives 0 (with a warning) for a timer never started.
In GPU mode (``set_mode_gpu``) the CUDA device is synchronised at start and stop, so the time
covers the queued GPU work, as Caffe's CUDA-event timer does.
"""
from __future__ import annotations

import time

import torch

from .glog import get_logger
from .mode import default_device

__all__ = ["Timer"]


class Timer:
    """Wall-clock timer with Caffe's Timer semantics."""

    def __init__(self) -> None:
        self._start = 0.0
        self._stop = 0.0
        self.running = False
        self.has_run_at_least_once = False

    @staticmethod
    def _now() -> float:
        device = default_device() if torch.cuda.is_available() else torch.device("cpu")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    def start(self) -> None:
        """Start timing (no-op if running)."""
        if not self.running:
            self._start = self._now()
            self.running = True
            self.has_run_at_least_once = True

    def stop(self) -> None:
        """Stop timing (no-op if stopped)."""
        if self.running:
            self._stop = self._now()
            self.running = False

    @property
    def ms(self) -> float:
        """Milliseconds between the last start and stop (stops a running timer first)."""
        if not self.has_run_at_least_once:
            get_logger().warning("Timer has never been run before reading time.")
            return 0.0
        self.stop()
        return (self._stop - self._start) * 1000.0

    @property
    def seconds(self) -> float:
        """The same interval in seconds (Caffe's Timer::Seconds)."""
        return self.ms / 1000.0
