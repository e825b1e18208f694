"""`caffelike train/test/time/device_query`: flags, errors, devices, signals, HDF5 snapshots."""
from __future__ import annotations

import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import torch

from caffelike.cli import main

from .helpers import SOLVERS, copy_case, read_csv, run_train

ROOT = pathlib.Path(__file__).resolve().parents[2]
NO_CUDA = not torch.cuda.is_available()


def _edit(work: pathlib.Path, **fields) -> None:
    """Replace (or add) top-level scalar fields of work/solver.prototxt."""
    text = (work / "solver.prototxt").read_text()
    for key, value in fields.items():
        line = f"{key}: {value}"
        text, n = re.subn(rf"(?m)^{key}: .*$", line, text)
        if not n:
            text += line + "\n"
    (work / "solver.prototxt").write_text(text)


def test_train_needs_a_solver(capsys):
    assert main(["train"]) == 1
    assert "need a solver definition to train" in capsys.readouterr().err


def test_weights_and_snapshot_together_is_an_error(tmp_path, monkeypatch, capsys):
    work = copy_case("sgd_step", tmp_path)
    monkeypatch.chdir(work)
    assert main(["train", "-solver", "solver.prototxt", "-weights", "init.caffemodel",
                 "-snapshot", "x.solverstate"]) == 1
    assert "but not both" in capsys.readouterr().err


def test_bad_signal_effect_is_an_error(capsys):
    assert main(["train", "-solver", "s.prototxt", "-sigint_effect", "exit"]) == 1
    assert "invalid signal effect 'exit'" in capsys.readouterr().err


@pytest.mark.skipif(not NO_CUDA, reason="needs a machine without CUDA")
def test_explicit_gpu_without_cuda_is_a_device_error(tmp_path, monkeypatch, capsys):
    work = copy_case("sgd_step", tmp_path)
    monkeypatch.chdir(work)
    assert main(["train", "-solver", "solver.prototxt", "-gpu", "0"]) == 1
    err = capsys.readouterr().err
    assert "GPU 0 was requested but no CUDA device is available" in err
    assert main(["device_query", "-gpu", "0"]) == 1


@pytest.mark.skipif(not NO_CUDA, reason="needs a machine without CUDA")
def test_solver_mode_gpu_falls_back_to_cpu_with_one_warning(tmp_path, monkeypatch):
    work = copy_case("sgd_step", tmp_path)
    _edit(work, solver_mode="GPU", max_iter=2, snapshot=0, test_interval=100)
    status, lines = run_train(work, monkeypatch, "-solver", "solver.prototxt", "-weights", "init.caffemodel")
    assert status == 0
    warnings = [l for l in lines if l.startswith("W")]
    assert len(warnings) == 1 and "no CUDA device is available; training on the CPU" in warnings[0]
    assert (work / "snapshots" / "tinybn_iter_2.caffemodel").exists()  # snapshot_after_train


def test_average_loss_smoothing_is_caffes(tmp_path, monkeypatch):
    """UpdateSmoothedLoss (solver.cpp): running mean of the last average_loss iteration losses."""
    work = copy_case("sgd_step", tmp_path)
    _edit(work, average_loss=3, max_iter=8, test_interval=100, snapshot=0)
    status, lines = run_train(work, monkeypatch, "-solver", "solver.prototxt", "-weights", "init.caffemodel")
    raw = [float(m.group(1)) for l in lines if (m := re.search(r"Train net output #0: loss = (\S+) ", l))]
    shown = [float(m.group(1)) for l in lines if (m := re.search(r"\] Iteration \d+ \(.*loss = (\S+)$", l))]
    assert len(raw) == len(shown) == 8
    for i, s in enumerate(shown):
        window = raw[max(0, i - 2): i + 1]
        assert s == pytest.approx(sum(window) / len(window), rel=2e-5)


def test_hdf5_snapshots_and_resume(tmp_path, monkeypatch):
    """snapshot_format: HDF5 writes .caffemodel.h5/.solverstate.h5; resuming from it is exact."""
    def setup(name):
        work = copy_case("sgd_step", tmp_path / name)
        _edit(work, snapshot_format="HDF5", max_iter=24, snapshot=16, test_interval=100)
        return work

    full = setup("full")
    assert run_train(full, monkeypatch, "-solver", "solver.prototxt", "-weights", "init.caffemodel")[0] == 0
    names = sorted(p.name for p in (full / "snapshots").iterdir())
    assert names == ["tinybn_iter_16.caffemodel.h5", "tinybn_iter_16.solverstate.h5",
                     "tinybn_iter_24.caffemodel.h5", "tinybn_iter_24.solverstate.h5"]
    with h5py.File(full / "snapshots" / "tinybn_iter_16.solverstate.h5") as h5:
        assert int(h5["iter"][0]) == 16 and int(h5["current_step"][0]) == 1
        assert h5["learned_net"][()].decode() == "snapshots/tinybn_iter_16.caffemodel.h5"
        assert len(h5["history"]) == 11
    resumed = setup("resumed")
    for ext in (".caffemodel.h5", ".solverstate.h5"):
        shutil.copy(full / "snapshots" / f"tinybn_iter_16{ext}", resumed / "snapshots")
    assert run_train(resumed, monkeypatch, "-solver", "solver.prototxt",
                     "-snapshot", "snapshots/tinybn_iter_16.solverstate.h5")[0] == 0
    with h5py.File(full / "snapshots" / "tinybn_iter_24.caffemodel.h5") as a, \
            h5py.File(resumed / "snapshots" / "tinybn_iter_24.caffemodel.h5") as b:
        for layer in a["data"]:
            for i in a["data"][layer]:
                np.testing.assert_array_equal(a["data"][layer][i][()], b["data"][layer][i][()])


def test_test_command_scores_caffes_snapshot(tmp_path, monkeypatch):
    """`caffe test` on Caffe's iteration-20 weights gives the Test net outputs Caffe logged at 20."""
    work = copy_case("sgd_step", tmp_path)
    monkeypatch.chdir(work)
    weights = SOLVERS / "sgd_step" / "snapshots" / "tinybn_iter_20.caffemodel"
    logdir = tmp_path / "logs"
    assert main(["test", "-model", "train_val.prototxt", "-weights", str(weights),
                 "-iterations", "2", "-log_dir", str(logdir)]) == 0
    text = next(p for p in logdir.iterdir() if not p.is_symlink()).read_text()
    want = {r["name"]: float(r["value"]) for r in read_csv(SOLVERS / "sgd_step" / "tests.csv") if r["iter"] == "20"}
    assert re.search(r"\] Batch 0, accuracy = \S+", text) and re.search(r"\] Batch 1, loss = \S+", text)
    assert re.search(r"\] Loss: \S+", text)
    acc = float(re.search(r"\] accuracy = (\S+)$", text, re.M).group(1))
    loss = re.search(r"\] loss = (\S+) \(\* 1 = (\S+) loss\)$", text, re.M)
    assert acc == pytest.approx(want["accuracy"], abs=1e-6)
    assert float(loss.group(1)) == pytest.approx(want["loss"], rel=1e-4)


def test_time_command_prints_caffes_summary(tmp_path, monkeypatch):
    work = copy_case("sgd_step", tmp_path)
    monkeypatch.chdir(work)
    logdir = tmp_path / "logs"
    assert main(["time", "-model", "train_val.prototxt", "-iterations", "2", "-log_dir", str(logdir)]) == 0
    text = next(p for p in logdir.iterdir() if not p.is_symlink()).read_text()
    for layer in ("data", "conv1", "bn1", "ip2", "loss"):
        assert re.search(rf"\] +{layer}\tforward: \S+ ms\.$", text, re.M), layer
        assert re.search(rf"\] +{layer}\tbackward: \S+ ms\.$", text, re.M), layer
    for line in ("Average Forward pass: ", "Average Backward pass: ", "Average Forward-Backward: ",
                 "Total Time: ", "*** Benchmark ends ***", "Iteration: 2 forward-backward time: "):
        assert line in text


def _spawn_train(work: pathlib.Path, *flags: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.pop("GLOG_minloglevel", None)
    return subprocess.Popen([sys.executable, "-m", "caffelike", "train", "-solver", "solver.prototxt",
                             "-weights", "init.caffemodel", *flags], cwd=work, env=env,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(proc: subprocess.Popen, pattern: str, timeout: float = 120) -> list[str]:
    lines, deadline = [], time.time() + timeout
    while time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if re.search(pattern, line):
            return lines
    raise AssertionError("never saw " + pattern + "\n" + "".join(lines[-20:]))


def test_sigint_stops_with_a_snapshot_and_sighup_snapshots(tmp_path):
    """Caffe's defaults: SIGHUP -> snapshot and go on; SIGINT (stop) -> final snapshot, exit 0."""
    work = copy_case("sgd_step", tmp_path)
    _edit(work, max_iter=100000, snapshot=0, test_interval=1000)
    proc = _spawn_train(work)
    try:
        _wait_for(proc, r"\] Iteration 3, lr = ")
        proc.send_signal(signal.SIGHUP)
        _wait_for(proc, r"Snapshotting solver state to binary proto file snapshots/tinybn_iter_\d+\.solverstate")
        _wait_for(proc, r"\] Iteration \d+, lr = ")  # still training
        proc.send_signal(signal.SIGINT)
        rest = _wait_for(proc, r"Optimization stopped early\.")
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    snaps = sorted((work / "snapshots").glob("*.solverstate"))
    assert len(snaps) == 2
    assert any("Snapshotting to binary proto file" in l for l in rest)


def test_glog_environment(tmp_path, monkeypatch, capsys):
    """GLOG_minloglevel=1 keeps only warnings and worse; GLOG_log_dir gets the log file."""
    work = copy_case("sgd_step", tmp_path)
    _edit(work, max_iter=2, snapshot=0, test_interval=100)
    monkeypatch.chdir(work)
    monkeypatch.setenv("GLOG_minloglevel", "1")
    monkeypatch.setenv("GLOG_log_dir", str(tmp_path / "glog"))
    monkeypatch.delenv("GLOG_logtostderr", raising=False)
    assert main(["train", "-solver", "solver.prototxt", "-weights", "init.caffemodel"]) == 0
    err = capsys.readouterr().err
    assert "Iteration 1" not in err
    assert any(p.name.startswith("caffelike.") for p in (tmp_path / "glog").iterdir())
    monkeypatch.setenv("GLOG_minloglevel", "0")
    assert main(["train", "-solver", "solver.prototxt", "-weights", "init.caffemodel"]) == 0
    assert "Iteration 1, lr = 0.05" in capsys.readouterr().err


def test_debug_info_lines(tmp_path, monkeypatch):
    """debug_info: Caffe's [Forward]/[Backward]/[Update] lines (net.cpp *DebugInfo)."""
    work = copy_case("sgd_step", tmp_path)
    _edit(work, max_iter=1, snapshot=0, test_interval=100, debug_info="true")
    status, lines = run_train(work, monkeypatch, "-solver", "solver.prototxt", "-weights", "init.caffemodel")
    assert status == 0
    body = [l.split("] ", 1)[1] for l in lines if "] " in l]
    # iteration 0's loss top, as real Caffe printed it (losses.csv, iter 0)
    assert "    [Forward] Layer loss, top blob loss data: 1.62565" in body
    assert any(b.startswith("    [Forward] Layer conv1, param blob 1 data: ") for b in body)
    assert any(b.startswith("    [Backward] Layer ip2, bottom blob ip1 diff: ") for b in body)
    assert any(b.startswith("    [Backward] Layer conv1, param blob 0 diff: ") for b in body)
    assert any(l.startswith("E") and "[Backward] All net params (data, diff): L1 norm = (" in l for l in lines)
    assert any(b.startswith("    [Update] Layer ip2, param 1 data: ") and "; diff: " in b for b in body)
