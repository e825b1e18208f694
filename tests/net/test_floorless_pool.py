"""Whole forward passes skip MAX pooling's -FLT_MAX floor where the bottom is a ReLU's output
(caffelike.net.fold.floorless_max_pools); partial forwards keep it.

The reference for the values is the same net run from its second layer, which takes the
plain layer-by-layer steps (every pooling floored)."""
from __future__ import annotations

import numpy as np
import torch

import caffelike
from caffelike.net.fold import FloorlessMaxPool, floorless_max_pools

FLT_MAX = float(np.finfo(np.float32).max)

NET = """
name: "floorless"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 11 dim: 11 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "data" top: "conv2"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "relu2" relu_param { negative_slope: 0.1 } }
layer { name: "pool_leaky" type: "Pooling" bottom: "relu2" top: "pool_leaky" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "relu3" type: "ReLU" bottom: "conv2" top: "relu3" }
layer { name: "cat" type: "Concat" bottom: "conv1" bottom: "relu3" top: "cat" }
layer { name: "pool_cat" type: "Pooling" bottom: "cat" top: "pool_cat" pooling_param { pool: MAX kernel_size: 3 stride: 1 pad: 1 } }
layer { name: "pool_of_pool" type: "Pooling" bottom: "pool_cat" top: "pool_of_pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "cat_mixed" type: "Concat" bottom: "conv1" bottom: "conv2" top: "cat_mixed" }
layer { name: "pool_mixed" type: "Pooling" bottom: "cat_mixed" top: "pool_mixed" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
"""


def _net(tmp_path) -> caffelike.Net:
    path = tmp_path / "floorless.prototxt"
    path.write_text(NET)
    torch.manual_seed(0)
    return caffelike.Net(str(path), caffelike.TEST)


def test_only_pools_of_relu_outputs_skip_the_floor(tmp_path) -> None:
    net = _net(tmp_path)
    found = floorless_max_pools(net.graph)
    names = {net.graph.plan.layers[i].name for i in found}
    # pool2: a convolution's output; pool_leaky: a leaky ReLU's; pool_mixed: one input is not a ReLU's
    assert names == {"pool1", "pool_cat", "pool_of_pool"}
    assert all(isinstance(m, FloorlessMaxPool) for m in found.values())


def test_whole_forward_matches_the_layer_by_layer_pass(tmp_path) -> None:
    net = _net(tmp_path)
    x = np.random.default_rng(0).standard_normal((2, 3, 11, 11)).astype(np.float32)
    net.forward(data=x)
    whole = {name: blob.data.copy() for name, blob in net.blobs.items()}
    net.forward(start="conv1")  # from the second layer: the plain steps, every pooling floored
    for name, blob in net.blobs.items():
        np.testing.assert_array_equal(whole[name], blob.data, err_msg=name)


def test_a_partial_forward_from_a_written_blob_keeps_the_floor(tmp_path) -> None:
    net = _net(tmp_path)
    net.forward(data=np.zeros((2, 3, 11, 11), np.float32))
    bottom = net.bottom_names["pool1"][0]  # conv1 has two readers: a Split's top
    net.blobs[bottom].data[...] = -np.inf  # no ReLU made these
    net.forward(start="pool1", end="pool1")
    assert np.all(net.blobs["pool1"].data == -FLT_MAX)
