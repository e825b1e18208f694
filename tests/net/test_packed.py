"""pycaffe's whole CPU forward with packed convolutions (caffelike.net.packed).

The reference is the same net run layer by layer as written (a forward from the second layer,
which takes the plain steps); Caffe's own values for whole deploy nets are pinned by the golden
net tests (test_golden_nets, tests/perf/test_optimize), which run this path by default.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import caffelike
from caffelike.net.fold import InPlaceActivation, optimize_net
from caffelike.net.packed import ContiguousInputs, PackedConv, packing_available

pytestmark = pytest.mark.skipif(not packing_available(), reason="torch without oneDNN packed convolutions")

# In-place chains (conv1: BN+Scale+ReLU, conv2: ReLU, conv3: leaky ReLU), a conv whose BatchNorm
# writes another blob (both stay visible), pooling, a fire-style Concat, Eltwise and the head.
NET = """
name: "packed"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 19 dim: 19 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 8 kernel_size: 3 stride: 2 weight_filler { type: "gaussian" std: 0.3 }
  bias_filler { type: "gaussian" std: 0.1 } } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "sc1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true
  filler { type: "uniform" min: 0.5 max: 1.5 } bias_filler { type: "gaussian" std: 0.2 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  convolution_param { num_output: 8 kernel_size: 1 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "conv3" type: "Convolution" bottom: "pool1" top: "conv3"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 group: 2 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "relu3" type: "ReLU" bottom: "conv3" top: "conv3" relu_param { negative_slope: 0.1 } }
layer { name: "cat" type: "Concat" bottom: "conv2" bottom: "conv3" top: "cat" }
layer { name: "conv4" type: "Convolution" bottom: "cat" top: "conv4"
  convolution_param { num_output: 8 kernel_size: 3 pad: 2 dilation: 2 weight_filler { type: "gaussian" std: 0.2 } } }
layer { name: "bn4" type: "BatchNorm" bottom: "conv4" top: "bn4" }
layer { name: "sum" type: "Eltwise" bottom: "bn4" bottom: "conv2" top: "sum" }
layer { name: "relu_sum" type: "ReLU" bottom: "sum" top: "sum" }
layer { name: "ip" type: "InnerProduct" bottom: "sum" top: "ip" inner_product_param { num_output: 5
  weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "drop" type: "Dropout" bottom: "ip" top: "drop" }
layer { name: "relu_drop" type: "ReLU" bottom: "drop" top: "drop" }
layer { name: "prob" type: "Softmax" bottom: "drop" top: "prob" }
"""


@pytest.fixture
def net_file(tmp_path):
    path = tmp_path / "packed.prototxt"
    path.write_text(NET)
    return str(path)


def _net(path: str, seed: int = 0) -> caffelike.Net:
    torch.manual_seed(seed)
    net = caffelike.Net(path, caffelike.TEST)
    rng = np.random.default_rng(seed)
    for name in ("bn1", "bn4"):  # running sums, a scale factor other than 1
        mean, var, factor = net.params[name]
        mean.data[...] = rng.normal(0, 1, mean.shape) * 2.0
        var.data[...] = rng.uniform(0.5, 2.0, var.shape) * 2.0
        factor.data[...] = 2.0
    return net


def _as_written(net: caffelike.Net, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every blob of a forward that runs each layer as written (a partial forward)."""
    net.blobs["data"].data[...] = x
    net.forward(start="conv1")
    return {name: blob.data.copy() for name, blob in net.blobs.items()}


def _whole(net: caffelike.Net, x: np.ndarray) -> dict[str, np.ndarray]:
    net.forward(data=x)
    return {name: blob.data.copy() for name, blob in net.blobs.items()}


def _assert_blobs_close(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for name in want:
        scale = max(1.0, float(np.abs(want[name]).max()))
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5 * scale, err_msg=name)


def _input(seed: int = 1, batch: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, 19, 19)).astype(np.float32)


def test_whole_forward_packs_chains_and_keeps_every_blob(net_file):
    net = _net(net_file)
    x = _input()
    got = _whole(net, x)
    modules = {lay.name: m for (lay, m, _, _) in net._whole_pass_steps()}
    assert isinstance(modules["conv1"], PackedConv) and modules["conv1"].slope == 0.0
    assert len(modules["conv1"]._affine) == 2  # BatchNorm and Scale folded in
    assert modules["conv3"].slope == pytest.approx(0.1)
    assert modules["conv4"]._affine == [] and modules["conv4"].slope is None  # bn4 writes its own blob
    assert isinstance(modules["ip"], ContiguousInputs)
    assert isinstance(modules["relu_sum"], InPlaceActivation)  # Eltwise's new tensor, one reader
    assert not isinstance(modules["relu_drop"], InPlaceActivation)  # TEST Dropout's top is ip's tensor
    _assert_blobs_close(got, _as_written(_net(net_file), x))
    assert not np.allclose(got["conv4"], got["bn4"])  # both blobs hold their own values
    assert (got["ip"] < 0).any()  # the ReLU on Dropout's top left ip's value alone


def test_writes_through_a_held_numpy_view_are_seen(net_file):
    net, ref = _net(net_file), _net(net_file)
    x = _input()
    _whole(net, x)
    weight = net.params["conv1"][0].data  # a script keeps the array and writes through it later
    gamma = net.params["sc1"][0].data
    for step in range(2):
        weight[...] *= 0.5
        gamma[0] += 1.0
        ref.params["conv1"][0].data[...] *= 0.5
        ref.params["sc1"][0].data[0] += 1.0
        _assert_blobs_close(_whole(net, x), _as_written(ref, x))


def test_writes_through_a_dropped_view_and_by_torch_are_seen(net_file):
    net, ref = _net(net_file), _net(net_file)
    x = _input()
    _whole(net, x)
    net.params["conv2"][0].data[...] = 0.25  # the view dies at once; the next forward repacks
    ref.params["conv2"][0].data[...] = 0.25
    _assert_blobs_close(_whole(net, x), _as_written(ref, x))
    with torch.no_grad():  # torch writes (solver updates, copy_from) bump the version counter
        net.graph.module(net.plan.layer_index("bn1")).blobs[0].add_(1.0)
        ref.graph.module(ref.plan.layer_index("bn1")).blobs[0].add_(1.0)
    _assert_blobs_close(_whole(net, x), _as_written(ref, x))


def test_weights_loaded_and_batch_reshaped(net_file, tmp_path):
    source = _net(net_file, seed=3)
    weights = str(tmp_path / "w.caffemodel")
    source.save(weights)
    net = _net(net_file)
    _whole(net, _input())
    net.copy_from(weights)
    net.blobs["data"].reshape(5, 3, 19, 19)
    net.reshape()
    ref = caffelike.Net(net_file, weights, caffelike.TEST)
    ref.blobs["data"].reshape(5, 3, 19, 19)
    ref.reshape()
    x = _input(batch=5)
    _assert_blobs_close(_whole(net, x), _as_written(ref, x))


def test_optimized_net_runs_its_folded_chains_packed(net_file):
    net, ref = _net(net_file), _net(net_file)
    optimize_net(net, channels_last=True)
    optimize_net(ref, channels_last=True)
    x = _input()
    modules = {lay.name: m for (lay, m, _, _) in net._whole_pass_steps()}
    assert isinstance(modules["conv4"], PackedConv) and len(modules["conv4"]._affine) == 1
    got = _whole(net, x)
    want = _as_written(ref, x)  # optimize's own folded layers, unpacked
    _assert_blobs_close({k: got[k] for k in ("prob", "conv1", "cat")}, {k: want[k] for k in ("prob", "conv1", "cat")})


def test_training_net_and_backward_are_not_packed(net_file):
    net = caffelike.Net(net_file, caffelike.TRAIN)
    net.forward(data=_input())
    assert not any(isinstance(m, PackedConv) for _, m in net.graph.pairs())


def test_a_parameter_whose_view_was_taken_still_pickles(net_file, tmp_path):
    net = _net(net_file)
    held = net.params["conv1"][0].data  # noqa: F841 - a live view on the parameter
    param = net.graph.module(net.plan.layer_index("conv1")).blobs[0]
    torch.save(param, tmp_path / "p.pt")
    np.testing.assert_array_equal(torch.load(tmp_path / "p.pt", weights_only=False).detach().numpy(), held)
