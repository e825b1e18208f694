"""glog-format logging, the de facto API of Caffe's logs (parse_log.py and friends read it).

Lines look like ``I1127 17:31:06.145418 26758 solver.py:204] Iteration 100, lr = 0.01``.
Everything in caffelike logs through :func:`get_logger`; :func:`setup_logging` wires the
handlers the way ``caffe`` does (stderr always, files in ``GLOG_log_dir`` on request) and
honours ``GLOG_minloglevel``.
"""
from __future__ import annotations

import logging
import os
import socket
import sys
import time
from datetime import datetime

LOGGER_NAME = "caffelike"
_LEVEL_LETTER = {logging.DEBUG: "I", logging.INFO: "I", logging.WARNING: "W",
                 logging.ERROR: "E", logging.CRITICAL: "F"}
_GLOG_LEVELS = {0: logging.INFO, 1: logging.WARNING, 2: logging.ERROR, 3: logging.CRITICAL}


class GlogFormatter(logging.Formatter):
    """Formats a record as ``Lmmdd hh:mm:ss.uuuuuu threadid file:line] msg``."""

    def __init__(self, year_in_prefix: bool = False):
        super().__init__()
        self.year_in_prefix = year_in_prefix

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created)
        stamp = when.strftime("%Y%m%d %H:%M:%S" if self.year_in_prefix else "%m%d %H:%M:%S")
        letter = _LEVEL_LETTER.get(record.levelno, "I")
        msg = record.getMessage()
        if record.exc_info:
            msg += "\n" + self.formatException(record.exc_info)
        return (f"{letter}{stamp}.{when.microsecond:06d} {os.getpid():5d} "
                f"{record.filename}:{record.lineno}] {msg}")


def get_logger(name: str | None = None) -> logging.Logger:
    """The caffelike logger (or a child of it)."""
    return logging.getLogger(LOGGER_NAME if not name else f"{LOGGER_NAME}.{name}")


def _env_level() -> int:
    try:
        return _GLOG_LEVELS.get(int(os.environ.get("GLOG_minloglevel", "0")), logging.INFO)
    except ValueError:
        return logging.INFO


class _Status:
    """The one status line shown under the log on a terminal (see :func:`show_status`)."""

    text = ""
    stream = None


def show_status(text: str, stream=None) -> None:
    """Draw ``text`` as a status line at the bottom of a terminal (redrawn after each log line)."""
    stream = stream if stream is not None else sys.stderr
    _Status.text, _Status.stream = text, stream
    stream.write("\r" + text + "\033[K")
    stream.flush()


def clear_status() -> None:
    """Erase the status line, if one is shown."""
    if _Status.text and _Status.stream is not None:
        _Status.stream.write("\r\033[K")
        _Status.stream.flush()
    _Status.text, _Status.stream = "", None


class _ConsoleHandler(logging.StreamHandler):
    """stderr in glog format; a status line, if shown, is lifted above each record."""

    def emit(self, record: logging.LogRecord) -> None:
        status = _Status.text if _Status.stream is self.stream else ""
        if status:
            self.stream.write("\r\033[K")
        super().emit(record)
        if status:
            self.stream.write(status)
            self.stream.flush()


def setup_logging(log_dir: str | None = None, program: str = "caffelike",
                  stream=None) -> str | None:
    """Send caffelike's log to stderr in glog format, and to a glog-named file in log_dir.

    ``log_dir`` defaults to ``$GLOG_log_dir``; with ``GLOG_logtostderr=1`` no file is
    written (as glog). Returns the log file path, if any. Safe to call more than once.
    """
    logger = get_logger()
    logger.setLevel(_env_level())
    logger.propagate = False
    for handler in list(logger.handlers):
        if getattr(handler, "_caffelike", False):
            logger.removeHandler(handler)
            handler.close()
    formatter = GlogFormatter()
    console = _ConsoleHandler(stream if stream is not None else sys.stderr)
    console.setFormatter(formatter)
    console._caffelike = True  # type: ignore[attr-defined]
    logger.addHandler(console)
    log_dir = log_dir or os.environ.get("GLOG_log_dir")
    if not log_dir or os.environ.get("GLOG_logtostderr", "0") not in ("0", "", "false"):
        return None
    os.makedirs(log_dir, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    user = os.environ.get("USER", "user")
    path = os.path.join(log_dir, f"{program}.{socket.gethostname()}.{user}.log.INFO.{stamp}.{os.getpid()}")
    handler = logging.FileHandler(path)
    handler.setFormatter(formatter)
    handler._caffelike = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    link = os.path.join(log_dir, f"{program}.INFO")
    try:
        if os.path.lexists(link):
            os.remove(link)
        os.symlink(os.path.basename(path), link)
    except OSError:
        pass
    return path


# -- pycaffe's caffe.init_log / caffe.log ------------------------------------------------------
def init_log(level: int | None = None, stderr: bool | None = None) -> None:
    """pycaffe's ``caffe.init_log([level[, stderr]])``: start glog-format logging to stderr.

    ``level`` is glog's minimum level (0 INFO, 1 WARNING, 2 ERROR, 3 FATAL); ``stderr=False``
    also writes a log file to ``$GLOG_log_dir`` when that is set.
    """
    log_dir = None if stderr is None or stderr else os.environ.get("GLOG_log_dir")
    setup_logging(log_dir=log_dir)
    if level is not None:
        get_logger().setLevel(_GLOG_LEVELS.get(int(level), logging.CRITICAL))


def log(message: str) -> None:
    """pycaffe's ``caffe.log(s)``: one INFO line."""
    get_logger().info("%s", message, stacklevel=2)
