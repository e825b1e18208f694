"""YOLOv2 Reorg (eric612/MobileNet-YOLO reorg_layer) and Region (openvinotoolkit/
training_toolbox_caffe region_layer, commit 2137b63), issue 16.

Reorg: OpenCV dnn's Caffe Reorg run live on the same prototxt, plus the fork's index loop
re-derived by hand for ``reverse``. Region: the fork's darknet loops by hand, and OpenCV's Region
layer run live through its Darknet importer (its Caffe importer cannot build one: it wants the
anchors as a blob, an NHWC bottom and a softmax/logistic flag no Caffe field sets). OpenCV's
Region goes further than the fork: it decodes the boxes with the anchors, multiplies the class
probabilities by the objectness, thresholds them and runs NMS; the test rebuilds that from our
top. Both forks' backward gives the bottom zero gradient, checked as such.
"""
from __future__ import annotations

import pathlib
import struct

import numpy as np
import pytest
import torch
from google.protobuf import text_format

import caffelike
from caffelike.errors import LayerError
from caffelike.layers import LAYERS
from caffelike.proto import caffe_pb2

cv2 = pytest.importorskip("cv2")
RNG = np.random.default_rng(2)


def make(text: str, bottom_shapes) -> torch.nn.Module:
    lp = text_format.Parse(text, caffe_pb2.LayerParameter())
    return LAYERS.get(lp.type).cls(lp, [tuple(s) for s in bottom_shapes], caffe_pb2.TEST)


def darknet_reorg(x: np.ndarray, stride: int, forward: bool) -> np.ndarray:
    """The fork's reorg_cpu loop, walking the bottom's (c, h, w) grid; ``forward`` is the flag
    the fork passes (its ``reverse`` parameter)."""
    n, c, h, w = x.shape
    src = x.reshape(n, -1)
    out = np.zeros_like(src)
    out_c = c // (stride * stride)
    for k in range(c):
        for j in range(h):
            for i in range(w):
                b = i + w * (j + h * k)
                offset = k // out_c
                t = (i * stride + offset % stride) + w * stride * (j * stride + offset // stride + h * stride * (k % out_c))
                if forward:
                    out[:, t] = src[:, b]
                else:
                    out[:, b] = src[:, t]
    return out


@pytest.mark.parametrize("shape,stride", [((2, 8, 4, 6), 2), ((1, 18, 6, 6), 3), ((1, 12, 2, 4), 2)])
def test_reorg_matches_opencv(tmp_path: pathlib.Path, shape, stride) -> None:
    proto = tmp_path / "reorg.prototxt"
    dims = " ".join(f"dim: {d}" for d in shape)
    proto.write_text(f'name: "r"\nlayer {{ name: "in" type: "Input" top: "data" input_param {{ shape {{ {dims} }} }} }}\n'
                     f'layer {{ name: "reorg" type: "Reorg" bottom: "data" top: "reorg" reorg_param {{ stride: {stride} }} }}\n')
    x = RNG.normal(size=shape).astype(np.float32)
    ours = np.array(caffelike.Net(str(proto), caffelike.TEST).forward(data=x)["reorg"])
    n, c, h, w = shape
    assert ours.shape == (n, c * stride * stride, h // stride, w // stride)
    np.testing.assert_array_equal(ours.reshape(n, -1), darknet_reorg(x, stride, forward=False))
    cv_net = cv2.dnn.readNetFromCaffe(str(proto))
    cv_net.setInput(x)
    theirs = cv_net.forward()
    if stride == 2:
        np.testing.assert_array_equal(ours, theirs)
    else:  # OpenCV does not read reorg_param.stride: it always reorganises by 2
        assert theirs.shape == (n, c * 4, h // 2, w // 2)


def test_reorg_reverse_follows_the_forks_loop() -> None:
    x = RNG.normal(size=(2, 8, 3, 5)).astype(np.float32)
    back = make('name: "r" type: "Reorg" reorg_param { stride: 2 reverse: true }', [x.shape])
    (top,) = back(torch.from_numpy(x))
    assert top.shape == (2, 2, 6, 10)
    np.testing.assert_array_equal(top.numpy().reshape(2, -1), darknet_reorg(x, 2, forward=True))


def test_reorg_backward_is_zero_as_in_the_fork() -> None:
    # reorg_layer.cpp's Backward_cpu reorganises diff_ (a blob never written), not the top diff.
    layer = make('name: "r" type: "Reorg" reorg_param { stride: 2 }', [(1, 4, 2, 2)])
    x = torch.randn(1, 4, 2, 2, requires_grad=True)
    layer(x)[0].sum().backward()
    assert torch.count_nonzero(x.grad) == 0


@pytest.mark.parametrize("text,shape,needle", [
    ('reorg_param { }', (1, 4, 2, 2), "needs reorg_param.stride"),
    ('reorg_param { stride: 2 }', (1, 6, 2, 2), "multiple of stride"),
    ('reorg_param { stride: 2 }', (1, 4, 3, 2), "multiple of stride"),
])
def test_reorg_errors_name_the_layer(text, shape, needle) -> None:
    with pytest.raises(LayerError, match=needle) as info:
        make(f'name: "passthrough" type: "Reorg" {text}', [shape])
    assert "passthrough" in str(info.value)


def darknet_region(x: np.ndarray, num: int, coords: int, classes: int) -> np.ndarray:
    """The fork's Forward_cpu: per anchor block, logistic on entries 0, 1 and ``coords``,
    softmax over the class entries (stride H*W)."""
    out = x.astype(np.float64).copy()
    n, _, h, w = x.shape
    blocks = out.reshape(n, num, coords + 1 + classes, h, w)
    logistic = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    blocks[:, :, 0:2] = logistic(blocks[:, :, 0:2])
    blocks[:, :, coords] = logistic(blocks[:, :, coords])
    scores = blocks[:, :, coords + 1:]
    e = np.exp(scores - scores.max(axis=2, keepdims=True))
    blocks[:, :, coords + 1:] = e / e.sum(axis=2, keepdims=True)
    return out


@pytest.mark.parametrize("num,coords,classes", [(5, 4, 20), (2, 4, 3), (3, 6, 1)])
def test_region_follows_the_forks_loops(num, coords, classes) -> None:
    shape = (2, num * (coords + 1 + classes), 3, 4)
    layer = make(f'name: "region" type: "Region" region_param {{ num: {num} coords: {coords} classes: {classes} }}',
                 [shape])
    x = RNG.normal(scale=2, size=shape).astype(np.float32)
    (top,) = layer(torch.from_numpy(x))
    assert top.shape == shape
    np.testing.assert_allclose(top.numpy(), darknet_region(x, num, coords, classes), rtol=1e-6, atol=1e-7)


def test_region_matches_opencvs_region_layer(tmp_path: pathlib.Path) -> None:
    """OpenCV (Darknet importer) on a 5x5 grid with tiny anchors (no two boxes overlap, so its
    NMS keeps everything) and thresh 0. OpenCV divides a box's width by the grid's height and
    its height by the width (darknet divides by width, height); the square grid hides that."""
    size, num, classes = 5, 2, 3
    anchors = [0.01, 0.02, 0.03, 0.04]
    cfg = tmp_path / "region.cfg"
    cfg.write_text(f"[net]\nbatch=1\nwidth={size}\nheight={size}\nchannels={num * (5 + classes)}\n\n"
                   f"[region]\nanchors={','.join(map(str, anchors))}\nclasses={classes}\ncoords=4\n"
                   f"num={num}\nsoftmax=1\nthresh=0\n")
    weights = tmp_path / "region.weights"
    weights.write_bytes(struct.pack("<iiii", 0, 2, 0, 0))  # darknet header, no weights
    x = RNG.normal(size=(1, num * (5 + classes), size, size)).astype(np.float32)
    cv_net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    cv_net.setInput(x)
    theirs = cv_net.forward()

    layer = make(f'name: "region" type: "Region" region_param {{ num: {num} coords: 4 classes: {classes} }}', [x.shape])
    ours = layer(torch.from_numpy(x))[0].numpy().reshape(num, 5 + classes, size, size)
    expected = np.zeros((size * size * num, 5 + classes), np.float32)
    for row in range(size):
        for col in range(size):
            for a in range(num):
                v = ours[a, :, row, col]
                expected[(row * size + col) * num + a] = [
                    (col + v[0]) / size, (row + v[1]) / size, np.exp(v[2]) * anchors[2 * a] / size,
                    np.exp(v[3]) * anchors[2 * a + 1] / size, v[4], *(v[4] * v[5:])]
    np.testing.assert_allclose(theirs, expected, rtol=1e-5, atol=1e-6)


def test_region_backward_is_zero_as_in_the_fork() -> None:
    layer = make('name: "region" type: "Region" region_param { num: 1 classes: 2 }', [(1, 7, 2, 2)])
    x = torch.randn(1, 7, 2, 2, requires_grad=True)
    layer(x)[0].sum().backward()
    assert torch.count_nonzero(x.grad) == 0


def test_region_channels_must_be_num_times_entries() -> None:
    with pytest.raises(LayerError, match=r"num \* \(coords \+ 1 \+ classes\) = 5 \* 25 = 125") as info:
        make('name: "detect" type: "Region" region_param { num: 5 classes: 20 }', [(1, 120, 13, 13)])
    assert "detect" in str(info.value)
