"""The net set-up log, line by line, against real Caffe's own log of the same net.

Golden data: tests/golden/solvers/sgd_step/log.txt (``caffe train`` on train_val.prototxt,
NETS.md §3): its ``net.cpp`` lines for the TRAIN net and the TEST net, the lines of the Split
layers Caffe inserts for fan-out and the "Memory required" totals included.
"""
from __future__ import annotations

import logging
import re

import pytest

import caffelike
from caffelike.net import Net

from .conftest import GOLDEN

CASE = GOLDEN / "solvers" / "sgd_step"


def _caffe_nets() -> list[list[str]]:
    """net.cpp messages of each net Caffe built, in order."""
    nets, current = [], []
    for line in (CASE / "log.txt").read_text().splitlines():
        m = re.match(r"^I\d{4} [\d:.]+ +\d+ net\.cpp:\d+\] (.*)$", line)
        if not m:
            continue
        current.append(m.group(1))
        if m.group(1) == "Network initialization done.":
            nets.append(current)
            current = []
    return nets


def _normalise(messages: list[str]) -> list[str]:
    return [msg for msg in messages if not msg.startswith("Initializing net from parameters")]


@pytest.mark.parametrize("index,phase", [(0, caffelike.TRAIN), (1, caffelike.TEST)])
def test_setup_log_matches_caffe(index, phase, caplog, monkeypatch):
    caffe = _caffe_nets()[index]
    monkeypatch.chdir(CASE)  # the HDF5 list file names are relative, as Caffe ran them
    with caplog.at_level(logging.INFO, logger="caffelike.net"):
        Net("train_val.prototxt", phase)
    ours = [r.getMessage() for r in caplog.records if r.name == "caffelike.net"]
    # Caffe logs the "differed from the phase" lines while the solver filters both nets first.
    assert _normalise(ours) == _normalise(caffe)
