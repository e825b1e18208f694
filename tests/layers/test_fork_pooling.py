"""pooling_param { ceil_mode: false } of the forks (BVLC/caffe PR 3057; OpenCV's opencv-caffe.proto;
the DenseNet/ResNet ports), issue 16: false rounds the pooled size down, true (the default) is
Caffe's ceil. Forward oracle: OpenCV dnn, run live on the same prototxt and input.
"""
from __future__ import annotations

import pathlib

import numpy as np
import pytest

import caffelike
from caffelike.layers.vision import pooled_size

cv2 = pytest.importorskip("cv2")

NET = """name: "ceil_mode"
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 2 dim: 3 dim: {h} dim: {w} }} }} }}
layer {{ name: "pool" type: "Pooling" bottom: "data" top: "pool"
  pooling_param {{ pool: {pool} kernel_size: {k} stride: {s} pad: {p} {extra} }} }}
"""

# (h, w, kernel, stride, pad): each has a ceil size different from the floor size on some axis
CASES = [(8, 8, 3, 2, 0), (8, 9, 3, 2, 1), (112, 112, 3, 2, 1), (10, 7, 2, 3, 0), (12, 12, 3, 3, 1)]


def _floor_size(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1


@pytest.mark.parametrize("pool", ["MAX", "AVE"])
@pytest.mark.parametrize("h,w,k,s,p", CASES, ids=[f"{c[0]}x{c[1]}k{c[2]}s{c[3]}p{c[4]}" for c in CASES])
def test_ceil_mode_false_matches_opencv(tmp_path: pathlib.Path, pool, h, w, k, s, p) -> None:
    assert (pooled_size(h, k, s, p), pooled_size(w, k, s, p)) != (_floor_size(h, k, s, p), _floor_size(w, k, s, p))
    path = tmp_path / "net.prototxt"
    path.write_text(NET.format(h=h, w=w, pool=pool, k=k, s=s, p=p, extra="ceil_mode: false"))
    x = np.random.default_rng(h * 31 + w).normal(size=(2, 3, h, w)).astype(np.float32)
    net = caffelike.Net(str(path), caffelike.TEST)
    ours = np.array(net.forward(data=x)["pool"])
    assert ours.shape == (2, 3, _floor_size(h, k, s, p), _floor_size(w, k, s, p))
    cv_net = cv2.dnn.readNetFromCaffe(str(path))
    cv_net.setInput(x)
    theirs = cv_net.forward("pool")
    assert theirs.shape == ours.shape
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)


@pytest.mark.parametrize("extra", ["", "ceil_mode: true"])
@pytest.mark.parametrize("pool", ["MAX", "AVE"])
def test_ceil_mode_absent_or_true_keeps_caffes_ceil(tmp_path: pathlib.Path, pool, extra) -> None:
    h, w, k, s, p = 8, 9, 3, 2, 1
    path = tmp_path / "net.prototxt"
    path.write_text(NET.format(h=h, w=w, pool=pool, k=k, s=s, p=p, extra=extra))
    x = np.random.default_rng(0).normal(size=(2, 3, h, w)).astype(np.float32)
    ours = np.array(caffelike.Net(str(path), caffelike.TEST).forward(data=x)["pool"])
    assert ours.shape == (2, 3, pooled_size(h, k, s, p), pooled_size(w, k, s, p)) == (2, 3, 5, 5)
    cv_net = cv2.dnn.readNetFromCaffe(str(path))
    cv_net.setInput(x)
    np.testing.assert_allclose(ours, cv_net.forward("pool"), rtol=0, atol=1e-5)


def test_round_mode_floor_and_ceil_mode_false_agree(tmp_path: pathlib.Path) -> None:
    x = np.random.default_rng(1).normal(size=(2, 3, 8, 9)).astype(np.float32)
    outs = []
    for extra in ("ceil_mode: false", "round_mode: FLOOR"):
        path = tmp_path / "net.prototxt"
        path.write_text(NET.format(h=8, w=9, pool="MAX", k=3, s=2, p=1, extra=extra))
        outs.append(np.array(caffelike.Net(str(path), caffelike.TEST).forward(data=x)["pool"]))
    assert outs[0].shape == (2, 3, 4, 5)
    np.testing.assert_array_equal(outs[0], outs[1])


def test_densenet_121_forward_matches_opencv(tmp_path: pathlib.Path) -> None:
    """The corpus DenseNet (pool1: k3 s2 p1 with ceil_mode: false) on generated weights, against
    OpenCV on the same prototxt and caffemodel (written by caffelike)."""
    path = (pathlib.Path(__file__).resolve().parents[1] / "data" / "corpus" / "shicai__DenseNet-Caffe"
            / "DenseNet_121.prototxt")
    net = caffelike.Net(str(path), caffelike.TEST)
    rng = np.random.default_rng(0)
    for name, blobs in net.params.items():
        if net.layers[list(net._layer_names).index(name)].type == "BatchNorm":
            blobs[0].data[...] = rng.normal(scale=0.1, size=blobs[0].data.shape)
            blobs[1].data[...] = rng.uniform(0.5, 1.5, size=blobs[1].data.shape)
            blobs[2].data[...] = 1
        else:
            for b in blobs:
                fan = max(1, int(np.prod(b.data.shape[1:])))
                b.data[...] = rng.normal(scale=1 / np.sqrt(fan), size=b.data.shape)
    weights = tmp_path / "w.caffemodel"
    net.save(str(weights))
    x = rng.normal(size=net.blobs["data"].data.shape).astype(np.float32)
    net.forward(data=x)
    cv_net = cv2.dnn.readNetFromCaffe(str(path), str(weights))
    assert net.blobs["pool1"].data.shape == (1, 64, 56, 56)  # floor; ceil would give 57
    for blob in ("pool1", "fc6"):
        cv_net.setInput(x)
        np.testing.assert_allclose(np.array(net.blobs[blob].data), cv_net.forward(blob), rtol=1e-5, atol=1e-5)
