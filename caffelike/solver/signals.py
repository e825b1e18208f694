"""Caffe's SignalHandler: SIGINT/SIGHUP become solver requests (stop, snapshot or none).

The handler only records that a signal arrived; the solver polls :meth:`action` once per
iteration (and per test batch), SIGHUP first, as src/caffe/util/signal_handler.cpp does.
"""
from __future__ import annotations

import signal
import threading

from ..errors import SolverError

EFFECTS = ("stop", "snapshot", "none")


def check_effect(flag: str, value: str) -> str:
    """Validate a ``-sigint_effect``/``-sighup_effect`` value."""
    if value not in EFFECTS:
        raise SolverError(f"-{flag}: invalid signal effect '{value}'; expected one of {', '.join(EFFECTS)}")
    return value


class SignalHandler:
    """Installs SIGINT/SIGHUP handlers while alive (``with`` block); ``action()`` polls them."""

    def __init__(self, sigint_effect: str = "stop", sighup_effect: str = "snapshot"):
        self.sigint_effect = check_effect("sigint_effect", sigint_effect)
        self.sighup_effect = check_effect("sighup_effect", sighup_effect)
        self._got = {"INT": False, "HUP": False}
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        self._got["HUP" if signum == getattr(signal, "SIGHUP", None) else "INT"] = True

    def __enter__(self) -> "SignalHandler":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, getattr(signal, "SIGHUP", None)):
                if sig is not None:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def action(self) -> str:
        """The requested action since the last poll: SIGHUP's effect first, then SIGINT's."""
        if self._got["HUP"]:
            self._got["HUP"] = False
            return self.sighup_effect
        if self._got["INT"]:
            self._got["INT"] = False
            return self.sigint_effect
        return "none"
