"""The main job (``make demo``) in a reduced form: the same solver and steps with fewer iterations.

train (caffelike train, glog log) -> plot (PNG) -> the book's inference flow on the 100 val
images; accuracy must be above chance (0.5 for two balanced classes). The full run (0.90 or
more) is ``make demo``.
"""
from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOLVER = ROOT / "models" / "mouth" / "simpleconv3" / "solver.prototxt"


def _run(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.slow
def test_demo_reduced(tmp_path: pathlib.Path) -> None:
    text = SOLVER.read_text()
    text = re.sub(r"max_iter: \d+", "max_iter: 40", text)
    text = re.sub(r"snapshot: \d+", "snapshot: 40", text)
    text = re.sub(r"test_interval: \d+", "test_interval: 20", text)
    text = re.sub(r"stepvalue: \d+", "stepvalue: 1000", text)
    text = text.replace('"runs/mouth/simpleconv3"', f'"{tmp_path / "simpleconv3"}"')
    solver = tmp_path / "solver.prototxt"
    solver.write_text(text)

    train = _run([sys.executable, "-m", "caffelike", "train", "-solver", str(solver)])
    assert train.returncode == 0, train.stderr[-3000:]
    log = tmp_path / "log.txt"
    log.write_text(train.stderr)
    weights = tmp_path / "simpleconv3_iter_40.caffemodel"
    assert weights.exists() and (tmp_path / "simpleconv3_iter_40.solverstate").exists()

    # our own log parses like Caffe's: rows at every test_interval, the net's output names as columns
    from caffelike.logs.parse import parse_log
    train_table, test_table = parse_log(str(log))
    assert test_table.columns == ["NumIters", "Seconds", "LearningRate", "acc", "loss"]
    assert [r["NumIters"] for r in test_table.rows] == [20.0, 40.0]
    assert train_table.rows and all(r["LearningRate"] == 0.001 for r in train_table.rows)

    png = tmp_path / "curves.png"
    plot = _run([sys.executable, "-m", "caffelike", "plot", str(log), "-o", str(png)])
    assert plot.returncode == 0, plot.stderr[-2000:]
    assert png.read_bytes()[:4] == b"\x89PNG"

    infer = _run([sys.executable, str(ROOT / "models" / "mouth" / "simpleconv3" / "infer.py"),
                  "--weights", str(weights)])
    assert infer.returncode == 0, infer.stderr[-2000:]
    acc = float(re.search(r"val accuracy = ([\d.]+)", infer.stdout).group(1))
    assert acc > 0.6, infer.stdout
    assert "confusion matrix" in infer.stdout
