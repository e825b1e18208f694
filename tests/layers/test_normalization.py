"""Normalization layers (BatchNorm, LRN, MVN) against real Caffe."""
from __future__ import annotations

import pytest
import torch
from google.protobuf import text_format

from caffelike.errors import CaffelikeError
from caffelike.layers import LAYERS, TEST, TRAIN
from caffelike.proto import caffe_pb2

from .golden_case import cases_for, run_case


@pytest.mark.parametrize("case", cases_for("BatchNorm", "LRN", "MVN"))
def test_golden(case: str) -> None:
    run_case(case)


# ---------------------------------------------------------------------------------------------
# Beyond the golden cases: Caffe's formulas from batch_norm_layer.cpp, lrn_layer.cpp and
# mvn_layer.cpp.
# ---------------------------------------------------------------------------------------------


def _layer(text: str, shapes, phase=TRAIN):
    lp = text_format.Parse(text, caffe_pb2.LayerParameter())
    return LAYERS.get(lp.type).cls(lp, [tuple(s) for s in shapes], phase)


def test_batchnorm_blobs_are_statistics() -> None:
    info = LAYERS.get("BatchNorm")
    assert info.stats_blobs
    layer = _layer('name: "bn" type: "BatchNorm"', [(2, 3, 4, 4)])
    assert [tuple(b.shape) for b in layer.blobs] == [(3,), (3,), (1,)]
    assert not any(b.requires_grad for b in layer.blobs)
    assert all(torch.all(b == 0) for b in layer.blobs)


def test_batchnorm_use_global_stats_defaults_to_test_phase() -> None:
    assert _layer('name: "bn" type: "BatchNorm"', [(2, 3)], TEST).use_global_stats
    assert not _layer('name: "bn" type: "BatchNorm"', [(2, 3)], TRAIN).use_global_stats
    assert _layer('name: "bn" type: "BatchNorm" batch_norm_param { use_global_stats: true }',
                  [(2, 3)], TRAIN).use_global_stats


def test_batchnorm_zero_scale_factor_means_zero_stats() -> None:
    # batch_norm_layer.cpp: scale = (factor == 0 ? 0 : 1/factor) -> mean 0, var 0.
    layer = _layer('name: "bn" type: "BatchNorm" batch_norm_param { eps: 0.25 }', [(2, 3)], TEST)
    layer.blobs[0].data.fill_(5.0)
    layer.blobs[1].data.fill_(7.0)
    x = torch.randn(2, 3)
    torch.testing.assert_close(layer(x)[0], x / 0.5)


def test_batchnorm_train_updates_running_stats_twice() -> None:
    layer = _layer('name: "bn" type: "BatchNorm" batch_norm_param { moving_average_fraction: 0.5 }',
                   [(4, 2, 3)], TRAIN)
    x1, x2 = torch.randn(4, 2, 3), torch.randn(4, 2, 3)
    layer(x1)
    layer(x2)
    m = 12
    mean = lambda x: x.mean(dim=(0, 2))  # noqa: E731
    var = lambda x: x.var(dim=(0, 2), unbiased=False) * m / (m - 1)  # noqa: E731
    torch.testing.assert_close(layer.blobs[2].data, torch.tensor([1.5]))
    torch.testing.assert_close(layer.blobs[0].data, 0.5 * mean(x1) + mean(x2))
    torch.testing.assert_close(layer.blobs[1].data, 0.5 * var(x1) + var(x2))
    # and TEST then uses blob/factor
    test = _layer('name: "bn" type: "BatchNorm"', [(4, 2, 3)], TEST)
    for a, b in zip(test.blobs, layer.blobs):
        a.data.copy_(b.data)
    mu, v = layer.blobs[0] / 1.5, layer.blobs[1] / 1.5
    torch.testing.assert_close(test(x1)[0], (x1 - mu[:, None]) / torch.sqrt(v[:, None] + 1e-5))


def test_batchnorm_refuses_learnable_statistics() -> None:
    with pytest.raises(CaffelikeError, match="lr_mult"):
        _layer('name: "bn" type: "BatchNorm" param { lr_mult: 1 }', [(2, 3)])
    _layer('name: "bn" type: "BatchNorm" param { lr_mult: 0 } param { lr_mult: 0 } param { lr_mult: 0 }', [(2, 3)])


def test_batchnorm_batch_backward_is_caffes_formula() -> None:
    # batch_norm_layer.cpp Backward_cpu: dx = (dy - mean(dy) - mean(dy*y)*y) / sqrt(var+eps)
    x = torch.randn(3, 2, 5, dtype=torch.float32, requires_grad=True)
    dy = torch.randn(3, 2, 5)
    layer = _layer('name: "bn" type: "BatchNorm" batch_norm_param { eps: 0.1 }', [x.shape], TRAIN)
    (y,) = layer(x)
    y.backward(dy)
    xd, yd, dyd = x.detach().double(), y.detach().double(), dy.double()
    dims = (0, 2)
    var = xd.var(dim=dims, unbiased=False, keepdim=True)
    want = (dyd - dyd.mean(dims, keepdim=True) - (dyd * yd).mean(dims, keepdim=True) * yd) / torch.sqrt(var + 0.1)
    torch.testing.assert_close(x.grad.double(), want, rtol=1e-5, atol=1e-6)


def test_mvn_backward_is_caffes_approximation() -> None:
    # mvn_layer.cpp Backward_cpu: dx = (dy - mean(dy) - y*mean(dy*y)) / (std + eps); with a
    # large eps this differs clearly from the exact gradient.
    x = torch.randn(2, 3, 4, 5, requires_grad=True)
    dy = torch.randn(2, 3, 4, 5)
    layer = _layer('name: "m" type: "MVN" mvn_param { eps: 0.5 }', [x.shape])
    (y,) = layer(x)
    y.backward(dy)
    rows = x.detach().double().reshape(6, -1)
    yd, dyd = y.detach().double().reshape(6, -1), dy.double().reshape(6, -1)
    std = rows.var(dim=1, unbiased=False, keepdim=True).sqrt()
    torch.testing.assert_close(yd, (rows - rows.mean(1, keepdim=True)) / (std + 0.5), rtol=1e-5, atol=1e-6)
    want = (dyd - dyd.mean(1, keepdim=True) - yd * (dyd * yd).mean(1, keepdim=True)) / (std + 0.5)
    torch.testing.assert_close(x.grad.double().reshape(6, -1), want, rtol=1e-5, atol=1e-6)


def test_mvn_mean_only_backward_and_4d_top() -> None:
    # mvn_layer.cpp Reshape: top is (num, channels, height, width) even for a 2-axis bottom.
    x = torch.randn(3, 4, requires_grad=True)
    layer = _layer('name: "m" type: "MVN" mvn_param { normalize_variance: false across_channels: true }',
                   [x.shape])
    (y,) = layer(x)
    assert y.shape == (3, 4, 1, 1)
    assert layer.top_shapes([(3, 4)]) == [(3, 4, 1, 1)]
    dy = torch.randn(3, 4, 1, 1)
    y.backward(dy)
    torch.testing.assert_close(x.grad, (dy - dy.mean(dim=1, keepdim=True)).reshape(3, 4))


def test_lrn_within_channel_ignores_k() -> None:
    # lrn_layer.cpp: WITHIN_CHANNEL builds Power(shift 1, scale alpha) - k is not used.
    x = torch.randn(1, 2, 5, 5)
    a = _layer('name: "n" type: "LRN" lrn_param { norm_region: WITHIN_CHANNEL local_size: 3 k: 7 }', [x.shape])
    b = _layer('name: "n" type: "LRN" lrn_param { norm_region: WITHIN_CHANNEL local_size: 3 }', [x.shape])
    torch.testing.assert_close(a(x)[0], b(x)[0])
    # centre pixel: window fully inside, so the average divides by size^2 = 9
    s = (x[0, :, 1:4, 1:4] ** 2).sum(dim=(1, 2)) / 9
    torch.testing.assert_close(a(x)[0][0, :, 2, 2], x[0, :, 2, 2] * (1 + s) ** -0.75)


def test_lrn_across_channels_formula() -> None:
    # lrn_layer.cpp CrossChannelForward_cpu: scale = k + alpha/size * sum over the window.
    x = torch.randn(2, 6, 3, 3, dtype=torch.float64)
    layer = _layer('name: "n" type: "LRN" lrn_param { local_size: 3 alpha: 0.7 beta: 0.6 k: 2 }', [x.shape])
    out = layer(x.float())[0].double()
    sq = torch.nn.functional.pad(x * x, (0, 0, 0, 0, 1, 1))
    scale = 2 + 0.7 / 3 * (sq[:, :-2] + sq[:, 1:-1] + sq[:, 2:])
    torch.testing.assert_close(out, x * scale ** -0.6, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", cases_for("LRN"))
def test_golden_lrn_inference_and_onnx_forms(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The deploy path (no autograd) and the form the ONNX exporter sees match Caffe too.
    with torch.no_grad():
        run_case(case, check_backward=False)
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    run_case(case)


@pytest.mark.parametrize("size, channels", [(5, 2), (7, 3), (1, 4), (3, 1)])
def test_lrn_window_wider_than_channels(size: int, channels: int) -> None:
    # lrn_layer.cpp: channels outside the blob count as zero, whatever the window size.
    x = torch.randn(2, channels, 3, 2, dtype=torch.float64)
    layer = _layer(f'name: "n" type: "LRN" lrn_param {{ local_size: {size} alpha: 0.9 beta: 0.7 k: 1.5 }}',
                   [x.shape])
    pre = (size - 1) // 2
    sq = torch.nn.functional.pad(x * x, (0, 0, 0, 0, pre, pre))
    window = sum(sq[:, i:i + channels] for i in range(size))
    want = x * (1.5 + 0.9 / size * window) ** -0.7
    with torch.no_grad():
        torch.testing.assert_close(layer(x.float())[0].double(), want, rtol=1e-5, atol=1e-6)
    xg = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: layer(t)[0], (xg,))  # Caffe's GradientChecker method


@pytest.mark.parametrize("text, shape, match", [
    ('type: "LRN" lrn_param { local_size: 4 }', (1, 2, 3, 3), "odd"),
    ('type: "LRN"', (2, 3), "4-axis"),
    ('type: "MVN"', (1, 2, 3, 4, 5), "1 to 4 axes"),
])
def test_bad_params_name_the_layer(text: str, shape, match: str) -> None:
    with pytest.raises(CaffelikeError, match=match) as info:
        _layer(f'name: "norm1" {text}', [shape])
    assert "layer 'norm1'" in str(info.value)


@pytest.mark.parametrize("text", ['type: "BatchNorm"', 'type: "LRN"', 'type: "MVN"',
                                  'type: "LRN" lrn_param { norm_region: WITHIN_CHANNEL }'])
def test_top_shapes_without_data(text: str) -> None:
    layer = _layer(f'name: "l" {text}', [(2, 3, 4, 5)])
    assert layer.top_shapes([(2, 3, 4, 5)]) == [(2, 3, 4, 5)]
    assert all(torch.all(b == 0) for b in layer.blobs)  # shape inference must not touch stats
