"""farmingyard/ShuffleNet's deploy nets (ShuffleChannel + ConvolutionDepthwise, issue 16) build
in TEST and run forward on generated weights equal to OpenCV dnn on the same caffemodel.

The prototxts leave ``group`` out of their ConvolutionDepthwise layers: the fork's layer (BVLC PR
5665) is depthwise whatever ``group`` says, while OpenCV's importer turns it into a Convolution
that reads ``group`` (1 here). The source wins: OpenCV reads the prototxt with ``group`` set to
``num_output`` in those layers, which is the fork's meaning.
"""
from __future__ import annotations

import pathlib

import numpy as np
import pytest
from google.protobuf import text_format

import caffelike
from caffelike.proto import caffe_pb2

cv2 = pytest.importorskip("cv2")

FORKS = pathlib.Path(__file__).resolve().parents[1] / "data" / "forks" / "farmingyard__ShuffleNet"
# (blob, the OpenCV layer that writes it last: BatchNorm and Scale run in place)
NETS = {"shufflenet_1x_g3_deploy": (("resx1_conv2", "resx1_conv2_scale"), ("fc1000", "fc1000")),
        "shufflenet_v2_1x_deploy": (("branch1_1_conv1", "branch1_1_conv1_scale"), ("fc1000", "fc1000"))}


def _generated_weights(net: caffelike.Net) -> None:
    rng = np.random.default_rng(0)
    types = dict(zip(net._layer_names, (layer.type for layer in net.layers)))
    for name, blobs in net.params.items():
        if types[name] == "BatchNorm":
            blobs[0].data[...] = rng.normal(scale=0.1, size=blobs[0].data.shape)
            blobs[1].data[...] = rng.uniform(0.5, 1.5, size=blobs[1].data.shape)
            blobs[2].data[...] = 1
        elif types[name] == "Scale":
            blobs[0].data[...] = rng.uniform(0.5, 1.0, size=blobs[0].data.shape)
            if len(blobs) > 1:
                blobs[1].data[...] = rng.normal(scale=0.1, size=blobs[1].data.shape)
        else:
            for b in blobs:
                fan = max(1, int(np.prod(b.data.shape[1:])))
                b.data[...] = rng.normal(scale=1 / np.sqrt(fan), size=b.data.shape)


def _group_set(path: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
    net = caffe_pb2.NetParameter()
    text_format.Parse(path.read_text(), net)
    for layer in net.layer:
        if layer.type == "ConvolutionDepthwise":
            layer.convolution_param.group = layer.convolution_param.num_output
    out.write_text(text_format.MessageToString(net))
    return out


@pytest.mark.parametrize("name", sorted(NETS))
def test_shufflenet_forward_matches_opencv(tmp_path: pathlib.Path, name: str) -> None:
    path = FORKS / f"{name}.prototxt"
    net = caffelike.Net(str(path), caffelike.TEST, fill=False)
    _generated_weights(net)
    weights = tmp_path / "w.caffemodel"
    net.save(str(weights))
    x = np.random.default_rng(1).normal(size=net.blobs["data"].data.shape).astype(np.float32)
    net.forward(data=x)
    cv_net = cv2.dnn.readNetFromCaffe(str(_group_set(path, tmp_path / "opencv.prototxt")), str(weights))
    cv_net.setInput(x)
    pairs = NETS[name]
    for (blob, _), theirs in zip(pairs, cv_net.forward([layer for _, layer in pairs])):
        ours = np.array(net.blobs[blob].data)
        np.testing.assert_allclose(ours, theirs.reshape(ours.shape), rtol=1e-5, atol=1e-5, err_msg=blob)
