"""farmingyard/ShuffleNet's v2 deploy net (ShuffleChannel + ConvolutionDepthwise, issue 16) builds
in TEST and runs forward on generated weights equal to OpenCV dnn on the same caffemodel.

The prototxts leave ``group`` out of their ConvolutionDepthwise layers: the fork's layer (BVLC PR
5665) is depthwise whatever ``group`` says, while OpenCV's importer turns it into a Convolution
that reads ``group`` (1 here). The source wins: OpenCV reads the prototxt with ``group`` set to
``num_output`` in those layers, which is the fork's meaning.
"""
from __future__ import annotations

import pathlib

import numpy as np
import pytest

import caffelike

from .fork_nets import fill_generated, opencv_prototxt

cv2 = pytest.importorskip("cv2")

FORKS = pathlib.Path(__file__).resolve().parents[1] / "data" / "forks" / "farmingyard__ShuffleNet"
# (blob, the OpenCV layer that writes it last: BatchNorm and Scale run in place)
# (v1's shufflenet_1x_g3_deploy adds no layer type; left out to keep the suite fast)
NETS = {"shufflenet_v2_1x_deploy": (("branch1_1_conv1", "branch1_1_conv1_scale"), ("fc1000", "fc1000"))}


@pytest.mark.parametrize("name", sorted(NETS))
def test_shufflenet_forward_matches_opencv(tmp_path: pathlib.Path, name: str) -> None:
    path = FORKS / f"{name}.prototxt"
    net = caffelike.Net(str(path), caffelike.TEST, fill=False)
    fill_generated(net)
    weights = tmp_path / "w.caffemodel"
    net.save(str(weights))
    x = np.random.default_rng(1).normal(size=net.blobs["data"].data.shape).astype(np.float32)
    net.forward(data=x)
    cv_net = cv2.dnn.readNetFromCaffe(str(opencv_prototxt(path, tmp_path / "opencv.prototxt")), str(weights))
    cv_net.setInput(x)
    pairs = NETS[name]
    for (blob, _), theirs in zip(pairs, cv_net.forward([layer for _, layer in pairs])):
        ours = np.array(net.blobs[blob].data)
        np.testing.assert_allclose(ours, theirs.reshape(ours.shape), rtol=1e-5, atol=1e-5, err_msg=blob)
