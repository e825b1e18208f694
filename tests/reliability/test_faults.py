"""Issue 9, row 2: faults during training.

* a snapshot write that fails half-way (ENOSPC) or a process killed between write and rename
  leaves the previous file intact and nothing torn under the final name;
* ``-sigint_effect`` / ``-sighup_effect`` act as tools/caffe.cpp documents (SIGINT: stop,
  SIGHUP: snapshot by default) with solver.cpp's flow: the request is polled after each
  ApplyUpdate; "snapshot" writes ``<prefix>_iter_<iter>`` and carries on; "stop" ends Step,
  then Solve still writes the snapshot_after_train snapshot and logs "Optimization stopped early.";
* a run killed with SIGKILL resumes from its last snapshot and, when that snapshot lies on an
  epoch boundary (golden README: the solverstate has no reader position), ends with Caffe's
  own final weights (golden/solvers/sgd_step/snapshots/tinybn_iter_40.caffemodel).
"""
from __future__ import annotations

import errno
import os
import pathlib
import signal
import subprocess
import textwrap
import time

import numpy as np
import pytest

from caffelike.cli import main

from .helpers import PYTHON, ROOT, SOLVERS, edit, run_cli, tree_digest

class _FullDisk:
    """A file handle that accepts half of a write, then fails with ENOSPC."""

    def __init__(self, handle):
        self._handle = handle

    def write(self, data):
        self._handle.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._handle.__exit__(*exc)


def _fill_disk(monkeypatch):
    import caffelike.io.atomic as atomic

    real = os.fdopen
    monkeypatch.setattr(atomic.os, "fdopen", lambda *a, **k: _FullDisk(real(*a, **k)))


def _strays(folder: pathlib.Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".tmp")


def test_atomic_write_enospc_keeps_the_previous_file(tmp_path, monkeypatch):
    from caffelike.io.atomic import atomic_write

    target = tmp_path / "w.caffemodel"
    target.write_bytes(b"previous snapshot")
    _fill_disk(monkeypatch)
    with pytest.raises(OSError) as info:
        with atomic_write(target, "wb") as handle:
            handle.write(b"x" * 4096)
    assert info.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"previous snapshot"
    assert _strays(tmp_path) == []


def test_solver_snapshot_enospc_keeps_the_previous_snapshot(sgd_case, monkeypatch):
    from caffelike.solver.loop import Solver

    edit(sgd_case / "solver.prototxt", "max_iter: 40", "max_iter: 2")
    solver = Solver(str(sgd_case / "solver.prototxt"))
    solver.step(2)
    solver.snapshot()
    snaps = sgd_case / "snapshots"
    before = tree_digest(snaps)
    assert sorted(before) == ["tinybn_iter_2.caffemodel", "tinybn_iter_2.solverstate"]
    solver.step(0)
    with torch_no_change(solver):
        _fill_disk(monkeypatch)
        with pytest.raises(Exception) as info:
            solver.snapshot()  # same iteration: the same file names
    assert isinstance(info.value, OSError) or "No space left" in str(info.value)
    assert tree_digest(snaps) == before
    assert _strays(snaps) == []


def test_solverstate_enospc_keeps_the_previous_model_and_state(sgd_case, monkeypatch):
    """The model write succeeds, the solverstate write fails: both earlier files must survive."""
    import caffelike.solver.snapshot as snap
    from caffelike.solver.loop import Solver

    solver = Solver(str(sgd_case / "solver.prototxt"))
    solver.step(2)
    solver.snapshot()
    snaps = sgd_case / "snapshots"
    before = tree_digest(snaps)
    solver.step(1)
    solver.iter = 2  # a later run (or resume) saving under the same name
    real = snap.write_binary_state

    def failing_state(state, path):
        _fill_disk(monkeypatch)
        return real(state, path)

    monkeypatch.setattr(snap, "write_binary_state", failing_state)
    with pytest.raises(Exception, match="No space left"):
        solver.snapshot()
    assert tree_digest(snaps) == before
    assert _strays(snaps) == []


@pytest.mark.parametrize("failing", ["model", "state"])
def test_hdf5_snapshot_enospc_keeps_the_previous_snapshot(sgd_case, monkeypatch, failing):
    """snapshot_format: HDF5: a dataset write failing half-way (in the .caffemodel.h5 or in the
    .solverstate.h5) leaves the earlier .h5 files whole."""
    import h5py

    from caffelike.solver.loop import Solver

    edit(sgd_case / "solver.prototxt", "solver_mode: CPU", "solver_mode: CPU\nsnapshot_format: HDF5")
    solver = Solver(str(sgd_case / "solver.prototxt"))
    solver.step(2)
    solver.snapshot()
    snaps = sgd_case / "snapshots"
    before = tree_digest(snaps)
    assert sorted(before) == ["tinybn_iter_2.caffemodel.h5", "tinybn_iter_2.solverstate.h5"]
    real = h5py.Group.create_dataset
    calls = []

    def full_disk(self, *args, **kwargs):
        name = args[0] if args else kwargs.get("name")
        calls.append(name)
        if (failing == "model" and len(calls) == 3) or (failing == "state" and name == "current_step"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", full_disk)
    with pytest.raises(Exception, match="No space left"):
        solver.snapshot()
    assert tree_digest(snaps) == before
    assert _strays(snaps) == []


class torch_no_change:
    """Context manager asserting the solver's weights are untouched by a failed snapshot."""

    def __init__(self, solver):
        self.solver = solver

    def __enter__(self):
        self.before = [p.tensor.detach().clone() for p in self.solver.net.learnable_params]

    def __exit__(self, *exc):
        after = [p.tensor.detach() for p in self.solver.net.learnable_params]
        assert all(bool((a == b).all()) for a, b in zip(self.before, after))
        return False


def test_cli_enospc_is_one_line_and_keeps_earlier_snapshots(sgd_case, monkeypatch, capsys):
    import caffelike.solver.snapshot as snap

    edit(sgd_case / "solver.prototxt", "max_iter: 40", "max_iter: 4")
    edit(sgd_case / "solver.prototxt", "snapshot: 20", "snapshot: 2")
    real = snap.write_binary_model
    calls = []

    def model_writer(net_param, path):
        calls.append(path)
        if len(calls) == 2:
            _fill_disk(monkeypatch)
        return real(net_param, path)

    monkeypatch.setattr(snap, "write_binary_model", model_writer)
    result = run_cli(capsys, "train", "-solver", "solver.prototxt")
    assert "tinybn_iter_4.caffemodel" in result.error and "No space left on device" in result.error
    names = sorted(p.name for p in (sgd_case / "snapshots").iterdir())
    assert names == ["tinybn_iter_2.caffemodel", "tinybn_iter_2.solverstate"]


def test_kill_between_write_and_rename_leaves_no_torn_file(tmp_path):
    """A real SIGKILL while the new content sits in the temp file, before os.replace."""
    target = tmp_path / "m.caffemodel"
    target.write_bytes(b"previous snapshot")
    ready = tmp_path / "ready"
    script = textwrap.dedent(f"""
        import os, time
        import caffelike.io.atomic as atomic
        def stalled_replace(src, dst):
            open({str(ready)!r}, "w").close()
            time.sleep(60)
        atomic.os.replace = stalled_replace
        with atomic.atomic_write({str(target)!r}, "wb") as f:
            f.write(b"new content, fully written and fsynced")
    """)
    proc = subprocess.Popen([PYTHON, "-c", script], cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "writer did not reach the rename"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert target.read_bytes() == b"previous snapshot"
    leftovers = [p for p in tmp_path.iterdir() if p.name not in ("m.caffemodel", "ready")]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".m.caffemodel.")
    assert leftovers[0].name.endswith(".tmp")  # never mistaken for a snapshot


# ------------------------------------------------------------------------------- signals
def _signal_after(monkeypatch, signum: int, at_iter: int):
    """Deliver ``signum`` to this process right after the update that ends iteration ``at_iter``."""
    from caffelike.solver.loop import Solver

    real = Solver.apply_update

    def apply_update(self):
        real(self)
        if self.iter + 1 == at_iter:  # apply_update leaves the count to Step, as Caffe's
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(Solver, "apply_update", apply_update)


def _train_with_signal(case, monkeypatch, capsys, signum, flags=()):
    edit(case / "solver.prototxt", "max_iter: 40", "max_iter: 6")
    edit(case / "solver.prototxt", "snapshot: 20", "snapshot: 0")
    monkeypatch.setenv("GLOG_minloglevel", "0")
    _signal_after(monkeypatch, signum, 3)
    capsys.readouterr()
    status = main(["train", "-solver", "solver.prototxt", *flags])
    err = capsys.readouterr().err
    names = sorted(p.name for p in (case / "snapshots").glob("*.caffemodel"))
    return status, names, err


@pytest.mark.parametrize("signum,flags,expected,stopped", [
    (signal.SIGHUP, (), ["tinybn_iter_3.caffemodel", "tinybn_iter_6.caffemodel"], False),
    (signal.SIGINT, (), ["tinybn_iter_3.caffemodel"], True),
    (signal.SIGINT, ("-sigint_effect", "snapshot"), ["tinybn_iter_3.caffemodel", "tinybn_iter_6.caffemodel"], False),
    (signal.SIGINT, ("-sigint_effect", "none"), ["tinybn_iter_6.caffemodel"], False),
    (signal.SIGHUP, ("-sighup_effect", "stop"), ["tinybn_iter_3.caffemodel"], True),
    (signal.SIGHUP, ("-sighup_effect", "none"), ["tinybn_iter_6.caffemodel"], False),
], ids=["hup_default_snapshot", "int_default_stop", "int_snapshot", "int_none", "hup_stop", "hup_none"])
def test_signal_effects(sgd_case, monkeypatch, capsys, signum, flags, expected, stopped):
    status, names, err = _train_with_signal(sgd_case, monkeypatch, capsys, signum, flags)
    assert status == 0, err[-2000:]
    assert "Traceback" not in err
    assert names == expected
    assert ("Optimization stopped early." in err) == stopped
    assert "Optimization Done." in err  # caffe.cpp's train() logs it after Solve() returns, stopped or not


def test_bad_signal_effect_is_a_one_line_error(sgd_case, capsys):
    result = run_cli(capsys, "train", "-solver", "solver.prototxt", "-sigint_effect", "pause")
    assert "sigint_effect" in result.error and "pause" in result.error


# ------------------------------------------------------------------------------- SIGKILL + resume
def _read_params(path: pathlib.Path) -> dict:
    from caffelike.io import load_weights

    return load_weights(str(path))


@pytest.mark.slow
def test_sigkill_then_resume_at_an_epoch_boundary_matches_caffe(sgd_case):
    """Kill a real ``python -m caffelike train`` after its iteration-16 snapshot (2 epochs of 8
    batches), resume to 40 and compare with Caffe's uninterrupted run (whole-run rtol 1e-3,
    golden README)."""
    long = sgd_case / "long_solver.prototxt"
    text = (sgd_case / "solver.prototxt").read_text()
    long.write_text(text.replace("max_iter: 40", "max_iter: 100000").replace("snapshot: 20", "snapshot: 16"))
    env = dict(os.environ, GLOG_minloglevel="1", CAFFELIKE_DATA_WORKERS="0", OMP_NUM_THREADS="1")
    state = sgd_case / "snapshots" / "tinybn_iter_16.solverstate"
    proc = subprocess.Popen([PYTHON, "-m", "caffelike", "train", "-solver", long.name, "-weights",
                             "init.caffemodel"], cwd=sgd_case, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not state.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no snapshot at iteration 16 within 120 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    for p in (sgd_case / "snapshots").iterdir():  # kept snapshots come whole, in pairs
        if p.suffix == ".solverstate":
            assert p.with_suffix(".caffemodel").exists()
    status = subprocess.run([PYTHON, "-m", "caffelike", "train", "-solver", "solver.prototxt",
                             "-snapshot", str(state.relative_to(sgd_case))], cwd=sgd_case, env=env,
                            capture_output=True, text=True, timeout=300)
    assert status.returncode == 0, status.stderr[-3000:]
    ours = _read_params(sgd_case / "snapshots" / "tinybn_iter_40.caffemodel")
    caffe = _read_params(SOLVERS / "sgd_step" / "snapshots" / "tinybn_iter_40.caffemodel")
    assert ours.keys() == caffe.keys()
    for layer, blobs in caffe.items():
        for i, (a, b) in enumerate(zip(ours[layer], blobs)):
            scale = float(np.abs(b).max()) or 1.0
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3 * scale, err_msg=f"{layer}[{i}]")
