"""The forks' BN layer (issue 16): SegNet/ENet (alexgkendall/caffe-segnet and TimoSaemann/caffe-enet
bn_layer.cpp: scale/shift blobs, bn_mode LEARN/INFERENCE), PSPNet (hszhao/PSPNet bn_layer.cpp:
slope, bias, moving mean and variance, frozen, momentum, eps) and the V1 ``layers { type: BN }``
enum of ChenglongChen's layer that lim0606's GoogLeNet-BN nets use.

Oracles: the forks' formulas rewritten in numpy (float64); float64 finite differences
(gradcheck) for backward. OpenCV dnn 4.14 has no Caffe ``BN`` type (pinned below).
"""
from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch

import caffelike
from caffelike.errors import LayerError
from caffelike.io import parse_net, parse_text_proto
from caffelike.layers.fork_bn import BN
from caffelike.proto import caffe_pb2

cv2 = pytest.importorskip("cv2")

SHAPE = (3, 2, 4, 5)


def _layer(text: str, phase: int = caffelike.TEST, tops: int = 1, shape=SHAPE) -> BN:
    param = parse_text_proto(f'name: "bn" type: "BN" bottom: "x" {text}', caffe_pb2.LayerParameter())
    param.top.extend(["y", "mean", "var"][:tops])
    return BN(param, [shape], phase)


def _set(layer: BN, *blobs: np.ndarray) -> None:
    with torch.no_grad():
        for blob, value in zip(layer.blobs, blobs):
            blob.copy_(torch.from_numpy(np.asarray(value, np.float32).reshape(blob.shape)))


def _run(layer: BN, x: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        return [t.numpy() for t in layer(torch.from_numpy(x.astype(np.float32)))]


def _data(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(1.5, 2.0, size=SHAPE)


def _per_channel(v: np.ndarray) -> np.ndarray:
    return v.reshape(1, -1, 1, 1)


def test_segnet_learn_uses_batch_statistics_and_returns_them() -> None:
    x = _data()
    scale, shift = np.array([0.5, -2.0]), np.array([0.25, 3.0])
    layer = _layer("bn_param { bn_mode: LEARN }", tops=3)
    _set(layer, scale, shift)
    y, mean, var = _run(layer, x)
    # SegNet's Forward_cpu (LEARN): var = E(x^2) - E(x)^2 over (N, H, W); var_eps_ 1e-9
    m = x.mean(axis=(0, 2, 3), keepdims=True)
    v = (x * x).mean(axis=(0, 2, 3), keepdims=True) - m * m
    expected = _per_channel(scale) * (x - m) / np.sqrt(v + 1e-9) + _per_channel(shift)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mean, m, rtol=1e-6)
    np.testing.assert_allclose(var, v, rtol=1e-5)  # top 3: the variance before eps


def test_segnet_inference_is_scale_and_shift_only() -> None:
    x = _data(1)
    scale, shift = np.array([2.0, -0.5]), np.array([1.0, 0.1])
    layer = _layer("bn_param { bn_mode: INFERENCE }")
    _set(layer, scale, shift)
    y = _run(layer, x)[0]
    np.testing.assert_allclose(y, _per_channel(scale) * x + _per_channel(shift), rtol=1e-6, atol=1e-6)


def test_segnet_blobs_and_fillers() -> None:
    layer = _layer('bn_param { scale_filler { type: "constant" value: 1 } shift_filler { type: "constant" value: 0.5 } }')
    assert [tuple(b.shape) for b in layer.blobs] == [(1, 2, 1, 1), (1, 2, 1, 1)]
    assert layer.blobs[0].detach().flatten().tolist() == [1.0, 1.0]
    assert layer.blobs[1].detach().flatten().tolist() == [0.5, 0.5]
    assert not layer.pspnet and layer.learn  # no bn_param field of PSPNet's: SegNet's BN, LEARN


@pytest.mark.parametrize("mode", ["LEARN", "INFERENCE"])
def test_segnet_gradcheck_and_fork_param_diffs(mode: str) -> None:
    layer = _layer(f"bn_param {{ bn_mode: {mode} }}", shape=(2, 2, 3, 3)).double()
    _set(layer, [1.5, -0.7], [0.2, 0.4])
    layer.double()
    x = torch.from_numpy(np.random.default_rng(2).normal(size=(2, 2, 3, 3))).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: layer(v)[0], (x,))
    dy = torch.from_numpy(np.random.default_rng(3).normal(size=(2, 2, 3, 3)))
    layer(x)[0].backward(dy)
    xs, g = x.detach().numpy(), dy.numpy()
    if mode == "LEARN":  # Backward_cpu: scale_diff = sum(x_norm * dy), x_norm from batch stats
        m = xs.mean(axis=(0, 2, 3), keepdims=True)
        v = (xs * xs).mean(axis=(0, 2, 3), keepdims=True) - m * m
        basis = (xs - m) / np.sqrt(v + 1e-9)
    else:  # INFERENCE: scale_diff = sum(x * dy)
        basis = xs
    np.testing.assert_allclose(layer.blobs[0].grad.numpy().ravel(), (basis * g).sum(axis=(0, 2, 3)), rtol=1e-10)
    np.testing.assert_allclose(layer.blobs[1].grad.numpy().ravel(), g.sum(axis=(0, 2, 3)), rtol=1e-10)


PSP = "bn_param { slope_filler { type: 'constant' value: 1 } bias_filler { type: 'constant' value: 0 } %s }"


def _pspnet_formula(x, slope, bias, mean, var, eps):
    return _per_channel(slope) * (x - _per_channel(mean)) / np.sqrt(_per_channel(var) + eps) + _per_channel(bias)


@pytest.mark.parametrize("extra,phase", [("frozen: true", caffelike.TRAIN), ("", caffelike.TEST),
                                         ("frozen: true eps: 0.001", caffelike.TEST)])
def test_pspnet_stored_statistics_match_the_fork_formula(extra: str, phase: int) -> None:
    x = _data(4)
    slope, bias, mean, var = [1.5, 0.5], [-1.0, 2.0], [0.3, 1.2], [2.0, 0.25]
    layer = _layer(PSP % extra, phase)
    assert layer.pspnet and [tuple(b.shape) for b in layer.blobs] == [(1, 2, 1, 1)] * 4
    _set(layer, slope, bias, mean, var)
    before = [b.detach().clone() for b in layer.blobs]
    y = _run(layer, x)[0]
    eps = 0.001 if "eps" in extra else 1e-5
    expected = _pspnet_formula(x, np.array(slope), np.array(bias), np.array(mean), np.array(var), eps)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(before, layer.blobs))  # stored stats untouched


def test_pspnet_train_uses_batch_statistics_and_folds_them_with_momentum() -> None:
    x = _data(5)
    layer = _layer(PSP % "momentum: 0.75", caffelike.TRAIN)
    _set(layer, [2.0, 1.0], [0.0, -1.0], [1.0, -1.0], [4.0, 0.5])
    y = _run(layer, x)[0]
    m = x.mean(axis=(0, 2, 3))
    v = ((x - _per_channel(m)) ** 2).mean(axis=(0, 2, 3))
    np.testing.assert_allclose(y, _pspnet_formula(x, np.array([2.0, 1.0]), np.array([0.0, -1.0]), m, v, 1e-5),
                               rtol=1e-5, atol=1e-5)
    # caffe_cpu_axpby(1 - momentum, batch, momentum, blob)
    np.testing.assert_allclose(layer.blobs[2].detach().numpy().ravel(), 0.75 * np.array([1.0, -1.0]) + 0.25 * m, rtol=1e-5)
    np.testing.assert_allclose(layer.blobs[3].detach().numpy().ravel(), 0.75 * np.array([4.0, 0.5]) + 0.25 * v, rtol=1e-5)


def test_pspnet_new_variance_blob_is_one_when_frozen() -> None:
    assert _layer(PSP % "frozen: true").blobs[3].detach().flatten().tolist() == [1.0, 1.0]
    assert _layer(PSP % "").blobs[3].detach().flatten().tolist() == [0.0, 0.0]


@pytest.mark.parametrize("frozen", [True, False])
def test_pspnet_gradcheck(frozen: bool) -> None:
    layer = _layer(PSP % ("frozen: true" if frozen else ""), caffelike.TRAIN, shape=(2, 2, 3, 3))
    _set(layer, [1.5, -0.7], [0.2, 0.4], [0.1, 0.2], [1.5, 0.5])
    layer.double()
    layer.momentum = 1.0  # keep the stored statistics fixed across gradcheck's evaluations
    x = torch.from_numpy(np.random.default_rng(6).normal(size=(2, 2, 3, 3))).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: layer(v)[0], (x,))
    if frozen:  # Backward_cpu (frozen): bottom_diff = dy * slope / sqrt(var + eps)
        dy = torch.ones(2, 2, 3, 3, dtype=torch.float64)
        x.grad = None
        layer(x)[0].backward(dy)
        expected = np.array([1.5, -0.7]) / np.sqrt(np.array([1.5, 0.5]) + np.float32(1e-5))
        np.testing.assert_allclose(x.grad.numpy(), np.broadcast_to(_per_channel(expected), (2, 2, 3, 3)))


NET = """name: "bn"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 2 dim: 3 dim: 3 } } }
layer { name: "bn" type: "BN" bottom: "data" top: "bn" param { lr_mult: 3 } %s }
"""


@pytest.mark.parametrize("extra,mults", [
    (PSP % "", [3.0, 1.0, 0.0, 0.0]),
    (PSP % "frozen: true", [0.0, 0.0, 0.0, 0.0]),
    ("bn_param { bn_mode: LEARN }", [3.0, 1.0]),
])
def test_pspnet_fixes_the_lr_mult_of_its_statistics(tmp_path: pathlib.Path, extra: str, mults) -> None:
    path = tmp_path / "net.prototxt"
    path.write_text(NET % extra)
    net = caffelike.Net(str(path), caffelike.TRAIN)
    assert [p.lr_mult for p in net.learnable_params] == mults


def test_segnet_and_pspnet_fields_together_are_an_error() -> None:
    with pytest.raises(LayerError, match=r"bn_param mixes SegNet/ENet fields \(bn_mode\) with PSPNet fields \(frozen\)"):
        _layer("bn_param { bn_mode: INFERENCE frozen: true }")


def test_v1_bn_enum_upgrades_to_bn(tmp_path: pathlib.Path) -> None:
    """lim0606/caffe-googlenet-bn-experiment's V1 form (``type: BN`` with scale/shift fillers)."""
    text = """name: "v1bn"
input: "data"
input_dim: 2 input_dim: 3 input_dim: 4 input_dim: 4
layers { bottom: "data" top: "bn" name: "bn" type: BN blobs_lr: 1 blobs_lr: 1 weight_decay: 0 weight_decay: 0
  bn_param { scale_filler { type: "constant" value: 1 } shift_filler { type: "constant" value: 0 } } }
"""
    net_param, _ = parse_net(text, "v1.prototxt")
    (layer,) = [lay for lay in net_param.layer if lay.name == "bn"]
    assert layer.type == "BN" and layer.bn_param.scale_filler.value == 1
    path = tmp_path / "v1.prototxt"
    path.write_text(text)
    net = caffelike.Net(str(path), caffelike.TEST)
    x = np.random.default_rng(7).normal(size=(2, 3, 4, 4)).astype(np.float32)
    y = np.array(net.forward(data=x)["bn"])
    m = x.mean(axis=(0, 2, 3), keepdims=True)
    v = (x * x).mean(axis=(0, 2, 3), keepdims=True) - m * m
    np.testing.assert_allclose(y, (x - m) / np.sqrt(v + 1e-9), rtol=1e-4, atol=1e-4)


def test_opencv_dnn_has_no_caffe_bn(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "net.prototxt"
    path.write_text(NET % "bn_param { bn_mode: INFERENCE }")
    with pytest.raises(cv2.error, match='type "BN"'):
        cv_net = cv2.dnn.readNetFromCaffe(str(path))
        cv_net.setInput(np.zeros((2, 2, 3, 3), np.float32))
        cv_net.forward()


FOLD_NET = """name: "fold"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 5 dim: 5 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 2 kernel_size: 3 weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "bn" type: "BN" bottom: "conv" top: "conv" %s }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
"""


@pytest.mark.parametrize("extra", ["bn_param { bn_mode: INFERENCE }", PSP % "frozen: true", PSP % ""])
def test_bn_with_fixed_statistics_folds_into_the_convolution(tmp_path: pathlib.Path, extra: str) -> None:
    """Deploy folding (Net(optimize=True)) uses BN's affine map: the fork formulas above, as a
    per-channel x * scale + shift; the folded net gives the unfolded net's output."""
    path = tmp_path / "net.prototxt"
    path.write_text(FOLD_NET % extra)
    plain = caffelike.Net(str(path), caffelike.TEST)
    stats = [[1.5, -0.5], [0.25, 1.0], [0.3, -0.2], [2.0, 0.5]]
    for blob, value in zip(plain.params["bn"], stats):
        blob.data[...] = np.asarray(value, np.float32).reshape(blob.data.shape)
    weights = tmp_path / "w.caffemodel"
    plain.save(str(weights))
    folded = caffelike.Net(str(path), caffelike.TEST, weights=str(weights), optimize=True)
    assert {lay.name: type(m).__name__ for lay, m in folded.graph.pairs()}["bn"] == "PassThrough"
    x = np.random.default_rng(8).normal(size=(2, 3, 5, 5)).astype(np.float32)
    expected = np.array(plain.forward(data=x)["conv"])
    np.testing.assert_allclose(np.array(folded.forward(data=x)["conv"]), expected, rtol=1e-5, atol=1e-5)
    layer = _layer(extra)
    _set(layer, *stats[:len(layer.blobs)])
    scale, shift = (t.numpy() for t in layer.affine(2))
    if layer.pspnet:
        slope, bias, mean, var = (np.array(v) for v in stats)
        np.testing.assert_allclose(scale, slope / np.sqrt(var + 1e-5), rtol=1e-6)
        np.testing.assert_allclose(shift, bias - mean * slope / np.sqrt(var + 1e-5), rtol=1e-6)
    else:
        np.testing.assert_allclose(scale, stats[0])
        np.testing.assert_allclose(shift, stats[1])


def test_bn_with_batch_statistics_does_not_fold() -> None:
    assert _layer("bn_param { bn_mode: LEARN }").affine(2) is None
    assert _layer(PSP % "", caffelike.TRAIN).affine(2) is None
    assert _layer("bn_param { bn_mode: INFERENCE }", tops=2).affine(2) is None
