"""Net wiring with Caffe's semantics (src/caffe/net.cpp Net::Init, FilterNet, AppendTop/Bottom/Param).

Expected values come from Caffe's documented rules and formulas: Power is
``(shift + scale * x) ^ power`` (power_layer.cpp), EuclideanLoss is
``sum((a - b)^2) / (2 N)`` (euclidean_loss_layer.cpp), InnerProduct is ``x W^T + b``.
"""
from __future__ import annotations

import logging
import pathlib
import tempfile

import numpy as np
import pytest
import torch

import caffelike
from caffelike.errors import NetError
from caffelike.net import Net


INPUT = 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }\n'


def net_from(text: str, phase: int = caffelike.TEST, **kw) -> Net:
    """Build from a real file, so errors carry its name and line."""
    with tempfile.TemporaryDirectory() as d:
        path = pathlib.Path(d) / "test.prototxt"
        path.write_text(text)
        return Net(str(path), phase, **kw)


def power(name: str, bottom: str, top: str, scale: float = 1.0, extra: str = "") -> str:
    return (f'layer {{ name: "{name}" type: "Power" bottom: "{bottom}" top: "{top}" '
            f'power_param {{ scale: {scale} }} {extra} }}\n')


def written_layers(net: Net) -> list[str]:
    """The layer names minus the Split layers Caffe inserts for a blob read more than once."""
    return [name for name, layer in zip(net._layer_names, net.layers) if layer.type != "Split"]


# -- NetState filtering ----------------------------------------------------------------------
FILTER_NET = INPUT + "".join([
    power("train_only", "data", "a", extra="include { phase: TRAIN }"),
    power("test_only", "data", "b", extra="include { phase: TEST }"),
    power("not_test", "data", "c", extra="exclude { phase: TEST }"),
    power("level2", "data", "d", extra="include { min_level: 2 }"),
    power("max1", "data", "e", extra="include { max_level: 1 }"),
    power("stage_ab", "data", "f", extra='include { stage: "a" stage: "b" }'),
    power("not_b", "data", "g", extra='include { not_stage: "b" }'),
    power("or_rules", "data", "h", extra='include { stage: "x" } include { phase: TRAIN }'),
])


@pytest.mark.parametrize("phase,level,stages,expected", [
    (caffelike.TEST, 0, [], ["data", "test_only", "max1", "not_b"]),
    (caffelike.TRAIN, 0, [], ["data", "train_only", "not_test", "max1", "not_b", "or_rules"]),
    (caffelike.TEST, 2, ["a"], ["data", "test_only", "level2", "not_b"]),
    (caffelike.TEST, 1, ["a", "b"], ["data", "test_only", "max1", "stage_ab"]),
    (caffelike.TEST, 0, ["x"], ["data", "test_only", "max1", "not_b", "or_rules"]),
])
def test_netstate_filtering(phase, level, stages, expected):
    net = net_from(FILTER_NET, phase, level=level, stages=stages)
    assert written_layers(net) == expected


def test_include_and_exclude_together_is_an_error():
    with pytest.raises(NetError, match="either include rules or exclude rules"):
        net_from(INPUT + power("p", "data", "q", extra="include { phase: TEST } exclude { phase: TRAIN }"))


# -- in-place, fan-out, outputs ---------------------------------------------------------------
def test_in_place_layer_rebinds_the_blob():
    net = net_from(INPUT + power("p1", "data", "y", 2.0) + power("p2", "y", "y", 3.0))
    assert list(net.blobs) == ["data", "y"]
    assert net.top_names["p2"] == ["y"] and net.bottom_names["p2"] == ["y"]
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = net.forward(data=x)
    np.testing.assert_array_equal(out["y"], 6 * x)  # the blob shows the last in-place value
    np.testing.assert_array_equal(net.blobs["y"].data, 6 * x)


def test_outputs_are_the_unconsumed_tops_in_name_order():
    net = net_from(INPUT + power("p1", "data", "zz") + power("p2", "data", "aa") + power("p3", "zz", "mm"))
    assert net.outputs == ["aa", "mm"]
    assert net.inputs == ["data"]


def test_fan_out_gradients_are_summed():
    # y = 2x feeds two Power layers whose tops carry loss weights 1 and 0.5:
    # objective = sum(3y) + 0.5 sum(5y)  =>  d/dx = 2 * (3 + 2.5) = 11.
    text = ("force_backward: true\n" + INPUT + power("p", "data", "y", 2.0)
            + power("a", "y", "ya", 3.0, "loss_weight: 1") + power("b", "y", "yb", 5.0, "loss_weight: 0.5"))
    net = net_from(text)
    assert net.loss_weights == {"ya": 1.0, "yb": 0.5}
    x = np.ones((2, 3), np.float32)
    net.forward(data=x)
    diffs = net.backward()
    np.testing.assert_allclose(diffs["data"], np.full((2, 3), 11.0))
    np.testing.assert_allclose(net.blobs["y"].diff, np.full((2, 3), 5.5))
    blobs = net.run({"data": torch.ones(2, 3)})
    assert float(net.objective(blobs)) == pytest.approx(6 * 6 + 0.5 * 6 * 10)


def test_engine_field_is_accepted():
    text = (INPUT.replace("dim: 2 dim: 3", "dim: 1 dim: 1 dim: 4 dim: 4")
            + 'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
              'convolution_param { num_output: 2 kernel_size: 3 engine: CAFFE } }\n'
            + 'layer { name: "r" type: "ReLU" bottom: "c" top: "c" relu_param { engine: CUDNN } }\n')
    net = net_from(text)
    assert net.blobs["c"].shape == (1, 2, 2, 2)


# -- loss weights, propagate_down, need-backward ---------------------------------------------
LOSS_NET = (
    'layer { name: "data" type: "Input" top: "data" top: "target" '
    'input_param { shape { dim: 2 dim: 3 } } }\n'
    'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
    'inner_product_param { num_output: 3 weight_filler { type: "constant" value: 1 } } }\n'
    'layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "target" top: "loss" }\n'
    'layer { name: "side" type: "Power" bottom: "data" top: "side" }\n'
)


def test_loss_layer_top_defaults_to_weight_one():
    net = net_from(LOSS_NET)
    assert net.loss_weights == {"loss": 1.0}
    assert net.blob_loss_weights["loss"] == 1.0 and net.blob_loss_weights["ip"] == 0.0
    assert net.outputs == ["loss", "side"]
    flags = {l.name: l.need_backward for l in net.plan.layers}
    # Caffe: only layers under the loss with learnable params or needing bottoms run backward.
    assert flags == {"data": False, "data_data_0_split": False, "ip": True, "loss": True, "side": False}
    assert [p.layer for p in net.learnable_params] == ["ip", "ip"]


def test_euclidean_backward_matches_the_formula():
    net = net_from(LOSS_NET)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3)).astype(np.float32)
    t = rng.standard_normal((2, 3)).astype(np.float32)
    out = net.forward(data=x, target=t)
    ip = x.sum(axis=1, keepdims=True) * np.ones((1, 3))  # W = 1, b = 0
    np.testing.assert_allclose(out["loss"], ((ip - t) ** 2).sum() / 4, rtol=1e-5)
    net.backward()
    dip = (ip - t) / 2  # d/d ip of sum((ip - t)^2) / (2N), N = 2
    np.testing.assert_allclose(net.params["ip"][0].diff, dip.T @ x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.params["ip"][1].diff, dip.sum(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(net.blobs["data"].diff, 0)  # no force_backward: inputs get no diff
    # Parameter diffs accumulate across backward calls until cleared, as in Caffe.
    net.backward()
    np.testing.assert_allclose(net.params["ip"][1].diff, 2 * dip.sum(0), rtol=1e-5, atol=1e-6)


def test_propagate_down_false_stops_the_gradient():
    text = LOSS_NET.replace('top: "loss" }', 'top: "loss" propagate_down: false propagate_down: false }')
    net = net_from(text)
    layer = {lay.name: lay for lay in net.plan.layers}
    assert layer["loss"].bottom_need_backward == (False, False)
    assert not layer["ip"].need_backward  # all of ip's tops skip backprop
    net.forward(data=np.ones((2, 3), np.float32), target=np.zeros((2, 3), np.float32))
    net.backward()
    np.testing.assert_array_equal(net.params["ip"][0].diff, 0)


def test_force_backward_gives_input_diffs():
    text = "force_backward: true\n" + LOSS_NET
    net = net_from(text)
    x = np.ones((2, 3), np.float32)
    net.forward(data=x, target=np.zeros((2, 3), np.float32))
    diffs = net.backward()
    # ip = 3 everywhere; d loss / d ip = 3/2; d/dx = dip @ W = 3/2 * 3 = 4.5
    np.testing.assert_allclose(diffs["data"], np.full((2, 3), 4.5), rtol=1e-6)
    # EuclideanLoss allows force_backward on both bottoms: d/dt = -(ip - t) / N
    np.testing.assert_allclose(net.blobs["target"].diff, np.full((2, 3), -1.5), rtol=1e-6)


def test_force_backward_overrides_propagate_down_for_allowed_bottoms():
    text = "force_backward: true\n" + LOSS_NET.replace(
        'top: "loss" }', 'top: "loss" propagate_down: false propagate_down: false }')
    net = net_from(text)
    assert net.plan.layers[net.plan.layer_index("loss")].bottom_need_backward == (True, True)


def test_loss_layer_without_top_gets_an_automatic_one():
    net = net_from(LOSS_NET.replace(' top: "loss" }', ' }'))
    assert list(net.loss_weights.values()) == [1.0]
    assert "loss" not in net.outputs


def test_lr_and_decay_mults_and_batchnorm_statistics():
    text = (INPUT.replace("dim: 2 dim: 3", "dim: 2 dim: 3 dim: 1 dim: 1")
            + 'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
              'param { lr_mult: 2 decay_mult: 0 } param { lr_mult: 0.5 } inner_product_param { num_output: 4 } }\n'
            + 'layer { name: "bn" type: "BatchNorm" bottom: "ip" top: "ip" }\n')
    net = net_from(text)
    got = [(p.layer, p.index, p.lr_mult, p.decay_mult) for p in net.learnable_params]
    assert got == [("ip", 0, 2.0, 0.0), ("ip", 1, 0.5, 1.0),
                   ("bn", 0, 0.0, 1.0), ("bn", 1, 0.0, 1.0), ("bn", 2, 0.0, 1.0)]
    assert [tuple(p.tensor.shape) for p in net.learnable_params] == [(4, 3), (4,), (4,), (4,), (1,)]


# -- param sharing ---------------------------------------------------------------------------
def shared_ip(name: str, out: int, mode: str = "", extra: str = "") -> str:
    return (f'layer {{ name: "{name}" type: "InnerProduct" bottom: "data" top: "{name}" '
            f'param {{ name: "w" {mode} {extra} }} param {{ name: "b_{name}" }} '
            f'inner_product_param {{ num_output: {out} }} }}\n')


def test_named_params_are_shared():
    net = net_from(INPUT + shared_ip("ip1", 4) + shared_ip("ip2", 4))
    ip1, ip2 = net.plan.layer_index("ip1"), net.plan.layer_index("ip2")
    assert net.graph.module(ip1).blobs[0] is net.graph.module(ip2).blobs[0]
    assert [(p.layer, p.index) for p in net.learnable_params] == [("ip1", 0), ("ip1", 1), ("ip2", 1)]
    net.params["ip1"][0].data[...] = 1.0
    np.testing.assert_array_equal(net.params["ip2"][0].data, 1.0)


def test_strict_sharing_shape_mismatch_is_an_error():
    with pytest.raises(NetError, match=r"cannot share param 'w' owned by layer 'ip1'.*shape mismatch"):
        net_from(INPUT + shared_ip("ip1", 4) + shared_ip("ip2", 2))


def _permissive(out2: int) -> str:
    return (INPUT.replace("dim: 2 dim: 3", "dim: 2 dim: 4")
            + 'layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1" param { name: "w" } '
              'inner_product_param { num_output: 2 bias_term: false } }\n'
            + 'layer { name: "ip2" type: "InnerProduct" bottom: "data" top: "ip2" '
              'param { name: "w" share_mode: PERMISSIVE } '
              f'inner_product_param {{ num_output: {out2} bias_term: false transpose: true }} }}\n')


def test_permissive_sharing_checks_the_count_only():
    with pytest.raises(NetError, match="count mismatch"):
        net_from(_permissive(4))
    net = net_from(_permissive(2).replace('top: "ip1" ', 'top: "ip1" loss_weight: 1 ')
                   .replace('top: "ip2" ', 'top: "ip2" loss_weight: 1 '))
    assert [p.layer for p in net.learnable_params] == ["ip1"]
    w = np.arange(8, dtype=np.float32).reshape(2, 4)
    net.params["ip1"][0].data[...] = w
    np.testing.assert_array_equal(net.params["ip2"][0].data, w.reshape(4, 2))  # same memory, Caffe's view
    x = np.random.default_rng(3).standard_normal((2, 4)).astype(np.float32)
    blobs = net.run({"data": torch.from_numpy(x)})
    np.testing.assert_allclose(blobs["ip2"].detach().numpy(), x @ w.reshape(4, 2), rtol=1e-6)
    net.objective(blobs).backward()
    # d/dW of sum(x W^T) is sum_b x[b, k] for every n; with transpose, d/dW2[k, n] is the same.
    col = x.sum(0)
    expected = np.tile(col, (2, 1)) + np.tile(col[:, None], (1, 2)).reshape(2, 4)
    np.testing.assert_allclose(net.learnable_params[0].tensor.grad.numpy(), expected, rtol=1e-5)


def test_shared_param_lr_mult_mismatch_is_an_error():
    with pytest.raises(NetError, match="mismatched lr_mult"):
        net_from(INPUT + shared_ip("ip1", 4, extra="lr_mult: 1") + shared_ip("ip2", 4, extra="lr_mult: 2"))


# -- errors: one line, file:line, layer -------------------------------------------------------
def test_unknown_type_says_did_you_mean():
    with pytest.raises(NetError) as e:
        net_from(INPUT + 'layer {\n name: "relu1"\n type: "Relu"\n bottom: "data"\n top: "data"\n}\n')
    msg = str(e.value)
    assert "test.prototxt:2:" in msg and "layer 'relu1' (Relu)" in msg
    assert "did you mean 'ReLU'?" in msg and "Convolution" in msg and "\n" not in msg


def test_unknown_fork_type_lists_the_fork_types_too():
    # PSPNet's PSAMask (PSANet) is a fork type caffelike does not have: the error still names
    # the file, line, layer and type, and its list of known types holds the forks' (issue 16)
    with pytest.raises(NetError) as e:
        net_from(INPUT + 'layer {\n name: "psa"\n type: "PSAMask"\n bottom: "data"\n top: "psa"\n}\n')
    msg = str(e.value)
    assert "test.prototxt:2:" in msg and "layer 'psa' (PSAMask)" in msg and "unknown layer type 'PSAMask'" in msg
    for fork_type in ("Axpy", "BN", "DetectionOutput", "Interp", "PriorBox", "ROIPooling", "Upsample",
                      "ShuffleChannel", "UnPooling", "ImageSegData"):
        assert fork_type in msg, fork_type


def test_unknown_bottom_blob():
    with pytest.raises(NetError, match=r"test.prototxt:2.*layer 'p' \(Power\): unknown bottom blob 'nope'"):
        net_from(INPUT + power("p", "nope", "q"))


def test_top_produced_twice():
    with pytest.raises(NetError, match=r"layer 'p2' \(Power\): top blob 'q' produced by multiple sources"):
        net_from(INPUT + power("p1", "data", "q") + power("p2", "data", "q"))


def test_wrong_number_of_bottoms():
    with pytest.raises(NetError, match=r"layer 'e' \(Eltwise\): Eltwise takes at least 2 bottom"):
        net_from(INPUT + 'layer { name: "e" type: "Eltwise" bottom: "data" top: "e" }\n')


def test_propagate_down_count_mismatch():
    with pytest.raises(NetError, match="propagate_down"):
        net_from(LOSS_NET.replace('top: "loss" }', 'top: "loss" propagate_down: false }'))


def test_loss_weight_count_mismatch():
    with pytest.raises(NetError, match="loss_weight"):
        net_from(INPUT + power("p", "data", "q", extra="loss_weight: 1 loss_weight: 2"))


def test_too_many_param_specs():
    with pytest.raises(NetError, match="too many param specs"):
        net_from(INPUT + power("p", "data", "q", extra="param { lr_mult: 1 }"))


# -- logging -----------------------------------------------------------------------------------
def test_setup_logs_caffe_lines(caplog):
    text = (INPUT.replace("dim: 2 dim: 3", "dim: 64 dim: 1 dim: 28 dim: 28")
            + 'layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" '
              'convolution_param { num_output: 20 kernel_size: 5 } }\n')
    with caplog.at_level(logging.INFO, logger="caffelike"):
        net_from(text)
    lines = [r.getMessage() for r in caplog.records]
    for expected in ["Creating Layer conv1", "conv1 <- data", "conv1 -> conv1", "Setting up conv1",
                     "Top shape: 64 20 24 24 (737280)", "Memory required for data: 3149824",
                     "This network produces output conv1", "Network initialization done."]:
        assert expected in lines


def test_legacy_input_fields_become_input_layers():
    net = net_from('input: "data"\ninput_shape { dim: 2 dim: 3 dim: 4 dim: 4 }\n'
                   'input: "extra"\ninput_shape { dim: 2 dim: 5 }\n' + power("p", "data", "q"))
    assert net.inputs == ["data", "extra"]
    assert net.blobs["data"].shape == (2, 3, 4, 4) and net.blobs["extra"].shape == (2, 5)
    net = net_from('input: "data"\ninput_dim: 2\ninput_dim: 3\ninput_dim: 4\ninput_dim: 4\n'
                   + power("p", "data", "q"))
    assert net.inputs == ["data"] and net.blobs["q"].shape == (2, 3, 4, 4)
    assert net.outputs == ["q"]


def test_net_parameter_keeps_its_state_and_source_map():
    from caffelike.io import parse_net

    param, source_map = parse_net(FILTER_NET, "solver_net.prototxt")
    param.state.level = 2
    param.state.stage.append("a")
    net = Net(param, caffelike.TEST, source_map=source_map)
    assert written_layers(net) == ["data", "test_only", "level2", "not_b"]
    bad, source_map = parse_net(INPUT + power("p", "nope", "q"), "solver_net.prototxt")
    with pytest.raises(NetError, match=r"^solver_net.prototxt:2: layer 'p'"):
        Net(bad, caffelike.TRAIN, source_map=source_map)
