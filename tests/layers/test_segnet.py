"""The forks' Upsample (issue 16): SegNet's max-unpooling with the pooling mask (two bottoms,
alexgkendall/caffe-segnet upsample_layer.cpp) and MobileNet-YOLO's nearest neighbour (one bottom,
eric612/MobileNet-YOLO upsample_layer.cpp).

Oracles: the forks' loops, rewritten here as plain numpy references; Caffe's MAX-pooling mask
(pooling_layer.cpp: the first strict maximum of each window, flat ``h * W + w`` in its plane);
float64 finite differences (gradcheck) for backward. OpenCV dnn 4.14 has no Caffe ``Upsample``
(nor a second Pooling top): the last test pins that, so there is no live OpenCV comparison here.
"""
from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch

import caffelike
from caffelike.errors import LayerError
from caffelike.io import parse_text_proto
from caffelike.layers.segnet import Upsample
from caffelike.proto import caffe_pb2

cv2 = pytest.importorskip("cv2")


def _layer(text: str, shapes: list[tuple[int, ...]]) -> Upsample:
    param = parse_text_proto(f'name: "up" type: "Upsample" {text}', caffe_pb2.LayerParameter())
    for i in range(len(shapes)):
        param.bottom.append(f"b{i}")
    param.top.append("up")
    return Upsample(param, shapes, caffelike.TEST)


def caffe_max_pool_mask(x: np.ndarray, k: int, s: int) -> tuple[np.ndarray, np.ndarray]:
    """Caffe's MAX pooling (no pad, ceil size): values and the flat index of each window's
    first strict maximum in its input plane."""
    n, c, h, w = x.shape
    ph, pw = -(-(h - k) // s) + 1, -(-(w - k) // s) + 1
    vals = np.empty((n, c, ph, pw), np.float32)
    mask = np.empty((n, c, ph, pw), np.float32)
    for i in np.ndindex(n, c):
        for y in range(ph):
            for z in range(pw):
                best, at = -np.inf, -1
                for hh in range(y * s, min(y * s + k, h)):
                    for ww in range(z * s, min(z * s + k, w)):
                        if x[i][hh, ww] > best:
                            best, at = x[i][hh, ww], hh * w + ww
                vals[i][y, z], mask[i][y, z] = best, at
    return vals, mask


def segnet_unpool(x: np.ndarray, mask: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """SegNet's Forward_cpu: a zero top, each value written at its mask index, in order."""
    n, c = x.shape[:2]
    top = np.zeros((n, c, oh * ow), np.float32)
    for i in np.ndindex(n, c):
        for v, idx in zip(x[i].ravel(), mask[i].ravel()):
            top[i][int(idx)] = v
    return top.reshape(n, c, oh, ow)


def yolo_upsample(x: np.ndarray, scale: int) -> np.ndarray:
    """MobileNet-YOLO's Forward_cpu: top[h, w] = bottom[h // scale, w // scale]."""
    n, c, h, w = x.shape
    top = np.empty((n, c, h * scale, w * scale), np.float32)
    for hh in range(h * scale):
        for ww in range(w * scale):
            top[:, :, hh, ww] = x[:, :, hh // scale, ww // scale]
    return top


POOL_NET = """name: "unpool"
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 2 dim: 3 dim: {h} dim: {w} }} }} }}
layer {{ name: "pool" type: "Pooling" bottom: "data" top: "pool" top: "mask"
  pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
layer {{ name: "up" type: "Upsample" bottom: "pool" bottom: "mask" top: "up" upsample_param {{ {up} }} }}
"""


@pytest.mark.parametrize("h,w,up,out", [
    (8, 6, "scale: 2", (8, 6)),
    (7, 6, "scale: 2 pad_out_h: true", (7, 6)),
    (7, 5, "scale: 2 upsample_h: 7 upsample_w: 5", (7, 5)),
    (7, 5, "scale_h: 2 scale_w: 2 pad_out_h: true pad_out_w: true", (7, 5)),
])
def test_pooling_mask_then_unpool_matches_fork_loops(tmp_path: pathlib.Path, h, w, up, out) -> None:
    path = tmp_path / "net.prototxt"
    path.write_text(POOL_NET.format(h=h, w=w, up=up))
    x = np.random.default_rng(h * 10 + w).normal(size=(2, 3, h, w)).astype(np.float32)
    blobs = caffelike.Net(str(path), caffelike.TEST).forward(data=x, blobs=["pool", "mask"])
    vals, mask = caffe_max_pool_mask(x, 2, 2)
    np.testing.assert_array_equal(np.array(blobs["mask"]), mask)  # flat h*W+w, as Caffe writes it
    np.testing.assert_array_equal(np.array(blobs["pool"]), vals)
    assert np.array(blobs["up"]).shape == (2, 3, *out)
    np.testing.assert_array_equal(np.array(blobs["up"]), segnet_unpool(vals, mask, *out))


def test_unpool_duplicate_indices_last_write_wins() -> None:
    layer = _layer("upsample_param { scale: 2 }", [(1, 1, 2, 2), (1, 1, 2, 2)])
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    mask = torch.tensor([[[[5.0, 5.0], [0.0, 5.0]]]])
    top = layer(x, mask)[0]
    np.testing.assert_array_equal(top.numpy(), segnet_unpool(x.numpy(), mask.numpy(), 4, 4))
    assert top[0, 0, 1, 1] == 4.0


@pytest.mark.parametrize("scale", [1, 2, 3])
def test_one_bottom_is_yolo_nearest_neighbour(scale: int) -> None:
    layer = _layer(f"upsample_param {{ scale: {scale} }}", [(2, 3, 4, 5)])
    x = torch.from_numpy(np.random.default_rng(scale).normal(size=(2, 3, 4, 5)).astype(np.float32))
    top = layer(x)[0]
    assert layer.top_shapes([(2, 3, 4, 5)]) == [(2, 3, 4 * scale, 5 * scale)]
    np.testing.assert_array_equal(top.numpy(), yolo_upsample(x.numpy(), scale))


def test_one_bottom_without_scale_uses_yolos_default_1() -> None:
    assert _layer("", [(1, 2, 3, 3)]).top_shapes([(1, 2, 3, 3)]) == [(1, 2, 3, 3)]


def test_unpool_gradcheck_and_fork_backward() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 2, 6, 4))
    vals, mask = caffe_max_pool_mask(x.astype(np.float32), 2, 2)
    layer = _layer("upsample_param { upsample_h: 6 upsample_w: 4 }", [vals.shape, mask.shape]).double()
    src = torch.from_numpy(vals.astype(np.float64)).requires_grad_()
    m = torch.from_numpy(mask.astype(np.float64))
    assert torch.autograd.gradcheck(lambda v: layer(v, m)[0], (src,))
    top_diff = torch.from_numpy(rng.normal(size=(2, 2, 6, 4)))
    layer(src, m)[0].backward(top_diff)
    # SegNet's Backward_cpu: bottom_diff[i] = top_diff[mask[i]] in each plane
    expected = np.take_along_axis(top_diff.numpy().reshape(2, 2, -1), mask.reshape(2, 2, -1).astype(int), 2)
    np.testing.assert_allclose(src.grad.numpy(), expected.reshape(vals.shape))


def test_nearest_gradcheck_and_fork_backward() -> None:
    layer = _layer("upsample_param { scale: 2 }", [(1, 2, 3, 3)]).double()
    x = torch.from_numpy(np.random.default_rng(4).normal(size=(1, 2, 3, 3))).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: layer(v)[0], (x,))
    top_diff = torch.arange(72.0, dtype=torch.float64).reshape(1, 2, 6, 6)
    layer(x)[0].backward(top_diff)
    # MobileNet-YOLO's Backward_cpu: the sum of each scale x scale block
    expected = top_diff.numpy().reshape(1, 2, 3, 2, 3, 2).sum(axis=(3, 5))
    np.testing.assert_allclose(x.grad.numpy(), expected)


@pytest.mark.parametrize("text,shapes,message", [
    ("upsample_param { scale: 1 }", 2, "the upsampling scale must be > 1"),
    ("upsample_param { scale: 3 pad_out_h: true }", 2, "pad_out_h requires scale_h == 2"),
    ("upsample_param { scale: 2 scale_h: 2 }", 2, "upsample_h and upsample_w are required"),
    ("upsample_param { upsample_h: 8 }", 1, "upsample_h need the pooling mask as a second bottom"),
])
def test_set_up_errors(text: str, shapes: int, message: str) -> None:
    with pytest.raises(LayerError, match=message) as info:
        _layer(text, [(1, 1, 4, 4)] * shapes)
    assert "layer 'up' (Upsample)" in str(info.value)


def test_mask_index_out_of_range_is_an_error() -> None:
    layer = _layer("upsample_param { upsample_h: 3 upsample_w: 3 }", [(1, 1, 2, 2)] * 2)
    with pytest.raises(LayerError, match="upsample top index 9 out of range for a 3x3 top"):
        layer(torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 9.0))


def test_opencv_dnn_has_no_caffe_upsample(tmp_path: pathlib.Path) -> None:
    """Why these tests have no live OpenCV oracle: OpenCV 4.14's Caffe importer refuses the type."""
    path = tmp_path / "net.prototxt"
    path.write_text(POOL_NET.format(h=4, w=4, up="scale: 2").replace('top: "mask"\n', "\n")
                    .replace('bottom: "mask" ', ""))
    with pytest.raises(cv2.error, match="Upsample"):
        cv2.dnn.readNetFromCaffe(str(path)).forward()
