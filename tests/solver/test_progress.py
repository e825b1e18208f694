"""The terminal progress line: only on a TTY, and never inside a log line."""
from __future__ import annotations

import io
from caffelike.glog import clear_status, get_logger, setup_logging, show_status
from caffelike.proto import caffe_pb2
from caffelike.solver import progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_wanted_only_on_a_terminal(monkeypatch):
    monkeypatch.delenv("CAFFELIKE_PROGRESS", raising=False)
    assert progress.wanted(_Tty())
    assert not progress.wanted(io.StringIO())
    monkeypatch.setenv("CAFFELIKE_PROGRESS", "0")
    assert not progress.wanted(_Tty())


def test_log_lines_stay_whole_under_a_status_line(monkeypatch):
    monkeypatch.delenv("GLOG_minloglevel", raising=False)
    stream = _Tty()
    setup_logging(stream=stream)
    try:
        show_status("[caffelike] iter 5/10", stream)
        get_logger("solver").info("Iteration 5, lr = 0.01")
        clear_status()
    finally:
        setup_logging()
    text = stream.getvalue()
    # the status line is erased before the record and redrawn after it
    record = text.split("\r\033[K")
    assert any(part.endswith("] Iteration 5, lr = 0.01\n[caffelike] iter 5/10") for part in record), text
    lines = [ln.split("\r")[-1].replace("\033[K", "") for ln in text.split("\n")]
    assert any(ln.endswith("Iteration 5, lr = 0.01") and ln.startswith("I") for ln in lines)


def test_progress_text():
    class FakeSolver:
        iter = 0
        param = caffe_pb2.SolverParameter(max_iter=100)
        _smoothed = 0.5

    stream = _Tty()
    bar = progress.Progress(FakeSolver(), stream, interval=0.0)
    FakeSolver.iter = 50
    bar.on_start()
    bar.close()
    assert "[caffelike] iter 50/100 (50.0%)" in stream.getvalue()
    assert "loss 0.5" in stream.getvalue()
