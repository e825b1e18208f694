"""A few true ``python -m caffelike`` runs: exit codes and stderr as a user's shell sees them."""
from __future__ import annotations

import os
import subprocess

import pytest

from .helpers import ERROR_LINE, PYTHON, assert_located, edit, layer_line


def _run(cwd, *argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, GLOG_minloglevel="1", OMP_NUM_THREADS="1", CAFFELIKE_DATA_WORKERS="0")
    return subprocess.run([PYTHON, "-m", "caffelike", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def _error(proc: subprocess.CompletedProcess, command: str) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    errors = [m for line in proc.stderr.splitlines() if (m := ERROR_LINE.match(line))]
    assert len(errors) == 1 and errors[0].group(1) == command, proc.stderr[-2000:]
    return errors[0].group(2)


def test_subprocess_unknown_bottom(sgd_case):
    edit(sgd_case / "train_val.prototxt", 'bottom: "pool1"', 'bottom: "pool9"')
    message = _error(_run(sgd_case, "train", "-solver", "solver.prototxt"), "train")
    assert_located(message, "train_val.prototxt", layer_line(sgd_case / "train_val.prototxt", "ip1"),
                   "ip1", "InnerProduct")


def test_subprocess_truncated_weights(sgd_case):
    data = (sgd_case / "init.caffemodel").read_bytes()
    (sgd_case / "init.caffemodel").write_bytes(data[:100])
    message = _error(_run(sgd_case, "train", "-solver", "solver.prototxt", "-weights", "init.caffemodel"), "train")
    assert message.startswith("init.caffemodel: ")


def test_subprocess_explicit_gpu_without_one(sgd_case):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = _run(sgd_case, "train", "-solver", "solver.prototxt", "-gpu", "0")
    message = _error(proc, "train")
    assert "GPU 0" in message and "CPU" in message
    assert "Torch not compiled with CUDA" not in proc.stderr and "cudaGetDeviceCount" not in proc.stderr


def test_subprocess_unknown_command(tmp_path):
    proc = _run(tmp_path, "trian")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[0] == "caffelike: error: unknown command 'trian'"


def test_subprocess_sigint_stops_with_a_snapshot(sgd_case):
    """A real Ctrl-C (SIGINT, default effect "stop") on ``caffelike train``: exit 0, the snapshot
    at the stopping iteration is written whole (solver.cpp Solve: snapshot_after_train), and the
    log says "Optimization stopped early."."""
    import re
    import signal
    import time

    edit(sgd_case / "solver.prototxt", "max_iter: 40", "max_iter: 1000000")
    edit(sgd_case / "solver.prototxt", "snapshot: 20", "snapshot: 8")
    env = dict(os.environ, GLOG_minloglevel="0", OMP_NUM_THREADS="1", CAFFELIKE_DATA_WORKERS="0")
    proc = subprocess.Popen([PYTHON, "-m", "caffelike", "train", "-solver", "solver.prototxt"], cwd=sgd_case,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first = sgd_case / "snapshots" / "tinybn_iter_8.solverstate"
    try:
        deadline = time.monotonic() + 120
        while not first.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "no snapshot at iteration 8"
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err and "Optimization stopped early." in err
    written = [int(m.group(1)) for m in re.finditer(r"Snapshotting to binary proto file "
                                                     r"snapshots/tinybn_iter_(\d+)\.caffemodel", err)]
    last = written[-1]
    assert last >= 8
    assert (sgd_case / "snapshots" / f"tinybn_iter_{last}.caffemodel").exists()
    assert (sgd_case / "snapshots" / f"tinybn_iter_{last}.solverstate").exists()
    assert not [p for p in (sgd_case / "snapshots").iterdir() if p.name.startswith(".")]
