"""Switches of train/test/time beyond Caffe's flags: unknown fields, -amp, -optimize, engines.

Expected values are never caffelike's own output alone: an optimized or ONNX Runtime run is
compared with the plain eager run of the same files (the eager path is pinned against Caffe
in tests/net and tests/solver), and training under -amp against the golden fp32 losses.
"""
from __future__ import annotations

import math
import pathlib
import re

import cv2
import numpy as np
import pytest

import caffelike
from caffelike.cli import main

from perf.tiny_net import TINY_TRAIN  # tests/ is on sys.path (rootdir-relative packages)
from .helpers import copy_case, losses_from_log, read_csv, run_train

LOSS_LINE = re.compile(r"\] Loss: (\S+)$")


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


@pytest.fixture
def tiny_weights(tmp_path):
    """The tiny BatchNorm net with non-trivial statistics saved as a .caffemodel."""
    proto = tmp_path / "tiny.prototxt"
    proto.write_text(TINY_TRAIN)
    net = caffelike.Net(str(proto), caffelike.TEST)
    rng = np.random.default_rng(3)
    bn = net.params["bn1"]
    bn[0].data[...] = rng.standard_normal(bn[0].data.shape) * 2
    bn[1].data[...] = rng.uniform(0.5, 3.0, bn[1].data.shape) * 4
    bn[2].data[...] = 4.0
    scale = net.params["scale1"]
    scale[0].data[...] = rng.uniform(0.5, 2.0, scale[0].data.shape)
    scale[1].data[...] = rng.standard_normal(scale[1].data.shape)
    weights = tmp_path / "tiny.caffemodel"
    net.save(str(weights))
    return proto, weights


def _test_loss(capsys, *args: str) -> float:
    assert main(["test", *args]) == 0
    lines = [m.group(1) for m in map(LOSS_LINE.search, capsys.readouterr().err.splitlines()) if m]
    assert lines, "no 'Loss:' line"
    return float(lines[-1])


def test_test_command_optimize_gives_the_same_loss(tiny_weights, capsys, monkeypatch):
    monkeypatch.setenv("GLOG_logtostderr", "1")
    proto, weights = tiny_weights
    base = ["-model", str(proto), "-weights", str(weights), "-iterations", "1"]
    plain = _test_loss(capsys, *base)
    fused = _test_loss(capsys, *base, "-optimize")
    assert fused == pytest.approx(plain, rel=1e-5, abs=1e-6)


def test_time_command_accepts_optimize_and_amp(tiny_weights, capsys, monkeypatch):
    monkeypatch.setenv("GLOG_logtostderr", "1")
    proto, _ = tiny_weights
    assert main(["time", "-model", str(proto), "-iterations", "1", "-phase", "TEST",
                 "-optimize", "-amp", "bf16"]) == 0
    assert "Average Forward pass" in capsys.readouterr().err


DEPLOY = TINY_TRAIN.split('layer { name: "loss"')[0].replace(
    "input_param { shape { dim: 4 dim: 3 dim: 8 dim: 8 } shape { dim: 4 } }",
    "input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } }").replace('top: "data" top: "label"', 'top: "data"') + \
    'layer { name: "prob" type: "Softmax" bottom: "ip1" top: "prob" }\n'


def _scores(capsys, *args: str) -> np.ndarray:
    assert main(["classify", *args]) == 0
    out = capsys.readouterr().out
    return np.array([[float(v) for v in re.findall(r" (\d\.\d+)", line)] for line in out.splitlines()
                     if line.startswith(("/", "img"))])


def test_classify_optimize_and_onnxruntime_give_the_same_scores(tiny_weights, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    _, weights = tiny_weights
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(DEPLOY)
    rng = np.random.default_rng(0)
    images = []
    for i in range(5):
        path = tmp_path / f"img{i}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        images.append(str(path))
    base = ["-model", str(deploy), "-weights", str(weights), "-top_k", "3", "-batch_size", "2", *images]
    plain = _scores(capsys, *base)
    assert plain.shape == (5, 3)
    np.testing.assert_allclose(_scores(capsys, *base, "-optimize"), plain, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(_scores(capsys, *base, "-engine", "onnxruntime"), plain, rtol=1e-4, atol=1e-4)


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
