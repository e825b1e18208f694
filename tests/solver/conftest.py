"""Fixtures of the solver tests: one thread for torch, the golden runs trained once, Caffe's log tools."""
from __future__ import annotations

import pathlib
import shutil

import pytest
import torch

from .caffe_tools import prepare_tools
from .helpers import CASES, LOGS, SOLVERS, copy_case, run_train


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny nets run fastest (and alike on any machine) on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _train_once(work: pathlib.Path) -> tuple[pathlib.Path, int, list[str]]:
    """``caffelike train -solver solver.prototxt -weights init.caffemodel`` in ``work``, one thread."""
    mp = pytest.MonkeyPatch()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        status, lines = run_train(work, mp, "-solver", "solver.prototxt", "-weights", "init.caffemodel")
    finally:
        mp.undo()
        torch.set_num_threads(before)
    return work, status, lines


@pytest.fixture(scope="session")
def golden_runs(tmp_path_factory):
    """Each golden case trained once by ``caffelike train``: case -> (workdir, status, log lines)."""
    return {case: _train_once(copy_case(case, tmp_path_factory.mktemp("golden"))) for case in CASES}


@pytest.fixture(scope="session")
def two_test_nets_run(tmp_path_factory):
    """golden/logs/two_test_nets trained once: (workdir, status, log lines).

    Its solver and net come from the log fixture, its data and weights from solvers/sgd_step.
    """
    work = tmp_path_factory.mktemp("two_test_nets")
    for name in ("solver.prototxt", "train_val.prototxt"):
        shutil.copy(LOGS / "two_test_nets" / name, work / name)
    for name in ("train.h5", "test.h5", "train_list.txt", "test_list.txt", "init.caffemodel"):
        shutil.copy(SOLVERS / "sgd_step" / name, work / name)
    (work / "snapshots").mkdir()
    return _train_once(work)


@pytest.fixture(scope="session")
def caffe_tools(tmp_path_factory) -> pathlib.Path:
    """A folder with real Caffe's parse_log.py (made Python 3), extract_seconds.py and parse_log.sh."""
    return prepare_tools(tmp_path_factory.mktemp("caffe_tools"))
