"""Neuron layers against real Caffe's golden cases (tests/golden/layers/<Type>__*)."""
from __future__ import annotations

import pytest
import torch

from caffelike.layers import LAYERS
from caffelike.proto import caffe_pb2

from .golden_case import cases_for, run_case

NEURON_TYPES = ("AbsVal", "BNLL", "Clip", "Dropout", "ELU", "Exp", "Log", "Power", "PReLU",
                "ReLU", "Sigmoid", "Swish", "TanH", "Threshold")


@pytest.mark.parametrize("case", cases_for(*NEURON_TYPES))
def test_golden(case: str) -> None:
    run_case(case)


def _layer(type_name: str, shape=(2, 3, 4), phase: int = caffe_pb2.TEST, **fields):
    lp = caffe_pb2.LayerParameter(name="n", type=type_name, bottom=["x"], top=["y"], **fields)
    return LAYERS.get(type_name).cls(lp, [shape], phase)


def test_relu_gradient_at_zero_is_negative_slope() -> None:
    # relu_layer.cpp Backward_cpu: dy * ((x > 0) + slope * (x <= 0))
    layer = _layer("ReLU", relu_param=caffe_pb2.ReLUParameter(negative_slope=0.25))
    x = torch.tensor([-1.0, 0.0, 2.0], requires_grad=True)
    layer(x)[0].sum().backward()
    assert x.grad.tolist() == [0.25, 0.25, 1.0]


def test_absval_gradient_at_zero_is_zero() -> None:
    # absval_layer.cpp: caffe_cpu_sign, sign(0) = 0
    layer = _layer("AbsVal")
    x = torch.tensor([-1.5, 0.0, 2.0], requires_grad=True)
    layer(x)[0].sum().backward()
    assert x.grad.tolist() == [-1.0, 0.0, 1.0]


def test_clip_gradient_passes_at_the_bounds() -> None:
    # clip_layer.cpp Backward_cpu: x >= min && x <= max
    layer = _layer("Clip", clip_param=caffe_pb2.ClipParameter(min=-0.5, max=0.5))
    x = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0], requires_grad=True)
    layer(x)[0].sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_dropout_train_scales_kept_units_and_test_is_identity() -> None:
    # dropout_layer.cpp: TRAIN keeps with probability 1-p and scales by 1/(1-p)
    p = caffe_pb2.DropoutParameter(dropout_ratio=0.75)
    x = torch.ones(10000)
    train = _layer("Dropout", phase=caffe_pb2.TRAIN, dropout_param=p)
    train.eval()  # the phase decides, not nn.Module.training
    y = train(x)[0]
    assert set(y.unique().tolist()) <= {0.0, 4.0}
    assert 0.2 < (y > 0).float().mean().item() < 0.3
    test = _layer("Dropout", phase=caffe_pb2.TEST, dropout_param=p)
    test.train()
    assert torch.equal(test(x)[0], x)


def test_prelu_default_filler_is_quarter() -> None:
    # prelu_layer.cpp LayerSetUp: constant 0.25 when no filler is given
    layer = _layer("PReLU", shape=(2, 3, 4))
    assert layer.blobs[0].shape == (3,)
    assert layer.blobs[0].tolist() == [0.25] * 3
    shared = _layer("PReLU", shape=(2, 3, 4), prelu_param=caffe_pb2.PReLUParameter(channel_shared=True))
    assert shared.blobs[0].shape == ()


def test_exp_log_bad_base_is_a_layer_error() -> None:
    from caffelike.errors import LayerError
    with pytest.raises(LayerError, match="base must be strictly positive"):
        _layer("Exp", exp_param=caffe_pb2.ExpParameter(base=-2.0))
    with pytest.raises(LayerError, match="base must be strictly positive"):
        _layer("Log", log_param=caffe_pb2.LogParameter(base=0.0))


def test_power_constant_cases() -> None:
    # power_layer.cpp: power 0 -> 1; scale 0 -> shift^power; gradient power*scale
    x = torch.randn(5, requires_grad=True)
    layer = _layer("Power", power_param=caffe_pb2.PowerParameter(power=0.0, shift=3.0))
    y = layer(x)[0]
    assert y.tolist() == [1.0] * 5
    layer = _layer("Power", power_param=caffe_pb2.PowerParameter(power=2.0, scale=0.0, shift=3.0))
    y = layer(x)[0]
    assert y.tolist() == [9.0] * 5
    y.sum().backward()
    assert x.grad.tolist() == [0.0] * 5


def test_neuron_top_shapes_on_meta() -> None:
    for t in NEURON_TYPES:
        fields = {"clip_param": caffe_pb2.ClipParameter(min=0, max=1)} if t == "Clip" else {}
        layer = _layer(t, shape=(2, 3, 4), phase=caffe_pb2.TRAIN, **fields)
        assert layer.top_shapes([(2, 3, 4)]) == [(2, 3, 4)], t


@pytest.mark.parametrize("type_name", ["ELU", "Swish", "BNLL", "Sigmoid", "TanH", "Exp"])
def test_smooth_backward_matches_numeric_gradient(type_name: str) -> None:
    layer = _layer(type_name).double()
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: layer(t)[0], (x,), atol=1e-6)


def test_absval_refuses_in_place() -> None:
    # absval_layer.cpp LayerSetUp: CHECK_NE(top[0], bottom[0])
    from caffelike.errors import LayerError
    lp = caffe_pb2.LayerParameter(name="a", type="AbsVal", bottom=["x"], top=["x"])
    with pytest.raises(LayerError, match="in-place"):
        LAYERS.get("AbsVal").cls(lp, [(2, 3)], caffe_pb2.TEST)


def test_power_negative_base_fractional_power_is_nan() -> None:
    # power_layer.cpp: pow(shift, power) as C's pow: NaN for a negative base and fractional power
    layer = _layer("Power", power_param=caffe_pb2.PowerParameter(power=0.5, scale=0.0, shift=-1.0))
    assert torch.isnan(layer(torch.zeros(3))[0]).all()


def test_threshold_has_no_gradient() -> None:
    layer = _layer("Threshold", threshold_param=caffe_pb2.ThresholdParameter(threshold=0.5))
    x = torch.tensor([0.4, 0.5, 0.6], requires_grad=True)
    y = layer(x)[0]
    assert y.tolist() == [0.0, 0.0, 1.0] and not y.requires_grad
