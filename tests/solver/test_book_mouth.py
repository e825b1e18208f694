"""The book's mouth Simpleconv3 solver trains from the repository and parse_log.py reads its log.

models/mouth/simpleconv3/solver.prototxt on the bundled data/mouth images, with max_iter
shortened; its log must give parse_log.py the same columns real Caffe's logs give
(NumIters, Seconds, LearningRate, then the net's outputs: tests/golden/logs/*/parse_log_py).
"""
from __future__ import annotations

import csv
import os
import pathlib
import re
import subprocess
import sys

import pytest

from caffelike.cli import main
from caffelike.solver import messages

from .helpers import LOGS
from .test_logs import _table

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOLVER = ROOT / "models" / "mouth" / "simpleconv3" / "solver.prototxt"


def _short_solver(tmp_path: pathlib.Path) -> pathlib.Path:
    text = SOLVER.read_text()
    for key, value in (("max_iter", "6"), ("test_interval", "3"), ("test_iter", "2"), ("display", "1"),
                       ("snapshot", "0"), ("snapshot_prefix", f'"{tmp_path}/mouth"')):
        text = re.sub(rf"(?m)^{key}: .*$", f"{key}: {value}", text)
    path = tmp_path / "solver.prototxt"
    path.write_text(text)
    return path


def test_book_mouth_solver_trains_and_its_log_parses(tmp_path, monkeypatch):
    solver = _short_solver(tmp_path)
    monkeypatch.chdir(ROOT)
    logdir = tmp_path / "logs"
    assert main(["train", "-solver", str(solver), "-log_dir", str(logdir)]) == 0
    log = next(p for p in logdir.iterdir() if not p.is_symlink())
    lines = log.read_text().splitlines()
    assert (tmp_path / "mouth_iter_6.caffemodel").exists()
    train, test = _table(lines, messages.TRAIN_OUTPUT), _table(lines, messages.TEST_OUTPUT)
    assert [r["NumIters"] for r in train] == [float(i) for i in range(6)]
    assert [r["NumIters"] for r in test] == [3.0, 6.0]
    assert all(sorted(r) == ["LearningRate", "NumIters", "acc", "loss"] for r in train)
    assert all(sorted(r) == ["LearningRate", "NumIters", "acc", "loss"] for r in test)
    assert all(r["LearningRate"] == pytest.approx(0.001) for r in train + test)
    # real Caffe's tables start with the same three columns, then the output names
    with open(LOGS / "sgd_step" / "parse_log_py" / "sgd_step.log.train", newline="") as f:
        assert next(csv.reader(f))[:3] == ["NumIters", "Seconds", "LearningRate"]
    tool = os.environ.get("CAFFE_PARSE_LOG")
    if tool:  # the real tool, when a copy is provided outside the repository
        subprocess.run([sys.executable, tool, str(log), str(tmp_path)], check=True,
                       cwd=os.path.dirname(os.path.abspath(tool)))
        with open(tmp_path / f"{log.name}.train", newline="") as f:
            rows = list(csv.reader(f))
        assert rows[0] == ["NumIters", "Seconds", "LearningRate", "acc", "loss"] and len(rows) == 7
        with open(tmp_path / f"{log.name}.test", newline="") as f:
            rows = list(csv.reader(f))
        assert rows[0] == ["NumIters", "Seconds", "LearningRate", "acc", "loss"] and len(rows) == 3
