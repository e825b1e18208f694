"""LSTM, RNN and LSTMUnit against real Caffe's golden cases, plus Caffe's recurrent semantics."""
from __future__ import annotations

import pytest
import torch

from caffelike.errors import LayerError
from caffelike.layers import LAYERS
from caffelike.proto import caffe_pb2

from .golden_case import build_layer, cases_for, load_case, run_case


@pytest.mark.parametrize("case", cases_for("LSTM", "RNN", "LSTMUnit"))
def test_golden(case: str) -> None:
    run_case(case)


def _layer(type_name: str, shapes, n_tops: int = 1, hidden: int = 3, expose: bool = False, **extra):
    rp = caffe_pb2.RecurrentParameter(num_output=hidden, expose_hidden=expose, **extra)
    lp = caffe_pb2.LayerParameter(name="r", type=type_name,
                                  bottom=[f"b{i}" for i in range(len(shapes))],
                                  top=[f"t{i}" for i in range(n_tops)], recurrent_param=rp)
    return LAYERS.get(type_name).cls(lp, [tuple(s) for s in shapes], caffe_pb2.TRAIN)


def _randomize(layer) -> None:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for b in layer.blobs:
            b.copy_(torch.randn(b.shape, generator=g) * 0.4)


@pytest.mark.parametrize("type_name,shapes", [
    # lstm_layer.cpp unrolled net: W_xc, b_c, W_xc_static, W_hc
    ("LSTM", [[(2, 3, 2)], [(12, 5), (12,), (12, 3)]]),
    # rnn_layer.cpp unrolled net: W_xh, b_h, W_xh_static, W_hh, W_ho, b_o
    ("RNN", [[(2, 3, 2)], [(3, 5), (3,), (3, 3), (3, 3), (3,)]]),
])
def test_blob_order_with_static_input(type_name: str, shapes) -> None:
    (static,), (w_x, b_x, *rest) = shapes
    layer = _layer(type_name, [(4, 2, 5), (4, 2), static])
    want = [w_x, b_x, (w_x[0], 6)] + rest  # x_static (N, 3, 2) flattens to 6
    assert [tuple(b.shape) for b in layer.blobs] == want
    out = layer(torch.randn(4, 2, 5), torch.ones(4, 2), torch.randn(*static))[0]
    assert out.shape == (4, 2, 3)


def test_static_input_is_added_every_step() -> None:
    # A static input equals an extra input column repeated at every time step.
    layer = _layer("LSTM", [(3, 2, 4), (3, 2), (2, 5)])
    _randomize(layer)
    plain = _layer("LSTM", [(3, 2, 9), (3, 2)])
    with torch.no_grad():
        plain.blobs[0].copy_(torch.cat([layer.blobs[0], layer.blobs[2]], dim=1))
        plain.blobs[1].copy_(layer.blobs[1])
        plain.blobs[2].copy_(layer.blobs[3])
    x, xs, cont = torch.randn(3, 2, 4), torch.randn(2, 5), torch.tensor([[0., 0.], [1., 1.], [1., 0.]])
    got = layer(x, cont, xs)[0]
    want = plain(torch.cat([x, xs.expand(3, 2, 5)], dim=2), cont)[0]
    assert torch.allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("type_name,n_states", [("LSTM", 2), ("RNN", 1)])
def test_expose_hidden_semantics(type_name: str, n_states: int) -> None:
    # recurrent_layer.cpp Reshape: h0/c0 share data only (no diff), hT/cT tops share data only.
    t, n, h = 3, 2, 3
    shapes = [(t, n, 4), (t, n)] + [(1, n, h)] * n_states
    layer = _layer(type_name, shapes, n_tops=1 + n_states, expose=True)
    _randomize(layer)
    x = torch.randn(t, n, 4, requires_grad=True)
    cont = torch.ones(t, n)
    states = [torch.randn(1, n, h, requires_grad=True) for _ in range(n_states)]
    tops = layer(x, cont, *states)
    assert [tuple(top.shape) for top in tops] == layer.top_shapes(shapes)
    # the final states equal the last step of a run without exposing (h_T is the last output)
    if type_name == "LSTM":
        assert torch.equal(tops[1][0], tops[0][-1])
    assert all(not top.requires_grad for top in tops[1:])
    tops[0].sum().backward()
    assert all(s.grad is None for s in states)
    assert x.grad is not None
    with pytest.raises(LayerError, match="initial state"):
        layer(x, cont, *[torch.zeros(1, n, h + 1)] * n_states)


def test_state_carries_over_between_forwards_without_expose_hidden() -> None:
    # recurrent_layer.cpp Forward_cpu copies h_T/c_T into h_0/c_0 before each forward.
    layer = _layer("LSTM", [(2, 1, 2), (2, 1)])
    _randomize(layer)
    x = torch.randn(2, 1, 2)
    first = layer(x, torch.tensor([[0.0], [1.0]]))[0]
    again_reset = layer(x, torch.tensor([[0.0], [1.0]]))[0]
    assert torch.equal(first, again_reset)  # cont_1 = 0 forgets the carried state
    carried = layer(x, torch.tensor([[1.0], [1.0]]))[0]
    assert not torch.allclose(carried, first)
    layer.reset()
    assert torch.equal(layer(x, torch.tensor([[1.0], [1.0]]))[0], first)


def test_lstm_unit_cont_zero_forgets_and_no_grad_to_cont() -> None:
    case = load_case("LSTMUnit__N2_H3")
    layer = build_layer(case)
    c_prev = torch.randn(1, 2, 3, requires_grad=True)
    x = torch.randn(1, 2, 12)
    cont = torch.tensor([[0.0, 1.0]], requires_grad=True)
    c, h = layer(c_prev, x, cont)
    (c.sum() + h.sum()).backward()
    assert torch.count_nonzero(c_prev.grad[0, 0]) == 0  # f = 0 where cont = 0
    assert cont.grad is None


def test_bad_shapes_are_layer_errors() -> None:
    with pytest.raises(LayerError, match="cont"):
        _layer("RNN", [(3, 2, 4), (3, 3)])
    with pytest.raises(LayerError, match="num_output"):
        _layer("RNN", [(3, 2, 4), (3, 2)], hidden=0)
    with pytest.raises(LayerError, match="tops"):
        _layer("LSTM", [(3, 2, 4), (3, 2), (1, 2, 3), (1, 2, 3)], n_tops=1, expose=True)


def test_weight_filler_is_used() -> None:
    filler = caffe_pb2.FillerParameter(type="constant", value=0.5)
    layer = _layer("RNN", [(3, 2, 4), (3, 2)], weight_filler=filler)
    assert torch.all(layer.blobs[0] == 0.5) and torch.all(layer.blobs[1] == 0)


@pytest.mark.parametrize("type_name", ["LSTM", "RNN"])
def test_gradcheck_float64(type_name: str) -> None:
    layer = _layer(type_name, [(3, 2, 4), (3, 2)]).double()
    _randomize(layer)
    x = torch.randn(3, 2, 4, dtype=torch.float64, requires_grad=True)
    # cont_1 = 0 everywhere: each call starts fresh (no carried-over state between calls)
    cont = torch.tensor([[0., 0.], [1., 1.], [1., 0.]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: layer(t, cont)[0], (x,))
