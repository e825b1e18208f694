"""Parameters after every iteration vs real Caffe's (param_trajectory_summary.json).

The golden files hold, per iteration and parameter blob, the float64 sum, L2 norm and first
four values recorded from pycaffe's ``Solver.step(1)`` loop (bit-identical to `caffe train`).
We run the same loop through caffelike's pycaffe surface and compare L2 norms and first
values at the whole-run tolerance of tests/golden/README.md.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from .helpers import CASES, NOISE_DRIVEN, RUN_RTOL, SOLVERS, copy_case


@pytest.mark.parametrize("case", CASES)
def test_params_after_every_iteration(case, tmp_path, monkeypatch):
    import caffelike

    work = copy_case(case, tmp_path)
    monkeypatch.chdir(work)
    solver = caffelike.get_solver("solver.prototxt")
    solver.net.copy_from("init.caffemodel")
    summary = json.loads((SOLVERS / case / "param_trajectory_summary.json").read_text())
    rtol = RUN_RTOL.get(case, 1e-3)
    skip = {f"{layer}_{i}" for layer, i in NOISE_DRIVEN.get(case, {})}
    for row in summary:
        solver.step(1)
        assert solver.iter == row["iter"]
        for layer, blobs in solver.net.params.items():
            for i, blob in enumerate(blobs):
                key = f"{layer}_{i}"
                if key in skip:
                    continue
                data = blob.data.astype(np.float64).ravel()
                want = row[key]
                scale = max(1.0, float(np.abs(want["first4"]).max()))
                assert math.sqrt((data ** 2).sum()) == pytest.approx(want["l2"], rel=rtol, abs=1e-5), (row["iter"], key)
                np.testing.assert_allclose(data[:4], want["first4"], rtol=rtol, atol=1e-5 * scale,
                                           err_msg=f"iteration {row['iter']} {key}")
