"""The rest of pycaffe's surface (``caffe/__init__.py`` and ``_caffe.cpp`` of BVLC Caffe 9b89154):
has_nccl/NCCL, Timer, init_log/log, solver count/rank, Net callbacks and ``_set_input_arrays``,
the solver's properties and callbacks, Detector. Expected values come from Caffe's sources
(call order, defaults, formulas), never from caffelike.
"""
from __future__ import annotations

import io
import logging
import os
import pathlib
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch

import caffelike as caffe
from caffelike import compat
from caffelike.errors import CaffelikeError, NetError

# Every name real pycaffe's caffe/__init__.py imports (9b89154), and its submodules.
PYCAFFE_NAMES = [
    "Net", "SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver", "AdaDeltaSolver", "AdamSolver",
    "NCCL", "Timer", "init_log", "log", "set_mode_cpu", "set_mode_gpu", "set_device", "Layer", "get_solver",
    "layer_type_list", "set_random_seed", "solver_count", "set_solver_count", "solver_rank",
    "set_solver_rank", "set_multiprocess", "has_nccl", "__version__", "TRAIN", "TEST", "Classifier",
    "Detector", "io", "layers", "params", "NetSpec", "to_proto", "draw", "coord_map",
]

DEPLOY = """name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } } }
layer { name: "relu" type: "ReLU" bottom: "data" top: "relu" }
layer { name: "pool" type: "Pooling" bottom: "relu" top: "pool" pooling_param { pool: AVE global_pooling: true } }
"""

SOLVER_NET = """name: "train"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 }
                     data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def test_the_caffe_alias_exports_every_pycaffe_name() -> None:
    code = ("import caffe, caffe.draw, caffe.coord_map, caffe.detector, caffe.classifier\n"
            "from caffe.detector import Detector\n"
            f"missing = [n for n in {PYCAFFE_NAMES!r} if not hasattr(caffe, n)]\n"
            "assert not missing, missing\n"
            "assert Detector is caffe.Detector and callable(caffe.log)\n"
            "print('ok')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [compat.alias_path(),
                                                                    os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_has_nccl_and_nccl_on_this_build() -> None:
    expected = torch.cuda.is_available() and torch.distributed.is_nccl_available()
    assert caffe.has_nccl() is bool(expected)
    if not expected:  # a CPU build of Caffe: NCCL(solver, uid) constructs, there is no new_uid
        caffe.NCCL(object(), b"uid")
        with pytest.raises(CaffelikeError, match="has_nccl"):
            caffe.NCCL.new_uid()


def test_timer_has_caffes_semantics() -> None:
    timer = caffe.Timer()
    assert timer.ms == 0.0  # never started: 0, with a warning
    timer.start()
    time.sleep(0.02)
    first = timer.ms  # reading stops a running timer
    assert first >= 20.0
    time.sleep(0.02)
    assert timer.ms == first
    timer.stop()  # stopping a stopped timer changes nothing
    assert timer.ms == first


def test_init_log_and_log() -> None:
    caffe.init_log(0, True)
    logger = logging.getLogger("caffelike")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        caffe.log("hello from pycaffe")
        caffe.init_log(1)  # glog level 1: WARNING and above
        caffe.log("not shown")
    finally:
        logger.removeHandler(handler)
        caffe.init_log(0)
    assert stream.getvalue() == "hello from pycaffe\n"


def test_solver_count_rank_multiprocess() -> None:
    from caffelike import mode

    assert (caffe.solver_count(), caffe.solver_rank(), mode.multiprocess()) == (1, 0, False)
    try:
        caffe.set_solver_count(4)
        caffe.set_solver_rank(2)
        caffe.set_multiprocess(True)
        assert (caffe.solver_count(), caffe.solver_rank(), mode.multiprocess()) == (4, 2, True)
    finally:
        caffe.set_solver_count(1)
        caffe.set_solver_rank(0)
        caffe.set_multiprocess(False)


@pytest.fixture()
def deploy(tmp_path: pathlib.Path) -> caffe.Net:
    path = tmp_path / "deploy.prototxt"
    path.write_text(DEPLOY)
    return caffe.Net(str(path), caffe.TEST)


def test_forward_callbacks_run_around_each_layer(deploy: caffe.Net) -> None:
    calls: list[tuple[str, int]] = []
    deploy.before_forward(lambda i: calls.append(("before", i)))
    deploy.after_forward(lambda i: calls.append(("after", i)))
    deploy.blobs["data"].data[...] = np.arange(96, dtype=np.float32).reshape(2, 3, 4, 4) - 40
    out = deploy.forward()
    assert calls == [("before", 0), ("after", 0), ("before", 1), ("after", 1), ("before", 2), ("after", 2)]
    relu = np.maximum(np.arange(96, dtype=np.float32).reshape(2, 3, 4, 4) - 40, 0)
    np.testing.assert_allclose(out["pool"].reshape(2, 3), relu.mean(axis=(2, 3)), rtol=1e-6)
    calls.clear()
    deploy.forward(start="relu", end="relu")  # Caffe's ForwardFromTo(1, 1)
    assert calls == [("before", 1), ("after", 1)]


def test_backward_callbacks_cover_the_range_in_reverse(deploy: caffe.Net) -> None:
    calls: list[tuple[str, int]] = []
    deploy.before_backward(lambda i: calls.append(("before", i)))
    deploy.after_backward(lambda i: calls.append(("after", i)))
    deploy.forward()
    deploy.backward()
    # Caffe's BackwardFromTo: before_backward(i), layer i's Backward, after_backward(i), i descending
    assert calls == [("before", 2), ("after", 2), ("before", 1), ("after", 1), ("before", 0), ("after", 0)]


def test_set_input_arrays_raw_form(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "memory.prototxt"
    path.write_text('layer { name: "data" type: "MemoryData" top: "data" top: "label" '
                    'memory_data_param { batch_size: 2 channels: 1 height: 2 width: 2 } }\n')
    net = caffe.Net(str(path), caffe.TEST)
    data = np.arange(16, dtype=np.float32).reshape(4, 1, 2, 2)
    net._set_input_arrays(data, np.array([3, 1, 4, 1], np.float32).reshape(4, 1, 1, 1))
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data, data[:2])
    np.testing.assert_array_equal(net.blobs["label"].data, [3, 1])
    with pytest.raises(NetError, match="labels"):
        net._set_input_arrays(data, np.zeros(4, np.float32))  # the raw form wants (N, 1, 1, 1)
    with pytest.raises(NetError, match="float32"):
        net._set_input_arrays(data.astype(np.float64), np.zeros((4, 1, 1, 1), np.float32))


@pytest.fixture()
def solver(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)  # as Caffe, the solver's net path is relative to the working directory
    (tmp_path / "train.prototxt").write_text(SOLVER_NET)
    (tmp_path / "solver.prototxt").write_text(
        'net: "train.prototxt"\nbase_lr: 0.1\nlr_policy: "step"\ngamma: 0.5\nstepsize: 2\n'
        'max_iter: 7\ndisplay: 3\nsnapshot_prefix: "snap"\nrandom_seed: 1\n')
    return caffe.SGDSolver(str(tmp_path / "solver.prototxt"))


def test_solver_takes_rank_and_count_from_the_settings(solver, tmp_path: pathlib.Path) -> None:
    assert (solver.rank, solver.world_size, solver.root) == (0, 1, True)
    try:  # as Caffe::solver_rank/solver_count: rank 1 of 2 is not the root
        caffe.set_solver_count(2)
        caffe.set_solver_rank(1)
        other = caffe.SGDSolver(str(tmp_path / "solver.prototxt"))
    finally:
        caffe.set_solver_count(1)
        caffe.set_solver_rank(0)
    assert (other.rank, other.world_size, other.root) == (1, 2, False)


def test_solver_properties(solver) -> None:
    assert (solver.iter, solver.param.max_iter, solver.param.display, solver.test_nets) == (0, 7, 3, [])
    assert isinstance(solver.net, caffe.Net)
    assert solver.lr == pytest.approx(0.1)
    solver.step(3)  # step policy: base_lr * gamma ^ floor(iter / stepsize)
    assert solver.iter == 3 and solver.lr == pytest.approx(0.1 * 0.5)
    solver.param.base_lr = 0.2  # pycaffe's one writable SolverParameter property
    assert solver.lr == pytest.approx(0.2 * 0.5)


def test_solver_callbacks_and_apply_update(solver) -> None:
    calls: list[str] = []
    solver.add_callback(lambda: calls.append("start"), lambda: calls.append("ready"))
    solver.step(2)
    assert calls == ["start", "ready", "start", "ready"]
    with pytest.raises(CaffelikeError, match="on_gradients_ready"):
        solver.add_callback(lambda: None)
    # Caffe's ApplyUpdate changes the weights and leaves the iteration count to Step.
    net = solver.net
    net.forward()
    net.backward()
    before = net.params["ip"][0].data.copy()
    solver.apply_update()
    assert solver.iter == 2 and not np.array_equal(before, net.params["ip"][0].data)


def test_net_callbacks_fire_during_solver_steps(solver) -> None:
    calls: list[tuple[str, int]] = []
    solver.net.after_forward(lambda i: calls.append(("forward", i)))
    solver.net.after_backward(lambda i: calls.append(("backward", i)))
    solver.step(1)  # Caffe's Step runs Net::ForwardBackward: every layer, forward then backward
    assert calls == [("forward", 0), ("forward", 1), ("forward", 2),
                     ("backward", 2), ("backward", 1), ("backward", 0)]


def test_share_weights(solver, tmp_path: pathlib.Path) -> None:
    other = caffe.Net(str(tmp_path / "train.prototxt"), caffe.TEST)
    solver.share_weights(other)
    solver.step(1)
    np.testing.assert_array_equal(other.params["ip"][0].data, solver.net.params["ip"][0].data)


def test_detector_classifies_windows(tmp_path: pathlib.Path) -> None:
    # A global average pool as the "classifier": a window of one colour predicts that colour.
    (tmp_path / "deploy.prototxt").write_text(DEPLOY.replace("dim: 2 dim: 3", "dim: 1 dim: 3"))
    image = np.zeros((40, 60, 3), np.uint8)
    image[:20, :30] = (255, 0, 0)  # BGR on disk: blue top left
    image[20:, 30:] = (0, 0, 255)  # red bottom right
    cv2.imwrite(str(tmp_path / "a.png"), image)
    detector = caffe.Detector(str(tmp_path / "deploy.prototxt"), None)
    windows = [np.array([0, 0, 20, 30]), np.array([20, 30, 40, 60]), np.array([5, 35, 15, 55])]
    found = detector.detect_windows([(str(tmp_path / "a.png"), windows)])
    assert [d["filename"] for d in found] == [str(tmp_path / "a.png")] * 3
    # caffe.io.load_image gives RGB in [0, 1]
    expected = [[0, 0, 1], [1, 0, 0], [0, 0, 0]]
    np.testing.assert_allclose([d["prediction"].reshape(3) for d in found], expected, atol=1e-6)
    padded = caffe.Detector(str(tmp_path / "deploy.prototxt"), None, context_pad=1)
    assert padded.crop(image.astype(np.float32), windows[0]).shape == (4, 4, 3)
