"""The channels_last BatchNorm training kernel (layers/bn_channels_last.py): its backward
against float64 finite differences, its values, statistics and gradients against torch's own
``batch_norm`` on the same tensor, and the BatchNorm layer taking it only where it was meant to."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from caffelike.layers import bn_channels_last
from caffelike.layers.normalization import BatchNorm
from caffelike.proto import caffe_pb2

CL = torch.channels_last


def _nhwc(*shape: int, dtype=torch.float64, seed: int = 0, scale: float = 1.0, shift: float = 0.0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=gen, dtype=dtype) * scale + shift).contiguous(memory_format=CL)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", [(3, 12, 4, 5), (2, 5, 3, 7), (1, 24, 1, 3)])
def test_backward_matches_finite_differences(shape, affine):
    c = shape[1]
    x = _nhwc(*shape).requires_grad_()
    weight = (torch.rand(c, dtype=torch.float64) + 0.5).requires_grad_() if affine else None
    bias = torch.randn(c, dtype=torch.float64).requires_grad_() if affine else None

    def fn(x, *wb):
        w, b = wb if wb else (None, None)
        stats = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64)
        return bn_channels_last.batch_norm_train(x, w, b, *stats, 1e-5)

    inputs = (x, weight, bias) if affine else (x,)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", [(96, 24, 12, 12), (8, 12, 9, 7), (4, 20, 5, 5)])
def test_equals_torch_batch_norm(shape):
    """Float32 with a large mean (the backward works on centred values): top, batch statistics
    and the three gradients as torch's kernel gives them in float64, within float32 rounding."""
    c = shape[1]
    x = _nhwc(*shape, dtype=torch.float32, scale=2.0, shift=30.0)
    grad = _nhwc(*shape, dtype=torch.float32, seed=1)
    w0 = torch.rand(c) + 0.5
    b0 = torch.randn(c)
    results = []
    for dtype in (torch.float32, torch.float64):
        xi = x.to(dtype).clone().requires_grad_()
        w, b = w0.to(dtype).clone().requires_grad_(), b0.to(dtype).clone().requires_grad_()
        mean, var = torch.zeros(c, dtype=dtype), torch.zeros(c, dtype=dtype)
        if dtype == torch.float32:
            top = bn_channels_last.batch_norm_train(xi, w, b, mean, var, 1e-5)
        else:
            top = F.batch_norm(xi.contiguous(), mean, var, w, b, training=True, momentum=1.0, eps=1e-5)
        top.backward(grad.to(dtype))
        results.append([t.detach().double().contiguous() for t in (top, mean, var, xi.grad, w.grad, b.grad)])
        if dtype == torch.float32:
            assert xi.grad.is_contiguous(memory_format=CL)  # the layers before it stay NHWC
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def test_taken_only_where_meant():
    wanted = bn_channels_last.wanted
    grad_x = _nhwc(2, 12, 5, 5, dtype=torch.float32).requires_grad_()
    assert wanted(grad_x, None)
    assert not wanted(grad_x.detach(), None)  # no gradient wanted: torch's forward alone
    with torch.no_grad():
        assert not wanted(grad_x, None)
    assert not wanted(grad_x.contiguous(), None)  # NCHW
    for channels in (16, 32, 40, 64):  # torch's own kernel is fast or faster there
        assert not wanted(_nhwc(2, channels, 5, 5, dtype=torch.float32).requires_grad_(), None)
    assert not wanted(_nhwc(2, 12, 1, 1, dtype=torch.float32).requires_grad_(), None)  # both layouts
    assert not wanted(_nhwc(2, 12, 5, 5, dtype=torch.bfloat16).requires_grad_(), None)


def test_batchnorm_layer_nhwc_equals_nchw(monkeypatch):
    """The BatchNorm layer in training on an NHWC bottom of 24 channels: top, Caffe's three
    running sums and the bottom's gradient as for the same values in NCHW."""
    param = caffe_pb2.LayerParameter(name="bn", type="BatchNorm")
    shape = (16, 24, 6, 6)
    x = _nhwc(*shape, dtype=torch.float32, scale=3.0, shift=-2.0)
    grad = _nhwc(*shape, dtype=torch.float32, seed=2)
    calls = []
    kernel = bn_channels_last.batch_norm_train
    monkeypatch.setattr(bn_channels_last, "batch_norm_train",
                        lambda *a: calls.append(1) or kernel(*a))
    outs = []
    for layout in (CL, torch.contiguous_format):
        layer = BatchNorm(param, [shape])
        xi = x.clone(memory_format=layout).requires_grad_()
        top = layer(xi)[0]
        top.backward(grad.contiguous(memory_format=layout))
        outs.append([top.detach().contiguous(), xi.grad.contiguous()] + [b.detach().clone() for b in layer.blobs])
    assert calls == [1]  # the NHWC pass took the kernel, the NCHW one torch's
    for got, want in zip(*outs):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
