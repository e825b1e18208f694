"""Snapshots and resume: ours resume bit-exactly at an epoch boundary, Caffe's load field by field.

sgd_step's data has 256 training items in batches of 32: 8 iterations per epoch, so a
snapshot at iteration 16 is an epoch boundary (the golden README: resuming is exact only
there, since a solverstate holds no data read position).
"""
from __future__ import annotations

import shutil

import numpy as np

from .helpers import SOLVERS, copy_case, run_train, solverstate


def _epoch_solver(work):
    text = (work / "solver.prototxt").read_text()
    text = text.replace("max_iter: 40", "max_iter: 24").replace("snapshot: 20", "snapshot: 16")
    (work / "solver.prototxt").write_text(text)


def test_resume_at_epoch_boundary_equals_uninterrupted_run(tmp_path, monkeypatch):
    full = copy_case("sgd_step", tmp_path / "full")
    _epoch_solver(full)
    status, _ = run_train(full, monkeypatch, "-solver", "solver.prototxt", "-weights", "init.caffemodel")
    assert status == 0
    resumed = copy_case("sgd_step", tmp_path / "resumed")
    _epoch_solver(resumed)
    for ext in (".caffemodel", ".solverstate"):
        shutil.copy(full / "snapshots" / f"tinybn_iter_16{ext}", resumed / "snapshots")
    status, lines = run_train(resumed, monkeypatch, "-solver", "solver.prototxt",
                              "-snapshot", "snapshots/tinybn_iter_16.solverstate")
    assert status == 0
    assert any("Resuming from snapshots/tinybn_iter_16.solverstate" in l for l in lines)
    assert not any("Iteration 15 " in l for l in lines)  # no iteration before the resume point
    for ext in (".caffemodel", ".solverstate"):
        a = (full / "snapshots" / f"tinybn_iter_24{ext}").read_bytes()
        b = (resumed / "snapshots" / f"tinybn_iter_24{ext}").read_bytes()
        assert a == b, ext


def test_caffe_solverstate_restores_field_by_field(tmp_path, monkeypatch):
    """Real Caffe's iter-20 solverstate: iter, current_step, history exact; our rewrite equals it."""
    from caffelike.solver import get_solver

    for case in ("sgd_multistep_itersize2", "adam_fixed"):
        work = copy_case(case, tmp_path)
        shutil.copytree(SOLVERS / case / "snapshots", work / "snapshots", dirs_exist_ok=True)
        monkeypatch.chdir(work)
        solver = get_solver("solver.prototxt")
        caffe_state = solverstate(work / "snapshots" / "tinybn_iter_20.solverstate")
        solver.restore("snapshots/tinybn_iter_20.solverstate")
        assert solver.iter == caffe_state.iter == 20
        assert solver.current_step == caffe_state.current_step
        assert len(solver.history) == len(caffe_state.history)
        for tensor, blob in zip(solver.history, caffe_state.history):
            np.testing.assert_array_equal(tensor.numpy().ravel(), np.asarray(blob.data, np.float32))
        # the weights came from learned_net
        from .helpers import model_blobs
        want = model_blobs(work / "snapshots" / "tinybn_iter_20.caffemodel")
        for info in solver.net.learnable_params:
            np.testing.assert_array_equal(info.tensor.detach().numpy(), want[(info.layer, info.index)])
        # write it back: the same message, field for field
        (work / "snapshots" / "tinybn_iter_20.solverstate").rename(work / "caffe.solverstate")
        solver.snapshot()
        ours = solverstate(work / "snapshots" / "tinybn_iter_20.solverstate")
        assert ours == caffe_state
        assert (work / "snapshots" / "tinybn_iter_20.solverstate").read_bytes() == \
            (work / "caffe.solverstate").read_bytes()
        monkeypatch.undo()


def test_cli_resumes_from_caffes_solverstate(tmp_path, monkeypatch):
    """`caffelike train -snapshot` on real Caffe's iteration-20 state of the multistep run."""
    work = copy_case("sgd_multistep_itersize2", tmp_path)
    shutil.copytree(SOLVERS / "sgd_multistep_itersize2" / "snapshots", work / "snapshots", dirs_exist_ok=True)
    text = (work / "solver.prototxt").read_text().replace("max_iter: 40", "max_iter: 26")
    (work / "solver.prototxt").write_text(text)
    (work / "snapshots" / "tinybn_iter_40.caffemodel").unlink()
    status, lines = run_train(work, monkeypatch, "-solver", "solver.prototxt",
                              "-snapshot", "snapshots/tinybn_iter_20.solverstate")
    assert status == 0
    bodies = [l.split("] ", 1)[1] for l in lines if "] " in l]
    # restored current_step 1: lr = 0.05 * 0.3 from iteration 20; stepvalue 25 -> step 2
    assert "Iteration 20, lr = 0.015" in bodies
    assert "MultiStep Status: Iteration 25, step = 2" in bodies
    assert "Iteration 25, lr = 0.0045" in bodies
    assert not any(b.startswith("Iteration 19 ") for b in bodies)
    state = solverstate(work / "snapshots" / "tinybn_iter_26.solverstate")
    assert (state.iter, state.current_step, len(state.history)) == (26, 2, 11)
