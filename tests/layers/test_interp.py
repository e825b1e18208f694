"""PSPNet's Interp layer (hszhao/PSPNet interp_layer.cpp, src/caffe/util/interp.cpp), issue 16.

Oracles: OpenCV dnn run live on the same prototxt and input (it implements zoom_factor and
height/width, not shrink_factor or pad_beg/pad_end); hand-computed cases from the fork's
source (the aligned-corners sampling, the 1-pixel cases, shrinking and cropping); float64
central differences for the backward (the fork's interp2_backward is the exact adjoint).
"""
from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch
from google.protobuf import text_format

import caffelike
from caffelike.errors import CaffelikeError, Where
from caffelike.layers import LAYERS, TEST
from caffelike.proto import caffe_pb2

cv2 = pytest.importorskip("cv2")

NET = """name: "interp"
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 2 dim: 3 dim: {h} dim: {w} }} }} }}
layer {{ name: "interp" type: "Interp" bottom: "data" top: "interp" interp_param {{ {p} }} }}
"""


def _layer(params: str, shape: tuple[int, ...]) -> torch.nn.Module:
    param = text_format.Parse(f'name: "interp" type: "Interp" bottom: "x" top: "y" interp_param {{ {params} }}',
                              caffe_pb2.LayerParameter())
    return LAYERS.get("Interp").cls(param, [shape], TEST, Where(layer="interp", type="Interp"))


def _ours(tmp_path: pathlib.Path, h: int, w: int, params: str, x: np.ndarray) -> tuple[pathlib.Path, np.ndarray]:
    path = tmp_path / "net.prototxt"
    path.write_text(NET.format(h=h, w=w, p=params))
    return path, np.array(caffelike.Net(str(path), caffelike.TEST).forward(data=x)["interp"])


OPENCV_CASES = [(5, 7, "zoom_factor: 2"), (4, 6, "zoom_factor: 3"), (5, 7, "height: 9 width: 4"),
                (6, 6, "height: 17 width: 23"), (9, 8, "height: 3 width: 5"), (5, 7, "height: 1 width: 1"),
                (5, 7, "height: 11 width: 1"), (1, 1, "height: 3 width: 4"), (1, 6, "zoom_factor: 2")]


@pytest.mark.parametrize("h,w,params", OPENCV_CASES, ids=[f"{c[0]}x{c[1]}-{c[2]}" for c in OPENCV_CASES])
def test_forward_matches_opencv(tmp_path: pathlib.Path, h: int, w: int, params: str) -> None:
    x = np.random.default_rng(h * 10 + w).normal(size=(2, 3, h, w)).astype(np.float32)
    path, ours = _ours(tmp_path, h, w, params, x)
    cv_net = cv2.dnn.readNetFromCaffe(str(path))
    cv_net.setInput(x)
    theirs = cv_net.forward("interp")
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_hand_zoom_aligned_corners(tmp_path: pathlib.Path) -> None:
    # ratio (2 - 1) / (3 - 1) = 0.5: the corners stay, midpoints average their neighbours
    x = np.array([[0, 1], [2, 3]], np.float32)[None, None].repeat(3, 1).repeat(2, 0)
    _, ours = _ours(tmp_path, 2, 2, "zoom_factor: 2", x)
    np.testing.assert_array_equal(ours[1, 2], [[0, 0.5, 1], [1, 1.5, 2], [2, 2.5, 3]])


def test_hand_one_pixel_cases(tmp_path: pathlib.Path) -> None:
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 5)).astype(np.float32)
    # a 1-pixel output axis has ratio 0: it reads input index 0 (not the centre)
    _, ours = _ours(tmp_path, 4, 5, "height: 1 width: 1", x)
    np.testing.assert_array_equal(ours[:, :, 0, 0], x[:, :, 0, 0])
    _, ours = _ours(tmp_path, 4, 5, "height: 1 width: 9", x)
    np.testing.assert_array_equal(ours[:, :, 0, ::2], x[:, :, 0, :])
    # a 1-pixel input axis: the second tap is the same pixel (h1p = 0)
    one = x[:, :, :1, :1].copy()
    _, ours = _ours(tmp_path, 1, 1, "height: 3 width: 2", one)
    np.testing.assert_array_equal(ours, np.broadcast_to(one, (2, 3, 3, 2)))


def test_hand_shrink_and_both_factors(tmp_path: pathlib.Path) -> None:
    x = np.random.default_rng(1).normal(size=(2, 3, 5, 9)).astype(np.float32)
    # shrink 2: (5-1)/2+1 = 3, (9-1)/2+1 = 5; ratio exactly 2, so every other pixel
    _, ours = _ours(tmp_path, 5, 9, "shrink_factor: 2", x)
    np.testing.assert_array_equal(ours, x[:, :, ::2, ::2])
    # shrink 2 then zoom 2: 3 x 5, then 5 x 9 again; output size = effective input size is
    # the fork's "just copy" case
    _, both = _ours(tmp_path, 5, 9, "shrink_factor: 2 zoom_factor: 2", x)
    np.testing.assert_array_equal(both, x)
    _, both = _ours(tmp_path, 5, 9, "shrink_factor: 2 zoom_factor: 3", x)
    assert both.shape == (2, 3, 7, 13)


def test_hand_crop_with_negative_pads(tmp_path: pathlib.Path) -> None:
    x = np.random.default_rng(2).normal(size=(2, 3, 6, 7)).astype(np.float32)
    # pad_beg -1, pad_end -2: effective input rows 1..3, cols 1..4; zoom 1 = that crop
    _, crop = _ours(tmp_path, 6, 7, "zoom_factor: 1 pad_beg: -1 pad_end: -2", x)
    np.testing.assert_array_equal(crop, x[:, :, 1:4, 1:5])
    # zoom 2 on the crop: every other output pixel is a crop pixel
    _, zoom = _ours(tmp_path, 6, 7, "zoom_factor: 2 pad_beg: -1 pad_end: -2", x)
    assert zoom.shape == (2, 3, 5, 7)
    np.testing.assert_allclose(zoom[:, :, ::2, ::2], x[:, :, 1:4, 1:5], rtol=0, atol=1e-6)
    np.testing.assert_allclose(zoom[:, :, 1, 1], 0.25 * (x[:, :, 1, 1] + x[:, :, 1, 2] + x[:, :, 2, 1] + x[:, :, 2, 2]),
                               rtol=1e-6, atol=1e-6)


def test_float32_weights_as_the_fork(tmp_path: pathlib.Path) -> None:
    """7 -> 10 rows: ratio float(6)/9 and positions ratio * i in float32, truncated (interp.cpp)."""
    x = np.random.default_rng(3).normal(size=(2, 3, 7, 1)).astype(np.float32)
    _, ours = _ours(tmp_path, 7, 1, "height: 10 width: 1", x)
    ratio = np.float32(6) / np.float32(9)
    for i in range(10):
        pos = np.float32(ratio * np.float32(i))
        i0 = int(pos)
        i1 = i0 + (1 if i0 < 6 else 0)
        lam1 = np.float32(pos - np.float32(i0))
        lam0 = np.float32(1) - lam1
        expected = lam0 * x[:, :, i0, 0] + lam1 * x[:, :, i1, 0]
        np.testing.assert_allclose(ours[:, :, i, 0], expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("params,shape", [("zoom_factor: 2", (1, 2, 3, 4)), ("height: 5 width: 2", (1, 2, 3, 4)),
                                          ("shrink_factor: 2 pad_beg: -1", (1, 2, 6, 5)),
                                          ("height: 1 width: 3", (1, 1, 3, 2))])
def test_backward_gradcheck(params: str, shape: tuple[int, ...]) -> None:
    layer = _layer(params, shape)
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: layer(t)[0], (x,))


@pytest.mark.parametrize("params,message", [
    ("pad_beg: 1 zoom_factor: 2", "only non-positive padding"),
    ("height: 4", "needs zoom_factor, shrink_factor, or both height and width"),
    ("zoom_factor: 0", "zoom_factor 0: must be >= 1"),
    ("zoom_factor: 1 pad_beg: -3 pad_end: -3", "must be positive"),
])
def test_errors_name_the_layer(params: str, message: str) -> None:
    with pytest.raises(CaffelikeError) as info:
        _layer(params, (1, 2, 5, 5))
    assert "layer 'interp' (Interp)" in str(info.value) and message in str(info.value)
