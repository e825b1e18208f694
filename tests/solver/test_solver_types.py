"""Every solver type runs end to end through pycaffe's surface, with Caffe's history layout."""
from __future__ import annotations


import numpy as np
import pytest

import caffelike
from caffelike.errors import SolverError
from caffelike.proto import caffe_pb2
from caffelike.solver import UPDATE_RULES

from .helpers import copy_case, solverstate

HYPER = {"SGD": "momentum: 0.9", "Nesterov": "momentum: 0.9", "AdaGrad": "momentum: 0",
         "RMSProp": "momentum: 0 rms_decay: 0.98", "AdaDelta": "momentum: 0.95 delta: 1e-6",
         "Adam": "momentum: 0.9 momentum2: 0.999"}


@pytest.mark.parametrize("kind", list(UPDATE_RULES))
def test_each_type_trains_and_snapshots(kind, tmp_path, monkeypatch):
    work = copy_case("sgd_step", tmp_path)
    lines = [l for l in (work / "solver.prototxt").read_text().splitlines()
             if not l.startswith(("type:", "momentum:", "max_iter:", "snapshot:"))]
    lines += [f'type: "{kind}"', HYPER[kind], "max_iter: 3", "snapshot: 0", "clip_gradients: 10"]
    (work / "solver.prototxt").write_text("\n".join(lines) + "\n")
    monkeypatch.chdir(work)
    solver = getattr(caffelike, f"{kind}Solver")("solver.prototxt")
    solver.net.copy_from("init.caffemodel")
    before = {k: [b.data.copy() for b in v] for k, v in solver.net.params.items()}
    solver.solve()
    assert solver.iter == 3
    changed = any(not np.array_equal(b.data, before["ip2"][i]) for i, b in enumerate(solver.net.params["ip2"]))
    assert changed
    assert all(np.isfinite(b.data).all() for v in solver.net.params.values() for b in v)
    n = len(solver.net.learnable_params)
    state = solverstate(work / "snapshots" / "tinybn_iter_3.solverstate")
    assert len(state.history) == n * UPDATE_RULES[kind].history_sets
    assert state.iter == 3 and state.learned_net == "snapshots/tinybn_iter_3.caffemodel"
    assert len(solver.test_nets) == 1


def test_pycaffe_solver_classes_come_from_the_update_rule_table():
    import caffelike.solver

    names = {f"{kind}Solver" for kind in UPDATE_RULES}
    assert names <= set(dir(caffelike)) and names <= set(caffelike.__all__)
    for kind in UPDATE_RULES:
        cls = getattr(caffelike, f"{kind}Solver")
        assert cls is getattr(caffelike.solver, f"{kind}Solver")
        assert issubclass(cls, caffelike.Solver) and cls.solver_type == kind
    with pytest.raises(AttributeError):
        caffelike.AdamaxSolver  # noqa: B018


def test_get_solver_picks_type_and_legacy_enum(tmp_path, monkeypatch):
    work = copy_case("sgd_step", tmp_path)
    monkeypatch.chdir(work)
    text = (work / "solver.prototxt").read_text().replace('type: "SGD"', "solver_type: NESTEROV")
    (work / "solver.prototxt").write_text(text)
    solver = caffelike.get_solver("solver.prototxt")
    assert solver.param.type == "Nesterov"
    param = caffe_pb2.SolverParameter()
    param.CopyFrom(solver.param)
    param.type = "Adamax"
    with pytest.raises(SolverError, match="unknown solver type 'Adamax'"):
        caffelike.get_solver(param)


def test_snapshot_prefix_must_be_writable(tmp_path, monkeypatch):
    work = copy_case("sgd_step", tmp_path)
    monkeypatch.chdir(work)
    text = (work / "solver.prototxt").read_text().replace('"snapshots/tinybn"', '"missing/dir/x"')
    (work / "solver.prototxt").write_text(text)
    with pytest.raises(SolverError, match="cannot write to snapshot prefix 'missing/dir/x'"):
        caffelike.get_solver("solver.prototxt")


def test_step_reports_smoothed_loss_and_iter(tmp_path, monkeypatch):
    work = copy_case("sgd_step", tmp_path)
    monkeypatch.chdir(work)
    solver = caffelike.SGDSolver("solver.prototxt")
    solver.step(2)
    assert solver.iter == 2
