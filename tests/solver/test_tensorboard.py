"""``caffelike train -tensorboard DIR`` / ``Solver(..., tensorboard=DIR)`` (issue 18, item 4).

A tiny LeNet-like net trains for a few iterations on data made here; the event files are read
back with tensorboard's own EventAccumulator and must hold one scalar per number of the log's
``lr``, ``Train net output`` and ``Test net output`` lines, at the line's iteration, equal to
the printed digits (TensorBoard keeps float32). The expected tags are worked out here from the
log text alone.
"""
from __future__ import annotations

import logging
import os
import pathlib
import re
import signal
import sys
from collections import Counter, defaultdict

import h5py
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from caffelike.errors import CaffelikeError
from caffelike.glog import get_logger

from .helpers import run_train

LR = re.compile(r"\] Iteration (\d+), lr = (\S+)$")
DISPLAY = re.compile(r"\] Iteration (\d+) \(")
TRAIN_OUT = re.compile(r"\]     Train net output #(\d+): (\S+) = (\S+)")
TESTING = re.compile(r"\] Iteration (\d+), Testing net \(#(\d+)\)")
TEST_OUT = re.compile(r"\]     Test net output #(\d+): (\S+) = (\S+)")

DATA_LAYER = """layer {{ name: "data" type: "HDF5Data" top: "data" top: "label"
  include {{ phase: {phase} {stage} }} hdf5_data_param {{ source: "{source}" batch_size: 16 }} }}
"""
NET = """name: "TinyLeNet"
{data}layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param {{ num_output: 4 kernel_size: 3 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }}
layer {{ name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1"
  inner_product_param {{ num_output: 3 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }}
layer {{ name: "accuracy" type: "Accuracy" bottom: "ip1" bottom: "label" top: "accuracy"
  top: "per_class" }}
"""
SOLVER = """net: "net.prototxt"
{tests}test_interval: 4
display: 3
max_iter: 12
base_lr: 0.05
momentum: 0.9
lr_policy: "step"
gamma: 0.5
stepsize: 4
random_seed: 7
snapshot_after_train: false
solver_mode: CPU
"""


def make_run(work: pathlib.Path, test_nets: int) -> pathlib.Path:
    """A solver, net and HDF5 data (3 classes of 8x8 images) in ``work``; ``test_nets`` 1 or 2."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 64), ("test", 32)):
        label = rng.integers(0, 3, n)
        data = rng.normal(0, 1, (n, 1, 8, 8)) + label[:, None, None, None]
        with h5py.File(work / f"{split}.h5", "w") as f:
            f["data"] = data.astype(np.float32)
            f["label"] = label.astype(np.float32)
        (work / f"{split}_list.txt").write_text(f"{split}.h5\n")
    data = DATA_LAYER.format(phase="TRAIN", stage="", source="train_list.txt")
    if test_nets == 1:
        data += DATA_LAYER.format(phase="TEST", stage="", source="test_list.txt")
        tests = "test_iter: 2\n"
    else:
        for stage, source in (("on-test", "test_list.txt"), ("on-train", "train_list.txt")):
            data += DATA_LAYER.format(phase="TEST", stage=f'stage: "{stage}"', source=source)
        tests = 'test_state { stage: "on-test" }\ntest_iter: 2\ntest_state { stage: "on-train" }\ntest_iter: 4\n'
    (work / "net.prototxt").write_text(NET.format(data=data))
    (work / "solver.prototxt").write_text(SOLVER.format(tests=tests))
    return work / "solver.prototxt"


def _tagged(prefix: str, rows: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """One display's or test's lines as (tag, text): an output printed on several lines (a blob
    of several elements) gets its element index."""
    counts = Counter(name for name, _ in rows)
    seen: Counter = Counter()
    out = []
    for name, text in rows:
        out.append((f"{prefix}/{name}" if counts[name] == 1 else f"{prefix}/{name}/{seen[name]}", text))
        seen[name] += 1
    return out


def scalars_in_log(lines: list[str], test_nets: int) -> dict[str, list[tuple[int, str]]]:
    """tag -> [(iteration, printed number)] for every lr / train output / test output line."""
    groups: list[tuple[str, int, list[tuple[str, str]]]] = []  # (prefix, iteration, rows)
    expected: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for line in lines:
        if m := LR.search(line):
            expected["lr"].append((int(m.group(1)), m.group(2)))
        elif m := DISPLAY.search(line):
            groups.append(("train", int(m.group(1)), []))
        elif m := TESTING.search(line):
            net = int(m.group(2))
            groups.append(("test" if test_nets == 1 else f"test{net}", int(m.group(1)), []))
        elif m := TRAIN_OUT.search(line) or TEST_OUT.search(line):
            assert int(m.group(1)) == len(groups[-1][2])
            groups[-1][2].append((m.group(2), m.group(3)))
    for prefix, it, rows in groups:
        for tag, text in _tagged(prefix, rows):
            expected[tag].append((it, text))
    return dict(expected)


def scalars_in_events(logdir: pathlib.Path) -> dict[str, list[tuple[int, float]]]:
    acc = event_accumulator.EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def assert_events_equal_log(logdir: pathlib.Path, lines: list[str], test_nets: int) -> dict:
    expected = scalars_in_log(lines, test_nets)
    got = scalars_in_events(logdir)
    assert sorted(got) == sorted(expected)
    for tag, rows in expected.items():
        # the printed digits as float32, which is what a TensorBoard scalar holds
        want = [(it, float(np.float32(float(text)))) for it, text in rows]
        assert got[tag] == want, tag
    return expected


def train_and_compare(work: pathlib.Path, monkeypatch, test_nets: int) -> dict:
    """``caffelike train -tensorboard tb`` of :func:`make_run`'s solver; the log's scalars,
    once checked against the event files."""
    make_run(work, test_nets)
    status, lines = run_train(work, monkeypatch, "-solver", "solver.prototxt", "-tensorboard", "tb")
    assert status == 0
    return assert_events_equal_log(work / "tb", lines, test_nets)


def test_train_command_writes_every_logged_scalar(tmp_path, monkeypatch):
    expected = train_and_compare(tmp_path, monkeypatch, test_nets=1)
    assert [it for it, _ in expected["lr"]] == [0, 3, 6, 9]
    assert {text for _, text in expected["lr"]} == {"0.05", "0.025", "0.0125"}
    assert [it for it, _ in expected["train/loss"]] == [0, 3, 6, 9]
    assert [it for it, _ in expected["test/accuracy"]] == [0, 4, 8, 12]
    assert "test/per_class/2" in expected and "train/per_class/0" in expected


def test_several_test_nets_write_test_k(tmp_path, monkeypatch):
    expected = train_and_compare(tmp_path, monkeypatch, test_nets=2)
    assert not any(tag.startswith("test/") for tag in expected)
    assert [it for it, _ in expected["test0/loss"]] == [it for it, _ in expected["test1/loss"]] == [0, 4, 8, 12]


class _InterruptAt(logging.Handler):
    """Sends this process a SIGINT when a log message containing ``text`` goes out."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.INFO)
        self.text = text

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            os.kill(os.getpid(), signal.SIGINT)


def test_sigint_stop_leaves_every_logged_scalar_written(tmp_path, monkeypatch):
    """``train`` stopped by SIGINT (-sigint_effect stop, the default) still has every scalar
    of the log in its event files."""
    logger = get_logger()
    interrupt = _InterruptAt("Iteration 6, lr = ")
    logger.addHandler(interrupt)
    try:
        expected = train_and_compare(tmp_path, monkeypatch, test_nets=1)
    finally:
        logger.removeHandler(interrupt)
    assert [it for it, _ in expected["lr"]] == [it for it, _ in expected["train/loss"]] == [0, 3, 6]
    assert [it for it, _ in expected["test/loss"]] == [0, 4]


class _Lines(logging.Handler):
    """The log lines of an in-process Solver, with a glog-like ``] `` before each message."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.extend("] " + line for line in record.getMessage().splitlines())


def test_solver_api_flushes_each_step_and_closes_after_a_stop(tmp_path, monkeypatch):
    """Solver(..., tensorboard=DIR): pycaffe's ``step(n)`` leaves its scalars readable; ``solve()``
    stopped by a request (what SIGINT gives under ``train``) closes the writer."""
    from caffelike.solver import get_solver

    monkeypatch.chdir(tmp_path)
    make_run(tmp_path, test_nets=2)
    logger = get_logger()
    handler = _Lines()
    monkeypatch.setattr(logger, "level", logging.INFO)
    logger.addHandler(handler)
    try:
        box = {}
        solver = get_solver("solver.prototxt", tensorboard=tmp_path / "tb",
                            action=lambda: "stop" if box["solver"].iter == 7 else "none")
        box["solver"] = solver
        solver.step(5)
        expected = assert_events_equal_log(tmp_path / "tb", handler.lines, test_nets=2)
        assert [it for it, _ in expected["lr"]] == [0, 3]
        solver.solve()
    finally:
        logger.removeHandler(handler)
    assert solver.requested_early_exit and solver.iter == 7
    expected = assert_events_equal_log(tmp_path / "tb", handler.lines, test_nets=2)
    assert [it for it, _ in expected["lr"]] == [0, 3, 6]
    assert [it for it, _ in expected["test1/accuracy"]] == [0, 4]
    assert solver.scalars._writer.all_writers is None  # closed


def test_missing_tensorboard_is_a_user_error(tmp_path, monkeypatch, capsys):
    from caffelike.cli import main
    from caffelike.solver import get_solver

    make_run(tmp_path, test_nets=1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # the import fails
    assert main(["train", "-solver", "solver.prototxt", "-tensorboard", "tb"]) == 1
    err = capsys.readouterr().err
    assert 'pip install "caffelike[tensorboard]"' in err and "Traceback" not in err
    with pytest.raises(CaffelikeError, match=re.escape('pip install "caffelike[tensorboard]"')):
        get_solver("solver.prototxt", tensorboard="tb")
    assert not (tmp_path / "tb").exists()
