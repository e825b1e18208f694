"""Caffe's automatically inserted Split layers (insert_splits.cpp), as Caffe's own
test_split_layer.cpp expects them, and their place in a built net.

Expected layer lists follow Caffe's SplitLayerInsertionTest cases (TestLossInsertion,
TestInsertionTwoTop); every public net's full list (Split layers included) is pinned by
test_shapes.py against real Caffe.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from google.protobuf import text_format

import caffelike
from caffelike.errors import NetError
from caffelike.net import Net
from caffelike.net.splits import insert_splits
from caffelike.proto import caffe_pb2


def _net(text: str) -> caffe_pb2.NetParameter:
    return text_format.Parse(text, caffe_pb2.NetParameter())


def _wiring(net: caffe_pb2.NetParameter) -> list[tuple]:
    return [(l.name, l.type, list(l.bottom), list(l.top), list(l.loss_weight)) for l in net.layer]


def ip(name: str, bottom: str, extra: str = "") -> str:
    return f"layer {{ name: '{name}' type: 'InnerProduct' bottom: '{bottom}' top: '{name}' {extra} }} "


def test_loss_weighted_top_read_elsewhere_gets_a_split_carrying_the_weight():
    net = _net("layer { name: 'data' type: 'DummyData' top: 'data' } "
               + ip("innerproduct1", "data", "loss_weight: 2.5") + ip("innerproduct2", "data")
               + "layer { name: 'loss' type: 'EuclideanLoss' bottom: 'innerproduct1' bottom: 'innerproduct2' }")
    assert _wiring(insert_splits(net)) == [
        ("data", "DummyData", [], ["data"], []),
        ("data_data_0_split", "Split", ["data"], ["data_data_0_split_0", "data_data_0_split_1"], []),
        ("innerproduct1", "InnerProduct", ["data_data_0_split_0"], ["innerproduct1"], []),
        ("innerproduct1_innerproduct1_0_split", "Split", ["innerproduct1"],
         ["innerproduct1_innerproduct1_0_split_0", "innerproduct1_innerproduct1_0_split_1"], [2.5, 0.0]),
        ("innerproduct2", "InnerProduct", ["data_data_0_split_1"], ["innerproduct2"], []),
        ("loss", "EuclideanLoss", ["innerproduct1_innerproduct1_0_split_1", "innerproduct2"], [], []),
    ]


def test_each_top_of_a_two_top_layer_gets_its_own_split():
    net = _net("layer { name: 'data' type: 'Data' top: 'data' top: 'label' } "
               + ip("innerprod1", "data") + ip("innerprod2", "label") + ip("innerprod3", "data")
               + ip("innerprod4", "label")
               + "layer { name: 'loss1' type: 'EuclideanLoss' bottom: 'innerprod1' bottom: 'innerprod3' } "
               + "layer { name: 'loss2' type: 'EuclideanLoss' bottom: 'innerprod2' bottom: 'innerprod4' }")
    out = _wiring(insert_splits(net))
    assert [l[0] for l in out] == ["data", "data_data_0_split", "label_data_1_split", "innerprod1", "innerprod2",
                                   "innerprod3", "innerprod4", "loss1", "loss2"]
    assert out[2][2:4] == (["label"], ["label_data_1_split_0", "label_data_1_split_1"])
    assert [l[2] for l in out[3:7]] == [["data_data_0_split_0"], ["label_data_1_split_0"],
                                         ["data_data_0_split_1"], ["label_data_1_split_1"]]


def test_single_and_in_place_reads_get_no_split():
    net = _net("layer { name: 'data' type: 'Input' top: 'data' } "
               + ip("a", "data") + "layer { name: 'relu' type: 'ReLU' bottom: 'a' top: 'a' } " + ip("b", "a"))
    assert _wiring(insert_splits(net)) == _wiring(net)


SPLIT_NET = """
layer { name: 'data' type: 'Input' top: 'data' input_param { shape { dim: 2 dim: 3 } } }
layer { name: 'a' type: 'Power' bottom: 'data' top: 'a' power_param { scale: 2 } }
layer { name: 'b' type: 'Power' bottom: 'data' top: 'b' power_param { scale: 3 } }
"""


def test_split_blobs_are_in_the_net_and_hold_the_producer_data(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(SPLIT_NET)
    net = Net(str(path), caffelike.TEST)
    assert list(net.blobs) == ["data", "data_data_0_split_0", "data_data_0_split_1", "a", "b"]
    assert net._layer_names == ["data", "data_data_0_split", "a", "b"]
    assert net.layers[1].type == "Split" and len(net.layers[1].blobs) == 0
    assert net.bottom_names["a"] == ["data_data_0_split_0"]
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    net.forward(data=x)
    np.testing.assert_array_equal(net.blobs["data_data_0_split_1"].data, x)
    # Caffe's SplitLayer shares its bottom's data (no copy); each top keeps its own diff
    assert np.shares_memory(net.blobs["data_data_0_split_1"].data, net.blobs["data"].data)
    assert not np.shares_memory(net.blobs["data_data_0_split_1"].diff, net.blobs["data"].diff)
    np.testing.assert_array_equal(net.blobs["b"].data, 3 * x)


def test_split_module_returns_its_bottom_without_a_copy(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(SPLIT_NET)
    net = Net(str(path), caffelike.TEST)
    x = torch.ones(2, 3)
    tops = net.graph.module(1)(x)
    assert len(tops) == 2 and all(t is x for t in tops)


def test_a_spelled_out_split_keeps_working(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(SPLIT_NET.replace("bottom: 'data' top: 'a'", "bottom: 'd1' top: 'a'")
                    .replace("bottom: 'data' top: 'b'", "bottom: 'd2' top: 'b'")
                    .replace("layer { name: 'a'",
                             "layer { name: 's' type: 'Split' bottom: 'data' top: 'd1' top: 'd2' }\nlayer { name: 'a'"))
    net = Net(str(path), caffelike.TEST)
    assert net._layer_names == ["data", "s", "a", "b"]
    out = net.forward(data=np.ones((2, 3), np.float32))
    np.testing.assert_array_equal(out["a"], 2)
    np.testing.assert_array_equal(out["b"], 3)


def test_an_in_place_layer_on_a_blob_read_elsewhere_is_refused_as_caffe_does(tmp_path):
    # Caffe splits 'a' (read by 'x' and by the in-place 'relu'); relu's top 'a' is then a
    # second producer of 'a': Caffe's AppendTop dies with "produced by multiple sources".
    path = tmp_path / "net.prototxt"
    path.write_text(SPLIT_NET + "layer { name: 'relu' type: 'ReLU' bottom: 'a' top: 'a' }\n"
                    "layer { name: 'x' type: 'Power' bottom: 'a' top: 'x' }\n"
                    .replace("layer { name: 'relu'", "layer { name: 'y' type: 'Power' bottom: 'a' top: 'y' }\n"
                             "layer { name: 'relu'"))
    with pytest.raises(NetError, match=r"net.prototxt:\d+: layer 'relu' \(ReLU\): in-place top 'a' is also read"):
        Net(str(path), caffelike.TEST)
