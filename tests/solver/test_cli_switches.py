"""Switches of train/test/time beyond Caffe's flags: unknown fields, -amp, -channels_last.

Expected values come from real Caffe: the golden sgd_step run's per-iteration losses
(tests/golden/solvers/sgd_step). ``test -optimize`` and ``classify -optimize / -engine
onnxruntime`` are checked against Caffe's figures for the book's model in
tests/models/test_book_simpleconv3.py.
"""
from __future__ import annotations

import math
import pathlib
import re

import pytest

from caffelike.cli import main

from perf.tiny_net import TINY_TRAIN  # tests/ is on sys.path (rootdir-relative packages)
from .helpers import copy_case, losses_from_log, read_csv, run_train

def _append(path: pathlib.Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_unknown_fields_fail_by_default_and_are_skipped_on_request(tmp_path, monkeypatch, capsys):
    work = copy_case("sgd_step", tmp_path)
    _append(work / "solver.prototxt", "max_iter: 40", "max_iter: 2\nfork_only_field: 3")
    monkeypatch.chdir(work)
    assert main(["train", "-solver", "solver.prototxt"]) == 1
    err = capsys.readouterr().err
    assert re.search(r"solver\.prototxt:\d+:\d+: .*fork_only_field", err), err
    assert "--allow-unknown-fields" in err
    status, lines = run_train(work, monkeypatch, "-solver", "solver.prototxt", "-allow-unknown-fields")
    assert status == 0
    assert any("skipped unknown field 'fork_only_field'" in line for line in lines)


def test_unknown_fields_in_the_net_named_by_the_solver(tmp_path, monkeypatch, capsys):
    work = copy_case("sgd_step", tmp_path)
    _append(work / "solver.prototxt", "max_iter: 40", "max_iter: 2")
    net = work / "train_val.prototxt"
    text = net.read_text()
    net.write_text(text.replace("layer {", "layer {\n  fork_param { speed: 2 }", 1))
    monkeypatch.chdir(work)
    assert main(["train", "-solver", "solver.prototxt"]) == 1
    assert re.search(r"train_val\.prototxt:3:\d+: .*fork_param", capsys.readouterr().err)
    status, lines = run_train(work, monkeypatch, "-solver", "solver.prototxt", "--allow-unknown-fields")
    assert status == 0
    assert any("skipped unknown field 'fork_param'" in line for line in lines)


def test_amp_bf16_training_follows_the_fp32_losses(tmp_path, monkeypatch):
    """bf16 keeps ~3 significant digits: the first losses stay near Caffe's fp32 ones."""
    work = copy_case("sgd_step", tmp_path)
    _append(work / "solver.prototxt", "max_iter: 40", "max_iter: 5")
    status, lines = run_train(work, monkeypatch, "-solver", "solver.prototxt",
                              "-weights", "init.caffemodel", "-amp", "bf16")
    assert status == 0
    got = losses_from_log(lines)
    golden = {int(r["iter"]): float(r["loss"]) for r in read_csv(work / "losses.csv")}
    for it in range(5):
        loss = float(got[it]["loss"])
        assert math.isfinite(loss)
        assert abs(loss - golden[it]) <= 0.05 * abs(golden[it]) + 0.02, (it, loss, golden[it])


def test_unknown_amp_name_is_a_user_error(tmp_path, monkeypatch, capsys):
    work = copy_case("sgd_step", tmp_path)
    monkeypatch.chdir(work)
    assert main(["train", "-solver", "solver.prototxt", "-amp", "fp8"]) == 1
    assert "unknown -amp value 'fp8'" in capsys.readouterr().err


def test_time_command_accepts_optimize_and_amp(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GLOG_logtostderr", "1")
    proto = tmp_path / "tiny.prototxt"
    proto.write_text(TINY_TRAIN)
    assert main(["time", "-model", str(proto), "-iterations", "1", "-phase", "TEST",
                 "-optimize", "-amp", "bf16"]) == 0
    assert "Average Forward pass" in capsys.readouterr().err


def test_channels_last_training_matches_caffe_losses(tmp_path, monkeypatch):
    """NHWC changes the kernels, not the arithmetic: Caffe's losses within the golden rtol."""
    work = copy_case("sgd_step", tmp_path)
    _append(work / "solver.prototxt", "max_iter: 40", "max_iter: 5")
    status, lines = run_train(work, monkeypatch, "-solver", "solver.prototxt",
                              "-weights", "init.caffemodel", "-channels_last")
    assert status == 0
    got = losses_from_log(lines)
    golden = {int(r["iter"]): float(r["loss"]) for r in read_csv(work / "losses.csv")}
    for it in range(5):
        assert float(got[it]["loss"]) == pytest.approx(golden[it], rel=1e-3), it
