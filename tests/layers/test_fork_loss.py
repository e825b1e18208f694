"""SoftmaxWithLoss's class weights of SegNet/ENet (issue 16): ``loss_param { weight_by_label_freqs:
true class_weighting: ... }`` (alexgkendall/caffe-segnet softmax_loss_layer.cpp). Oracle: the
fork's Forward_cpu/Backward_cpu rewritten in numpy; gradcheck for the backward."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import caffelike
from caffelike.errors import LayerError
from caffelike.io import parse_text_proto
from caffelike.layers.loss import SoftmaxWithLoss
from caffelike.proto import caffe_pb2

WEIGHTS = [0.5, 2.0, 1.25]


def _layer(extra: str = "", shapes=((2, 3, 2, 3), (2, 1, 2, 3))) -> SoftmaxWithLoss:
    text = ('name: "loss" type: "SoftmaxWithLoss" bottom: "x" bottom: "label" top: "loss" '
            f'loss_param {{ weight_by_label_freqs: true {" ".join(f"class_weighting: {w}" for w in WEIGHTS)} {extra} }}')
    return SoftmaxWithLoss(parse_text_proto(text, caffe_pb2.LayerParameter()), list(shapes), caffelike.TRAIN)


def _fork(x: np.ndarray, label: np.ndarray, ignore: int | None) -> tuple[float, np.ndarray]:
    """SegNet's loss and bottom diff (loss_weight 1, normalize: true) for (N, C, H, W) scores."""
    p = np.exp(x - x.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    loss, count, diff = 0.0, 0, p.copy()
    for n, h, w in np.ndindex(label.shape[0], *label.shape[2:]):
        lab = int(label[n, 0, h, w])
        if lab == ignore:
            diff[n, :, h, w] = 0
            continue
        loss -= np.log(max(p[n, lab, h, w], np.finfo(np.float32).tiny)) * WEIGHTS[lab]
        diff[n, lab, h, w] -= 1
        diff[n, :, h, w] *= WEIGHTS[lab]
        count += 1
    return loss / count, diff / count


@pytest.mark.parametrize("ignore", [None, 1])
def test_weighted_loss_and_gradient_match_segnet(ignore: int | None) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 2, 3))
    label = rng.integers(0, 3, size=(2, 1, 2, 3)).astype(np.float64)
    layer = _layer("" if ignore is None else f"ignore_label: {ignore}")
    xt = torch.from_numpy(x).requires_grad_()
    loss = layer(xt, torch.from_numpy(label))[0]
    loss.backward()
    expected_loss, expected_diff = _fork(x, label, ignore)
    np.testing.assert_allclose(float(loss.detach()), expected_loss, rtol=1e-6)
    np.testing.assert_allclose(xt.grad.numpy(), expected_diff, rtol=1e-6, atol=1e-12)
    assert torch.autograd.gradcheck(lambda v: layer(v, torch.from_numpy(label))[0], (xt.detach().requires_grad_(),))


def test_class_weighting_needs_one_weight_per_class() -> None:
    with pytest.raises(LayerError, match="3 class_weighting values for 4 classes"):
        _layer(shapes=((2, 4, 2, 3), (2, 1, 2, 3)))
