"""The book's mouth Simpleconv3 solver trains from the repository and Caffe's log tools read its log.

models/mouth/simpleconv3/solver.prototxt on the bundled data/mouth images, with max_iter
shortened; real Caffe's parse_log.py and parse_log.sh (caffe_tools.py) must give the tables they
give for real Caffe's logs: NumIters, Seconds, LearningRate, then the net's outputs.
"""
from __future__ import annotations

import pathlib
import re

import pytest

from caffelike.cli import main

from .caffe_tools import csv_rows, run_parse_log_py, run_parse_log_sh, sh_rows

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


def test_book_mouth_solver_trains_and_its_log_parses(tmp_path, monkeypatch, caffe_tools):
    solver = _short_solver(tmp_path)
    monkeypatch.chdir(ROOT)
    logdir = tmp_path / "logs"
    assert main(["train", "-solver", str(solver), "-log_dir", str(logdir)]) == 0
    log = next(p for p in logdir.iterdir() if not p.is_symlink())
    assert (tmp_path / "mouth_iter_6.caffemodel").exists()
    assert run_parse_log_py(caffe_tools, log, tmp_path / "py").returncode == 0
    train, test = (csv_rows(tmp_path / "py" / f"{log.name}.{kind}") for kind in ("train", "test"))
    assert [r["NumIters"] for r in train] == [str(float(i)) for i in range(6)]
    assert [r["NumIters"] for r in test] == ["3.0", "6.0"]
    for row in train + test:
        assert list(row) == ["NumIters", "Seconds", "LearningRate", "acc", "loss"]
        assert float(row["LearningRate"]) == pytest.approx(0.001)
    assert run_parse_log_sh(caffe_tools, log, tmp_path / "sh").returncode == 0
    train, test = (sh_rows(tmp_path / "sh" / f"{log.name}.{kind}") for kind in ("train", "test"))
    assert [r["Iters"] for r in train] == [str(i) for i in range(6)] + ["6"]  # + the final forward
    assert all(r["LearningRate"] == "0.001" for r in train[:-1])
    assert [r["Iters"] for r in test] == ["3", "6"]
    assert all(list(r) == ["Iters", "Seconds", "TestAccuracy", "TestLoss"] for r in test)
