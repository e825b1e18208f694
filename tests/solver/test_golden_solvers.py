"""`caffelike train -solver solver.prototxt -weights init.caffemodel` on real Caffe's runs.

Ground truth: tests/golden/solvers/<case>/ (copied from ../shared/golden/solvers, see
tests/golden/NETS.md §3): per-iteration displayed loss and lr (losses.csv), test outputs
(tests.csv), and the snapshots Caffe wrote. Tolerances from tests/golden/README.md.
"""
from __future__ import annotations

import numpy as np
import pytest

from .helpers import (CASES, NOISE_BIAS, NOT_COMPARABLE, RUN_RTOL, SOLVERS, assert_close_scaled,
                      losses_from_log, model_blobs, parse_test_outputs, read_csv, solverstate)


@pytest.mark.parametrize("case", CASES)
def test_losses_and_lr_per_iteration(golden_runs, case):
    work, status, lines = golden_runs[case]
    assert status == 0
    ours = losses_from_log(lines)
    rtol = RUN_RTOL.get(case, 1e-3)
    rows = read_csv(SOLVERS / case / "losses.csv")
    assert sorted(ours) == sorted(int(r["iter"]) for r in rows)
    for row in rows:
        it = int(row["iter"])
        mine = ours[it]
        if row.get("final_forward_only") == "1":
            assert float(mine["final"]) == pytest.approx(float(row["loss"]), rel=rtol), it
            continue
        assert mine["lr"] == row["lr"], it  # printed rate: exact
        assert float(mine["loss"]) == pytest.approx(float(row["loss"]), rel=rtol), it


@pytest.mark.parametrize("case", CASES)
def test_test_net_outputs(golden_runs, case):
    work, status, lines = golden_runs[case]
    rtol = RUN_RTOL.get(case, 1e-3)
    want = read_csv(SOLVERS / case / "tests.csv")
    got = parse_test_outputs(lines)
    assert [(g[0], g[1], g[2], g[3]) for g in got] == \
        [(int(w["iter"]), int(w["test_net"]), int(w["output_index"]), w["name"]) for w in want]
    for g, w in zip(got, want):
        if w["name"] == "accuracy":  # a count over 64 samples: one flipped sample is 1/64
            assert abs(float(g[4]) - float(w["value"])) <= 1 / 64 + 1e-6
        else:
            assert float(g[4]) == pytest.approx(float(w["value"]), rel=max(rtol, 1e-3), abs=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_snapshots_same_names_and_weights(golden_runs, case):
    work, status, lines = golden_runs[case]
    rtol = RUN_RTOL.get(case, 1e-3)
    skip = NOT_COMPARABLE.get(case, {})  # each with its reason in helpers.NOT_COMPARABLE
    want_dir = SOLVERS / case / "snapshots"
    assert sorted(p.name for p in (work / "snapshots").iterdir()) == sorted(p.name for p in want_dir.iterdir())
    for model in want_dir.glob("*.caffemodel"):
        got, want = model_blobs(work / "snapshots" / model.name), model_blobs(model)
        assert list(got) == list(want)
        for key in want:
            assert got[key].shape == want[key].shape, key
            if key not in skip:
                assert_close_scaled(got[key], want[key], rtol=rtol)


@pytest.mark.parametrize("case", CASES)
def test_solverstate_fields_match_caffe(golden_runs, case):
    """Our .solverstate holds Caffe's fields, in Caffe's layout (history count/order/shapes)."""
    work, status, lines = golden_runs[case]
    rtol = RUN_RTOL.get(case, 1e-3)
    for want_path in (SOLVERS / case / "snapshots").glob("*.solverstate"):
        got, want = solverstate(work / "snapshots" / want_path.name), solverstate(want_path)
        assert [f.name for f, _ in got.ListFields()] == [f.name for f, _ in want.ListFields()]
        assert (got.iter, got.learned_net, got.current_step) == (want.iter, want.learned_net, want.current_step)
        assert len(got.history) == len(want.history)
        keys = list(model_blobs(SOLVERS / case / want.learned_net))
        for k, (g, w) in enumerate(zip(got.history, want.history)):
            assert [f.name for f, _ in g.ListFields()] == [f.name for f, _ in w.ListFields()]
            assert list(g.shape.dim) == list(w.shape.dim)
            if NOT_COMPARABLE.get(case, {}).get(keys[k % len(keys)]) == NOISE_BIAS:
                continue  # Adam's moments of the noise-driven bias
            assert_close_scaled(np.asarray(g.data), np.asarray(w.data), rtol=rtol)
