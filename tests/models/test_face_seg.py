"""The face-segmentation example (models/face_seg) from the command line, as its README runs it:
make_data.py -> ``caffelike train`` (ImageSegData with contrast/brightness augmentation) ->
``caffelike parse_log`` -> ``caffelike plot``, with fewer iterations and images.

Runs on the fork's ImageSegData layer (caffelike/layers/caffe_long_data.py).
"""
from __future__ import annotations

import csv
import os
import pathlib
import re
import shutil
import subprocess
import sys

from .book_data import CORPUS

ROOT = pathlib.Path(__file__).resolve().parents[2]
FACE_SEG = ROOT / "models" / "face_seg"
BOOK = CORPUS / "longpeng2008__yousan.ai" / "face_book_ch8" / "mobilenet_train.prototxt"


def _run(args: list[str], cwd: pathlib.Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


def test_face_seg_net_is_the_books() -> None:
    text = (FACE_SEG / "mobilenet_train.prototxt").read_text().split("\n")
    assert all(line.startswith("# ") for line in text[:3])  # the provenance header
    ours = [line for line in text[3:] if line != '    root_folder: "runs/face_seg/data/"']
    book = BOOK.read_text().replace('"all_train.txt"', '"runs/face_seg/data/train.txt"')
    assert ours == book.replace('"all_val.txt"', '"runs/face_seg/data/val.txt"').split("\n")


def test_face_seg_cli_train_parse_plot(tmp_path: pathlib.Path) -> None:
    # the README's commands, run from a copy of the layout (models/face_seg, runs/) in tmp_path
    models = tmp_path / "models" / "face_seg"
    shutil.copytree(FACE_SEG, models)
    made = _run([str(FACE_SEG / "make_data.py"), "--train", "8", "--val", "4"], tmp_path)
    assert made.returncode == 0, made.stderr
    lines = (tmp_path / "runs" / "face_seg" / "data" / "train.txt").read_text().split("\n")
    assert lines[0] == "images/train_0000.png labels/train_0000.png" and len(lines) == 9
    net = models / "mobilenet_train.prototxt"
    net.write_text(re.sub(r"batch_size: \d+", "batch_size: 4", net.read_text()))
    solver = models / "solver.prototxt"
    text = solver.read_text()
    for field, value in (("max_iter", 6), ("test_interval", 3), ("display", 1), ("snapshot", 6)):
        text = re.sub(rf"{field}: \d+", f"{field}: {value}", text)
    solver.write_text(text)

    train = _run(["-m", "caffelike", "train", "-solver", "models/face_seg/solver.prototxt"], tmp_path)
    assert train.returncode == 0, train.stderr[-3000:]
    log = tmp_path / "runs" / "face_seg" / "log.txt"
    log.write_text(train.stderr)
    assert (tmp_path / "runs" / "face_seg" / "face_seg_iter_6.caffemodel").exists()

    parsed = _run(["-m", "caffelike", "parse_log", str(log), str(log.parent)], tmp_path)
    assert parsed.returncode == 0, parsed.stderr[-2000:]
    with open(str(log) + ".train") as f:
        train_rows = list(csv.DictReader(f))
    with open(str(log) + ".test") as f:
        test_rows = list(csv.DictReader(f))
    assert [float(r["NumIters"]) for r in train_rows] == [0, 1, 2, 3, 4, 5]  # as Caffe's parse_log.py: no row for the last
    assert [float(r["NumIters"]) for r in test_rows] == [0, 3, 6]
    assert {"loss", "seg-loss-acc"} <= set(test_rows[0])
    losses = [float(r["loss"]) for r in train_rows]
    assert all(0 < v < 20 for v in losses), losses

    png = log.parent / "curves.png"
    plot = _run(["-m", "caffelike", "plot", str(log), "-o", str(png)], tmp_path)
    assert plot.returncode == 0, plot.stderr[-2000:]
    assert png.read_bytes()[:4] == b"\x89PNG"
