"""Weights in and out: Caffe's CopyTrainedLayersFrom, ToProto (net.save), ToHDF5, ShareTrainedLayersWith.

Expected values: the real LeNet caffemodel and the per-blob sha256 real Caffe recorded in
tests/golden/nets/lenet/blobs.json; file layout from Caffe's net.cpp / caffe.proto.
"""
from __future__ import annotations

import hashlib
import logging
import pathlib

import numpy as np
import pytest

import caffelike
from caffelike.errors import WeightsError
from caffelike.net import Net
from caffelike.proto import caffe_pb2

from .conftest import GOLDEN, load_json

LENET = GOLDEN / "nets" / "lenet"


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype="<f4").tobytes()).hexdigest()


def _lenet(tmp_path: pathlib.Path, edit=None) -> str:
    text = (LENET / "net.prototxt").read_text()
    if edit:
        text = edit(text)
    path = tmp_path / "lenet.prototxt"
    path.write_text(text)
    return str(path)


def test_loaded_blobs_are_bit_identical_to_caffe():
    net = Net(str(LENET / "net.prototxt"), str(LENET / "weights.caffemodel"), caffelike.TEST)
    golden = load_json(LENET / "blobs.json")
    for p in golden["params"]:
        assert [_sha(b.data) for b in net.params[p["layer"]]] == [b["sha256"] for b in p["blobs"]]


def test_source_layers_the_net_lacks_are_ignored(tmp_path, caplog):
    path = _lenet(tmp_path, lambda t: t.replace('name: "ip2"', 'name: "ip2_new"'))
    with caplog.at_level(logging.INFO, logger="caffelike"):
        net = Net(path, caffelike.TEST, weights=str(LENET / "weights.caffemodel"))
    assert "Ignoring source layer ip2" in [r.getMessage() for r in caplog.records]
    assert not np.any(net.params["ip2_new"][1].data)  # the renamed layer keeps its filler values


def test_shape_mismatch_names_layer_shapes_and_remedy(tmp_path):
    path = _lenet(tmp_path, lambda t: t.replace("num_output: 10", "num_output: 7"))
    with pytest.raises(WeightsError) as e:
        Net(path, caffelike.TEST, weights=str(LENET / "weights.caffemodel"))
    msg = str(e.value)
    assert "lenet.prototxt:" in msg and "layer 'ip2' (InnerProduct)" in msg
    assert "(10, 500)" in msg and "(7, 500)" in msg and "rename the layer" in msg


def test_blob_count_mismatch():
    net = Net(str(LENET / "net.prototxt"), caffelike.TEST)
    src = caffe_pb2.NetParameter()
    blob = src.layer.add(name="ip2", type="InnerProduct").blobs.add()
    blob.shape.dim.extend([10, 500])
    blob.data.extend([0.0] * 5000)
    with pytest.raises(WeightsError, match=r"layer 'ip2'.*1 blobs.*expects 2.*rename the layer"):
        net.copy_trained_layers_from(src)


def test_legacy_4d_blob_shapes_are_accepted():
    net = Net(str(LENET / "net.prototxt"), caffelike.TEST)
    rng = np.random.default_rng(1)
    w = rng.standard_normal((10, 500)).astype(np.float32)
    b = rng.standard_normal(10).astype(np.float32)
    src = caffe_pb2.NetParameter()
    layer = src.layer.add(name="ip2", type="InnerProduct")
    for array, dims in ((w, (1, 1, 10, 500)), (b, (1, 1, 1, 10))):
        blob = layer.blobs.add(num=dims[0], channels=dims[1], height=dims[2], width=dims[3])
        blob.data.extend(array.ravel().tolist())
    net.copy_trained_layers_from(src)
    np.testing.assert_array_equal(net.params["ip2"][0].data, w)
    np.testing.assert_array_equal(net.params["ip2"][1].data, b)
    bad = caffe_pb2.NetParameter()
    bad.CopyFrom(src)
    bad.layer[0].blobs[0].height = 500
    bad.layer[0].blobs[0].width = 10
    with pytest.raises(WeightsError, match="rename the layer"):
        net.copy_trained_layers_from(bad)


def test_save_writes_a_caffemodel_in_caffe_layout(tmp_path):
    net = Net(str(LENET / "net.prototxt"), str(LENET / "weights.caffemodel"), caffelike.TEST)
    out = tmp_path / "saved.caffemodel"
    net.save(str(out))
    raw = caffe_pb2.NetParameter()
    raw.ParseFromString(out.read_bytes())  # what Caffe's ReadProtoFromBinaryFile does
    assert [l.name for l in raw.layer] == net._layer_names
    for layer in raw.layer:
        if layer.name in net.params:
            for blob, mine in zip(layer.blobs, net.params[layer.name]):
                assert tuple(blob.shape.dim) == mine.shape
                np.testing.assert_array_equal(np.array(blob.data, np.float32).reshape(mine.shape), mine.data)
        else:
            assert not layer.blobs
    again = Net(str(LENET / "net.prototxt"), str(out), caffelike.TEST)
    for name, blobs in net.params.items():
        for a, b in zip(blobs, again.params[name]):
            np.testing.assert_array_equal(a.data, b.data)


def test_batchnorm_blobs_are_saved_in_caffe_order(tmp_path):
    text = ('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 2 dim: 2 } } }\n'
            'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "data" }\n')
    path = tmp_path / "bn.prototxt"
    path.write_text(text)
    net = Net(str(path), caffelike.TEST)
    for i, blob in enumerate(net.params["bn"]):
        blob.data[...] = i + 1
    param = net.to_net_param()
    bn = param.layer[1]
    assert [tuple(b.shape.dim) for b in bn.blobs] == [(3,), (3,), (1,)]  # mean, variance, scale factor
    assert [b.data[0] for b in bn.blobs] == [1.0, 2.0, 3.0]
    assert [p.lr_mult for p in bn.param] == [0.0, 0.0, 0.0]


def test_hdf5_round_trip(tmp_path):
    net = Net(str(LENET / "net.prototxt"), str(LENET / "weights.caffemodel"), caffelike.TEST)
    out = tmp_path / "w.h5"
    net.save_hdf5(str(out))
    import h5py

    with h5py.File(out, "r") as f:
        assert sorted(f["data"]) == sorted(net._layer_names)
        assert f["data"]["conv1"]["0"].shape == (20, 1, 5, 5)
    fresh = Net(str(LENET / "net.prototxt"), caffelike.TEST)
    fresh.copy_from(str(out))
    for name, blobs in net.params.items():
        for a, b in zip(blobs, fresh.params[name]):
            np.testing.assert_array_equal(a.data, b.data)


def test_share_trained_layers_with():
    train = Net(str(LENET / "net.prototxt"), caffelike.TEST)
    test = Net(str(LENET / "net.prototxt"), caffelike.TEST)
    test.share_with(train)
    train.params["conv1"][0].data[...] = 3.0
    np.testing.assert_array_equal(test.params["conv1"][0].data, 3.0)
    assert test.graph.module(1).blobs[0] is train.graph.module(1).blobs[0]
