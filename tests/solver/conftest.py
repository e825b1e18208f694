"""Fixtures of the solver tests: one thread for torch, and the golden cases trained once."""
from __future__ import annotations

import pytest
import torch

from .helpers import CASES, copy_case, run_train


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny nets run fastest (and alike on any machine) on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def golden_runs(tmp_path_factory):
    """Each golden case trained once by ``caffelike train``: case -> (workdir, status, log lines)."""
    mp = pytest.MonkeyPatch()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    try:
        for case in CASES:
            work = copy_case(case, tmp_path_factory.mktemp("golden"))
            status, lines = run_train(work, mp, "-solver", "solver.prototxt", "-weights", "init.caffemodel")
            out[case] = (work, status, lines)
    finally:
        mp.undo()
        torch.set_num_threads(before)
    return out
