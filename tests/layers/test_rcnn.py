"""Faster R-CNN / R-FCN layers (issue 16): ROIPooling and SmoothL1Loss of rbgirshick/caffe-fast-rcnn
(branch faster-rcnn: roi_pooling_layer.cu, smooth_L1_loss_layer.cu), PSROIPooling of
daijifeng001/caffe-rfcn (psroi_pooling_layer.cu).

Oracles: OpenCV dnn run live on the same prototxt and inputs (ROIPooling, PSROIPooling forward);
cases computed by hand from the forks' sources; float64 central differences for the backward
(inputs with distinct values, away from max ties and the SmoothL1 kink).
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

NET = """name: "roi"
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 2 dim: {c} dim: {h} dim: {w} }} }} }}
layer {{ name: "rois" type: "Input" top: "rois" input_param {{ shape {{ dim: {r} dim: 5 }} }} }}
layer {{ name: "pool" type: "{type}" bottom: "data" bottom: "rois" top: "pool" {params} }}
"""

# (batch, x1, y1, x2, y2) in image pixels, for a 9 x 11 map at scale 1/16: inside, partly and
# wholly outside the map, a 3 x 2 pixel ROI, x2 < x1 (malformed), halves that C rounds up
ROIS = np.array([[0, 0, 0, 160, 128], [1, 17, 33, 80, 70], [0, 50, 40, 52, 41], [1, -20, -30, 300, 400],
                 [0, 100, 100, 90, 90], [1, 24, 8, 120, 130], [0, 400, 10, 500, 60], [1, 8, 24, 40, 56]],
                np.float32)


def _layer(type_name: str, params: str, shapes: list[tuple[int, ...]]) -> torch.nn.Module:
    text = f'name: "l" type: "{type_name}" {params}'
    param = text_format.Parse(text, caffe_pb2.LayerParameter())
    return LAYERS.get(type_name).cls(param, shapes, TEST, Where(layer="l", type=type_name))


def _run_both(tmp_path: pathlib.Path, type_name: str, params: str, channels: int, rois: np.ndarray,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    path = tmp_path / "net.prototxt"
    path.write_text(NET.format(c=channels, h=9, w=11, r=len(rois), type=type_name, params=params))
    x = np.random.default_rng(seed).normal(size=(2, channels, 9, 11)).astype(np.float32)
    ours = np.array(caffelike.Net(str(path), caffelike.TEST).forward(data=x, rois=rois)["pool"])
    cv_net = cv2.dnn.readNetFromCaffe(str(path))
    cv_net.setInput(x, "data")
    cv_net.setInput(rois, "rois")
    return ours, cv_net.forward("pool")


# -- ROIPooling ---------------------------------------------------------------------------------
@pytest.mark.parametrize("pooled", [(1, 1), (3, 2), (7, 7)])
def test_roi_pooling_matches_opencv(tmp_path: pathlib.Path, pooled: tuple[int, int]) -> None:
    params = f"roi_pooling_param {{ pooled_h: {pooled[0]} pooled_w: {pooled[1]} spatial_scale: 0.0625 }}"
    ours, theirs = _run_both(tmp_path, "ROIPooling", params, 3, ROIS)
    assert ours.shape == theirs.shape == (len(ROIS), 3) + pooled
    np.testing.assert_array_equal(ours, theirs)  # a max selects: exact


def test_roi_pooling_hand_cases() -> None:
    """Cases worked out from roi_pooling_layer.cpp on a 6 x 6 map holding 0..35 row-major."""
    x = torch.arange(36, dtype=torch.float32).reshape(1, 1, 6, 6)
    layer = _layer("ROIPooling", "roi_pooling_param { pooled_h: 2 pooled_w: 2 spatial_scale: 0.5 }",
                   [(1, 1, 6, 6), (4, 5)])
    rois = torch.tensor([[0, 0, 0, 5, 5],     # 2.5 rounds up to 3: cells 0..3, bins [0,2) [2,4)
                         [0, 2, 2, 6, 4],     # cols 1..3 (3 wide: bins [0,2) [1,3)), rows 1..2
                         [0, 20, 2, 30, 4],   # right of the map: every bin clipped empty -> 0
                         [0, 6, 6, 2, 2]],    # x2 < x1: forced to 1 x 1 at (3, 3)
                        dtype=torch.float32)
    (top,) = layer(x, rois)
    expected = [[[7, 9], [19, 21]],
                [[8, 9], [14, 15]],
                [[0, 0], [0, 0]],
                [[21, 21], [21, 21]]]  # bin size 0.5: both bins [floor(0.5), ceil(1)) = [0, 1)
    np.testing.assert_array_equal(top[:, 0].numpy(), np.array(expected, np.float32))


def test_roi_pooling_backward_gradcheck() -> None:
    layer = _layer("ROIPooling", "roi_pooling_param { pooled_h: 3 pooled_w: 2 spatial_scale: 0.5 }",
                   [(2, 2, 5, 6), (4, 5)])
    x = torch.randn(2, 2, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    rois = torch.tensor([[0, 0, 0, 11, 9], [1, 3, 2, 9, 8], [1, -4, -4, 30, 30], [0, 6, 6, 8, 7]],
                        dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: layer(t, rois)[0], (x,))


def test_roi_pooling_backward_fork_rules() -> None:
    """roi_pooling_layer.cu's backward: the gradient goes to the first maximum in (h, w) scan
    order (argmax with '>'); overlapping bins add up; a ROI with x2 < x1 sends nothing back
    (its in_roi test fails for every cell) although its forward pools one cell."""
    layer = _layer("ROIPooling", "roi_pooling_param { pooled_h: 1 pooled_w: 2 spatial_scale: 1 }",
                   [(1, 1, 3, 3), (2, 5)])
    x = torch.tensor([[[[1, 5, 5], [5, 2, 0], [0, 0, 0]]]], dtype=torch.float32, requires_grad=True)
    rois = torch.tensor([[0, 0, 0, 2, 1], [0, 2, 2, 0, 0]], dtype=torch.float32)
    (top,) = layer(x, rois)
    # 3 columns in 2 bins: [0, 2) and [1, 3): both see (0, 1) first
    np.testing.assert_array_equal(top.detach().numpy().ravel(), [5, 5, 0, 0])
    top.backward(torch.tensor([1.0, 10.0, 100.0, 1000.0]).reshape(2, 1, 1, 2))
    expected = np.zeros((3, 3), np.float32)
    expected[0, 1] = 11  # both bins of ROI 0; nothing from the malformed ROI 1
    np.testing.assert_array_equal(x.grad[0, 0].numpy(), expected)


# -- PSROIPooling -------------------------------------------------------------------------------
@pytest.mark.parametrize("output_dim,group,scale", [(2, 3, 0.0625), (3, 2, 0.125), (1, 7, 0.0625)])
def test_psroi_pooling_matches_opencv(tmp_path: pathlib.Path, output_dim: int, group: int, scale: float) -> None:
    params = f"psroi_pooling_param {{ output_dim: {output_dim} group_size: {group} spatial_scale: {scale} }}"
    ours, theirs = _run_both(tmp_path, "PSROIPooling", params, output_dim * group * group, ROIS)
    assert ours.shape == theirs.shape == (len(ROIS), output_dim, group, group)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_psroi_pooling_hand_case() -> None:
    """From psroi_pooling_layer.cu: ROI (0, 0, 3, 3) at scale 1 spans [0, 4) (x2 + 1); with
    group 2 the bins are [0, 2) and [2, 4); bin (i, j) of output d reads channel (d*2 + i)*2 + j."""
    x = torch.arange(8 * 5 * 5, dtype=torch.float32).reshape(1, 8, 5, 5)
    layer = _layer("PSROIPooling", "psroi_pooling_param { output_dim: 2 group_size: 2 spatial_scale: 1 }",
                   [(1, 8, 5, 5), (2, 5)])
    rois = torch.tensor([[0, 0, 0, 3, 3], [0, 6, 6, 9, 9]], dtype=torch.float32)
    (top,) = layer(x, rois)
    xs = x[0].numpy()
    for d in range(2):
        for i in range(2):
            for j in range(2):
                c = (d * 2 + i) * 2 + j
                assert top[0, d, i, j] == xs[c, 2 * i:2 * i + 2, 2 * j:2 * j + 2].mean()
    np.testing.assert_array_equal(top[1].numpy(), 0)  # wholly outside the 5 x 5 map: empty bins


def test_psroi_pooling_backward_gradcheck() -> None:
    layer = _layer("PSROIPooling", "psroi_pooling_param { output_dim: 2 group_size: 2 spatial_scale: 0.5 }",
                   [(2, 8, 4, 5), (3, 5)])
    x = torch.randn(2, 8, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    rois = torch.tensor([[0, 0, 0, 9, 7], [1, 3, 2, 8, 6], [1, -4, -4, 30, 30]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: layer(t, rois)[0], (x,))


# -- SmoothL1Loss -------------------------------------------------------------------------------
def _smooth_l1(sigma: float, bottoms: int = 2) -> torch.nn.Module:
    shapes = [(3, 4, 1, 1)] * bottoms
    params = f"smooth_l1_loss_param {{ sigma: {sigma} }} " + " ".join(f'bottom: "b{i}"' for i in range(bottoms))
    return _layer("SmoothL1Loss", params + ' top: "loss"', shapes)


def test_smooth_l1_hand_case() -> None:
    """smooth_L1_loss_layer.cu with sigma 3 (1/sigma^2 = 1/9): 0.5 * 9 * d^2 below, |d| - 1/18 above;
    inside weights scale d, outside weights scale the error; the sum is divided by N = 3."""
    pred = torch.tensor([0.1, -0.05, 2.0, -1.0, 0, 0, 0, 0, 0.5, 0.5, 0.5, 0.5]).reshape(3, 4, 1, 1)
    target = torch.zeros(3, 4, 1, 1)
    inside = torch.tensor([1, 1, 1, 1, 1, 1, 1, 1, 0.1, 0.1, 1, 0]).reshape(3, 4, 1, 1)
    outside = torch.tensor([1, 1, 1, 2, 1, 1, 1, 1, 1, 1, 1, 1]).reshape(3, 4, 1, 1)
    (loss,) = _smooth_l1(3.0)(pred, target)
    errors = [0.5 * 9 * 0.01, 0.5 * 9 * 0.0025, 2 - 1 / 18, 1 - 1 / 18] + [0] * 4 + [0.5 - 1 / 18] * 4
    assert loss.item() == pytest.approx(sum(errors) / 3, rel=1e-6)
    (loss,) = _smooth_l1(3.0, 4)(pred, target, inside, outside)
    errors = [0.5 * 9 * 0.01, 0.5 * 9 * 0.0025, 2 - 1 / 18, 2 * (1 - 1 / 18)] + [0] * 4 \
        + [0.5 * 9 * 0.0025] * 2 + [0.5 - 1 / 18, 0]
    assert loss.item() == pytest.approx(sum(errors) / 3, rel=1e-6)


@pytest.mark.parametrize("bottoms", [2, 4])
def test_smooth_l1_backward_gradcheck(bottoms: int) -> None:
    g = torch.Generator().manual_seed(2)
    # differences spread over both sides of the kink at |d| = 1/sigma^2 = 0.25, none near it
    d = torch.tensor([0.05, -0.1, 0.6, -0.9, 1.5, -0.02, 0.15, -2.0, 0.4, 0.08, -0.5, 0.19], dtype=torch.float64)
    target = torch.randn(3, 4, 1, 1, dtype=torch.float64, generator=g).requires_grad_()
    pred = (target.detach() + d.reshape(3, 4, 1, 1)).requires_grad_()
    layer = _smooth_l1(2.0, bottoms)
    weights = [torch.ones(3, 4, 1, 1, dtype=torch.float64),
               torch.rand(3, 4, 1, 1, dtype=torch.float64, generator=g) + 0.5][: bottoms - 2]
    assert torch.autograd.gradcheck(lambda a, b: layer(a, b, *weights)[0], (pred, target))


def test_smooth_l1_weights_get_no_gradient() -> None:
    layer = _smooth_l1(1.0, 4)
    inside = torch.ones(3, 4, 1, 1, requires_grad=True)
    outside = torch.ones(3, 4, 1, 1, requires_grad=True)
    pred = torch.full((3, 4, 1, 1), 0.5, requires_grad=True)
    (loss,) = layer(pred, torch.zeros(3, 4, 1, 1), inside, outside)
    loss.backward()
    assert inside.grad is None and outside.grad is None
    np.testing.assert_allclose(pred.grad.numpy(), 0.5 / 3)  # sigma^2 * d / N
    assert all(LAYERS.get("SmoothL1Loss").cls.allow_force_backward(i) for i in range(4))


# -- errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("type_name,params,shapes,message", [
    ("ROIPooling", "roi_pooling_param { pooled_w: 2 }", [(1, 3, 5, 5), (2, 5)], "both must be > 0"),
    ("ROIPooling", "roi_pooling_param { pooled_h: 2 pooled_w: 2 }", [(1, 3, 5, 5), (2, 4)], "one row (batch_index"),
    ("PSROIPooling", "psroi_pooling_param { output_dim: 2 group_size: 2 }", [(1, 8, 5, 5), (2, 5)],
     "psroi_pooling_param.spatial_scale is required"),
    ("PSROIPooling", "psroi_pooling_param { output_dim: 2 group_size: 2 spatial_scale: 1 }", [(1, 9, 5, 5), (2, 5)],
     "bottom 0 has 9 channels; output_dim * group_size^2 = 8 expected"),
    ("SmoothL1Loss", "", [(2, 4, 1, 1)] * 3, "give both inside and outside weights"),
    ("SmoothL1Loss", "", [(2, 4, 1, 1), (2, 8, 1, 1)], "bottom 1 shape (2, 8, 1, 1) does not match"),
])
def test_errors_name_the_layer(type_name: str, params: str, shapes: list, message: str) -> None:
    with pytest.raises(CaffelikeError) as info:
        _layer(type_name, params, shapes)
    assert f"layer 'l' ({type_name})" in str(info.value) and message in str(info.value)


def test_roi_batch_index_out_of_range() -> None:
    layer = _layer("ROIPooling", "roi_pooling_param { pooled_h: 2 pooled_w: 2 }", [(1, 1, 4, 4), (1, 5)])
    with pytest.raises(CaffelikeError, match="ROI batch index"):
        layer(torch.zeros(1, 1, 4, 4), torch.tensor([[1.0, 0, 0, 1, 1]]))
