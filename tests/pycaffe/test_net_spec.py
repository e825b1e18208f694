"""NetSpec / layers / params against real pycaffe output and pycaffe's own test_net_spec.py.

``examples/hdf5_classification/nonlinear_auto_{train,test}.prototxt`` in BVLC/caffe were
written by pycaffe's net_spec (examples/02-brewing-logreg.ipynb); the same spec must give the
same NetParameter.
"""
from __future__ import annotations

import pathlib
import re

import pytest

import caffelike as caffe
# pycaffe: `from caffe import layers as L, params as P` (see the caffe alias); the same objects:
from caffelike.net_spec import layers as L, params as P
from caffelike.io import pycaffe_io  # noqa: F401  (caffe_pb2 import path)
from caffelike.proto import caffe_pb2

from google.protobuf import text_format

CORPUS = pathlib.Path(__file__).resolve().parents[1] / "data" / "corpus" / "BVLC__caffe" / "examples"


def _nonlinear_net(hdf5: str, batch_size: int) -> caffe_pb2.NetParameter:
    # the notebook's spec, as published in examples/02-brewing-logreg.ipynb
    n = caffe.NetSpec()
    n.data, n.label = L.HDF5Data(batch_size=batch_size, source=hdf5, ntop=2)
    n.ip1 = L.InnerProduct(n.data, num_output=40, weight_filler=dict(type="xavier"))
    n.relu1 = L.ReLU(n.ip1, in_place=True)
    n.ip2 = L.InnerProduct(n.ip1, num_output=2, weight_filler=dict(type="xavier"))
    n.accuracy = L.Accuracy(n.ip2, n.label)
    n.loss = L.SoftmaxWithLoss(n.ip2, n.label)
    return n.to_proto()


@pytest.mark.parametrize("split", ["train", "test"])
def test_same_proto_as_pycaffe_wrote(split: str) -> None:
    expected = text_format.Parse((CORPUS / "hdf5_classification" / f"nonlinear_auto_{split}.prototxt").read_text(),
                                 caffe_pb2.NetParameter())
    ours = _nonlinear_net(f"examples/hdf5_classification/data/{split}.txt", 10)
    assert ours == expected
    assert str(ours) == str(expected)


def _lenet(batch_size: int) -> caffe_pb2.NetParameter:
    n = caffe.NetSpec()
    n.data, n.label = L.DummyData(shape=[dict(dim=[batch_size, 1, 28, 28]), dict(dim=[batch_size, 1, 1, 1])],
                                  transform_param=dict(scale=1. / 255), ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20, weight_filler=dict(type="xavier"))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.conv2 = L.Convolution(n.pool1, kernel_size=5, num_output=50, weight_filler=dict(type="xavier"))
    n.pool2 = L.Pooling(n.conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.ip1 = L.InnerProduct(n.pool2, num_output=500, weight_filler=dict(type="xavier"))
    n.relu1 = L.ReLU(n.ip1, in_place=True)
    n.ip2 = L.InnerProduct(n.relu1, num_output=10, weight_filler=dict(type="xavier"))
    n.loss = L.SoftmaxWithLoss(n.ip2, n.label)
    return n.to_proto()


def _anon_lenet(batch_size: int) -> caffe_pb2.NetParameter:
    data, label = L.DummyData(shape=[dict(dim=[batch_size, 1, 28, 28]), dict(dim=[batch_size, 1, 1, 1])],
                              transform_param=dict(scale=1. / 255), ntop=2)
    conv1 = L.Convolution(data, kernel_size=5, num_output=20, weight_filler=dict(type="xavier"))
    pool1 = L.Pooling(conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    ip1 = L.InnerProduct(pool1, num_output=500, weight_filler=dict(type="xavier"))
    relu1 = L.ReLU(ip1, in_place=True)
    loss = L.SoftmaxWithLoss(relu1, label)
    return loss.to_proto()


def test_lenet_in_place_and_params() -> None:
    net = _lenet(50)
    assert len(net.layer) == 9
    assert net.layer[6].bottom == net.layer[6].top == ["ip1"] and net.layer[6].name == "relu1"
    assert net.layer[2].pooling_param.pool == caffe_pb2.PoolingParameter.MAX == P.Pooling.MAX
    assert net.layer[0].transform_param.scale == pytest.approx(1 / 255)
    assert [list(s.dim) for s in net.layer[0].dummy_data_param.shape] == [[50, 1, 28, 28], [50, 1, 1, 1]]


def test_anonymous_names_follow_pycaffe() -> None:
    net = _anon_lenet(2)
    names = [l.name for l in net.layer]
    # tops are named <Type><count>; a layer takes its first top's name
    assert names == ["DummyData1", "Convolution1", "Pooling1", "InnerProduct1", "ReLU1", "SoftmaxWithLoss1"]
    assert list(net.layer[0].top) == ["DummyData1", "DummyData2"]
    assert list(net.layer[4].top) == ["InnerProduct1"]
    assert list(net.layer[5].bottom) == ["InnerProduct1", "DummyData2"]


def test_zero_tops_and_layer_level_fields() -> None:
    n = caffe.NetSpec()
    n.data, n.data2 = L.DummyData(shape=dict(dim=3), ntop=2)
    n.silence_data = L.Silence(n.data, ntop=0)
    n.silence_data2 = L.Silence(n.data2, ntop=0)
    n.out = L.Python(n.data, module="m", layer="Lay", param_str="x", loss_weight=1,
                     include=dict(phase=caffe.TEST), param=[dict(lr_mult=1), dict(lr_mult=2, decay_mult=0)])
    net = n.to_proto()
    assert [l.type for l in net.layer] == ["DummyData", "Silence", "Silence", "Python"]
    # a NetSpec-assigned top-less layer keeps its attribute name (pycaffe maps names[fn])
    assert [l.name for l in net.layer[1:3]] == ["silence_data", "silence_data2"] and not net.layer[1].top
    assert L.Silence(n.data, ntop=0).type_name == "Silence"
    py = net.layer[3]
    assert (py.python_param.module, py.python_param.layer, py.python_param.param_str) == ("m", "Lay", "x")
    assert list(py.loss_weight) == [1.0] and py.include[0].phase == caffe_pb2.TEST
    assert [p.lr_mult for p in py.param] == [1, 2] and py.param[1].decay_mult == 0


def test_type_error_for_non_top_input() -> None:
    data = L.DummyData(ntop=2)
    with pytest.raises(TypeError, match=r"^Silence input 0 is not a Top \(type is <class 'tuple'>\)$"):
        L.Silence(data, ntop=0)
    L.Silence(*data, ntop=0)


def test_getitem_and_str_round_trip() -> None:
    n = caffe.NetSpec()
    n["data"] = L.Input(shape=dict(dim=[1, 3, 8, 8]))
    n["conv"] = L.Convolution(n["data"], num_output=4, kernel_size=3, pad=1)
    text = str(n.to_proto())
    assert re.search(r'name: "conv"', text)
    parsed = text_format.Parse(text, caffe_pb2.NetParameter())
    assert parsed.layer[1].convolution_param.num_output == 4
    assert list(parsed.layer[0].input_param.shape[0].dim) == [1, 3, 8, 8]
