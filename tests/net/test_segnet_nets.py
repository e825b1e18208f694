"""The corpus nets of the SegNet/ENet/GoogLeNet-BN forks (issue 16) build and run on generated weights.

* ENet deploy nets (TimoSaemann/ENet): BN, Upsample with masks, Python ``spatial_dropout`` layers;
  run with a stand-in for that module (tests/net/enet_python) at a smaller input.
* SegNet inference nets (alexgkendall/SegNet-Tutorial): their DenseImageData reads a list, so
  they run in a folder with a generated list and images (Bayesian SegNet's Monte Carlo dropout
  samples differ within a batch of one repeated image).
* lim0606/caffe-googlenet-bn's deploy: refused as published (its last block is a V1 ``layers``
  with a quoted type, which no Caffe parser reads: tests/io/test_io_corpus.py); with that block
  spelled ``layer`` it runs and equals OpenCV dnn live on the same weights. OpenCV loads none of
  the other nets here (no Caffe ``BN``/``Upsample``; see tests/layers/test_fork_bn.py).
"""
from __future__ import annotations

import pathlib
import re
import sys

import cv2
import numpy as np
import pytest

import caffelike
from caffelike.errors import LayerError

from .fork_nets import fill_generated

CORPUS = pathlib.Path(__file__).resolve().parents[1] / "data" / "corpus"
ENET = CORPUS / "TimoSaemann__ENet" / "prototxts"
SEGNET = CORPUS / "alexgkendall__SegNet-Tutorial" / "Models"
STAND_INS = pathlib.Path(__file__).resolve().parent / "enet_python"


@pytest.fixture
def enet_python(monkeypatch: pytest.MonkeyPatch):
    """ENet's Python module importable for one test (and forgotten after it)."""
    monkeypatch.syspath_prepend(str(STAND_INS))
    yield
    sys.modules.pop("spatial_dropout", None)


def _small_enet(tmp: pathlib.Path, name: str) -> pathlib.Path:
    text = (ENET / name).read_text().replace("dim: 512", "dim: 32", 1).replace("dim: 1024", "dim: 64", 1)
    path = tmp / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["enet_deploy.prototxt", "enet_deploy_final.prototxt"])
def test_enet_deploy_runs_on_fill_generated(tmp_path: pathlib.Path, enet_python, name: str) -> None:
    net = caffelike.Net(str(_small_enet(tmp_path, name)), caffelike.TEST, fill=False)
    fill_generated(net, 0)
    x = np.random.default_rng(1).normal(size=(1, 3, 32, 64)).astype(np.float32)
    out = net.forward(data=x)
    (top,) = out.values()
    assert top.shape == (1, 19, 32, 64) and np.isfinite(top).all() and np.std(top) > 0
    kinds = {layer.type for layer in net.layers}
    assert {"BN", "Upsample"} <= kinds
    if name == "enet_deploy_final.prototxt":  # BN blobs and params round-trip through a caffemodel
        weights = tmp_path / "w.caffemodel"
        net.save(str(weights))
        again = caffelike.Net(str(_small_enet(tmp_path, name)), caffelike.TEST, weights=str(weights))
        np.testing.assert_array_equal(np.array(again.forward(data=x)[next(iter(out))]), top)


def test_enet_deploy_without_its_python_module_fails_as_caffe_would() -> None:
    assert "spatial_dropout" not in sys.modules
    with pytest.raises(LayerError, match="cannot import Python layer module 'spatial_dropout'") as info:
        caffelike.Net(str(ENET / "enet_deploy.prototxt"), caffelike.TEST)
    assert "layer 'drop1_0_3' (Python)" in str(info.value)


def _segnet_folder(tmp: pathlib.Path, net_name: str, size: tuple[int, int], n: int) -> pathlib.Path:
    """The corpus net with its list pointed at ``n`` generated image/label pairs of ``size``."""
    rng = np.random.default_rng(2)
    lines = []
    for i in range(n):
        cv2.imwrite(str(tmp / f"{i}.png"), rng.integers(0, 256, (*size, 3), dtype=np.uint8))
        cv2.imwrite(str(tmp / f"{i}_l.png"), rng.integers(0, 11, size, dtype=np.uint8))
        lines.append(f"{tmp / f'{i}.png'} {tmp / f'{i}_l.png'}")
    (tmp / "test.txt").write_text("\n".join(lines) + "\n")
    text = re.sub(r'source: "[^"]*"', f'source: "{tmp / "test.txt"}"', (SEGNET / net_name).read_text())
    path = tmp / net_name
    path.write_text(text)
    return path


def test_segnet_inference_runs_on_camvid_sized_images(tmp_path: pathlib.Path) -> None:
    # its upsample_h/upsample_w (23x30, 45x60) fix the input at CamVid's 360x480
    net = caffelike.Net(str(_segnet_folder(tmp_path, "segnet_inference.prototxt", (360, 480), 1)), caffelike.TEST,
                        fill=False)
    fill_generated(net, 3)
    out = net.forward()
    assert out["prob"].shape == (1, 11, 360, 480)
    np.testing.assert_allclose(np.array(out["prob"]).sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(np.array(out["label"])[0, 0], cv2.imread(str(tmp_path / "0_l.png"), 0))


def test_bayesian_segnet_samples_differ_within_a_batch(tmp_path: pathlib.Path) -> None:
    # 40x48: the four poolings give 3x3 at the bottom, and upsample4's pad_out_h gives 5 again
    net = caffelike.Net(str(_segnet_folder(tmp_path, "bayesian_segnet_basic_inference.prototxt", (40, 48), 1)),
                        caffelike.TEST)
    fill_generated(net, 4)
    prob = np.array(net.forward()["prob"])
    data = np.array(net.blobs["data"].data)
    assert prob.shape == (8, 11, 40, 48)
    np.testing.assert_array_equal(data[0], data[7])  # the one image, 8 times
    assert not np.allclose(prob[0], prob[7])  # dropout_param { sample_weights_test: true } in TEST


def test_segnet_train_builds_in_train(tmp_path: pathlib.Path) -> None:
    """Its SoftmaxWithLoss reads SegNet's class weights (loss_param weight_by_label_freqs)."""
    path = _segnet_folder(tmp_path, "segnet_train.prototxt", (360, 480), 1)
    net = caffelike.Net(str(path), caffelike.TRAIN, fill=False)
    assert net.blobs["conv1_1_D"].data.shape == (4, 11, 360, 480)
    modules = {lay.name: module for lay, module in net.graph.pairs()}
    assert modules["loss"].class_weights.shape == (11,)


def test_lim0606_googlenet_bn_deploy_equals_opencv(tmp_path: pathlib.Path) -> None:
    text = (CORPUS / "lim0606__caffe-googlenet-bn" / "deploy.prototxt").read_text()
    v1_tail = 'layers {\n  bottom: "loss3/classifier"'
    assert text.count("layers {") == 1 and v1_tail in text
    path = tmp_path / "deploy.prototxt"
    path.write_text(text.replace(v1_tail, 'layer {\n  bottom: "loss3/classifier"').replace("dim: 10", "dim: 1", 1))
    net = caffelike.Net(str(path), caffelike.TEST)
    fill_generated(net, 5)
    weights = tmp_path / "w.caffemodel"
    net.save(str(weights))
    x = np.random.default_rng(6).normal(size=(1, 3, 224, 224)).astype(np.float32)
    ours = np.array(net.forward(data=x)["prob"])
    cv_net = cv2.dnn.readNetFromCaffe(str(path), str(weights))
    cv_net.setInput(x)
    theirs = cv_net.forward("prob")
    assert ours.shape == theirs.shape == (1, 1000)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name,label", [("enet_train_encoder.prototxt", (4, 1, 64, 128)),
                                        ("enet_train_encoder_decoder.prototxt", (3, 1, 512, 1024))])
def test_enet_train_nets_build_in_train(tmp_path: pathlib.Path, enet_python, name: str, label) -> None:
    """ENet's training nets: DenseImageData resizing to 512x1024 (the encoder's label divided by
    label_divide_factor 8), BN in LEARN, its Python spatial dropout in TRAIN."""
    rng = np.random.default_rng(7)
    cv2.imwrite(str(tmp_path / "0.png"), rng.integers(0, 256, (40, 80, 3), dtype=np.uint8))
    cv2.imwrite(str(tmp_path / "0_l.png"), rng.integers(0, 19, (40, 80), dtype=np.uint8))
    (tmp_path / "list.txt").write_text(f"{tmp_path / '0.png'} {tmp_path / '0_l.png'}\n")
    text = re.sub(r'source: "[^"]*"', f'source: "{tmp_path / "list.txt"}"', (ENET / name).read_text())
    path = tmp_path / name
    path.write_text(text)
    net = caffelike.Net(str(path), caffelike.TRAIN, fill=False)
    assert net.blobs["data"].data.shape == (label[0], 3, 512, 1024)
    assert net.blobs["label"].data.shape == label
