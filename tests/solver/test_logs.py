"""Our training log's lines are the ones real Caffe prints and its log tools rely on.

These tests check our lines against the patterns of caffelike.solver.messages and against
real Caffe's logs (tests/golden/logs); test_caffe_log_tools.py runs Caffe's own parse_log.py
and parse_log.sh on our logs.
"""
from __future__ import annotations

import pytest

from caffelike.solver import messages

from .helpers import LOGS, parse_test_outputs


def test_every_line_has_a_glog_prefix_after_start(golden_runs):
    """extract_seconds.py parses the prefix of every line after the first 'Iteration'."""
    work, status, lines = golden_runs["sgd_step"]
    start = next(i for i, l in enumerate(lines) if messages.START in l)
    assert messages.GLOG_PREFIX.match(lines[start])
    first_iter = next(i for i, l in enumerate(lines) if messages.ITERATION.search(l))
    for line in lines[first_iter:]:
        assert line.strip(), "an empty line crashes extract_seconds.py"
        if not messages.GLOG_PREFIX.match(line):
            assert not messages.ITERATION.search(line) and "net output" not in line, line


def test_message_lines_as_caffe_prints_them(golden_runs):
    work, status, lines = golden_runs["sgd_multistep_itersize2"]
    bodies = [l.split("] ", 1)[1] for l in lines if messages.GLOG_PREFIX.match(l)]
    for expected in ("Solving TinyBN", "Learning Rate Policy: multistep",
                     "Iteration 0, Testing net (#0)", "    Test net output #0: accuracy = 0.203125",
                     "    Test net output #1: loss = 66.5096 (* 1 = 66.5096 loss)",
                     "MultiStep Status: Iteration 10, step = 1", "Iteration 10, lr = 0.015",
                     "Snapshotting to binary proto file snapshots/tinybn_iter_20.caffemodel",
                     "Snapshotting solver state to binary proto file snapshots/tinybn_iter_20.solverstate",
                     "Optimization Done."):
        assert expected in bodies, expected
    assert any(messages.ITERATION_LOSS.fullmatch(b) for b in bodies)


def test_number_format_is_ostream_default():
    assert messages.num(0.05) == "0.05"
    assert messages.num(66.50961) == "66.5096"
    assert messages.num(1e-5) == "1e-05"
    assert messages.num(1234567.0) == "1.23457e+06"
    assert messages.num(0.0961851) == "0.0961851"


def test_two_test_nets_selected_by_test_state(two_test_nets_run):
    """logs/two_test_nets: test_state stages pick each test net; outputs as real Caffe logged them."""
    work, status, lines = two_test_nets_run
    assert status == 0
    want = parse_test_outputs((LOGS / "two_test_nets" / "two_test_nets.log").read_text().splitlines())
    got = parse_test_outputs(lines)
    assert [g[:4] for g in got] == [w[:4] for w in want]
    assert {g[1] for g in got} == {0, 1}
    for g, w in zip(got, want):
        if g[3] == "accuracy":  # counts over 64 or 256 samples
            assert abs(float(g[4]) - float(w[4])) <= 1 / 64 + 1e-6
        else:
            assert float(g[4]) == pytest.approx(float(w[4]), rel=1e-3)
