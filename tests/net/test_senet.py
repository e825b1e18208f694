"""The SENet corpus nets (hujie-frank/SENet models/*.prototxt, issue 16): the six with Axpy build
in TEST (tests/net/test_refused_nets.py, BUILT_FORK_TYPES: Caffe refused them for Axpy);
SE-ResNet-50 runs forward on generated weights and equals OpenCV dnn on the same prototxt and
caffemodel (written by caffelike).

OpenCV's Caffe importer turns Axpy into Scale(bottom 2 by bottom 0) + Eltwise(bottom 1), i.e.
a * bottom[2] + bottom[1]; the fork (axpy_layer.cpp) computes a * bottom[1] + bottom[2]. The
source wins: OpenCV reads the prototxt with each Axpy's bottoms 1 and 2 exchanged, which makes it
compute the fork's value (tests/layers/test_fork_misc.py shows OpenCV's value on the prototxt as
written).
"""
from __future__ import annotations

import pathlib

import numpy as np
import pytest

import caffelike

from .fork_nets import fill_generated, opencv_prototxt

cv2 = pytest.importorskip("cv2")

MODELS = pathlib.Path(__file__).resolve().parents[1] / "data" / "corpus" / "hujie-frank__SENet" / "models"
NETS = ["SE-BN-Inception", "SE-ResNet-50", "SE-ResNet-101", "SE-ResNet-152", "SE-ResNeXt-50",
        "SE-ResNeXt-101", "SENet-154"]


def test_the_corpus_holds_the_seven_senet_files() -> None:
    assert sorted(p.stem for p in MODELS.glob("*.prototxt")) == sorted(NETS)


def test_se_resnet_50_forward_matches_opencv(tmp_path: pathlib.Path) -> None:
    path = MODELS / "SE-ResNet-50.prototxt"
    net = caffelike.Net(str(path), caffelike.TEST, fill=False)
    fill_generated(net)
    weights = tmp_path / "w.caffemodel"
    net.save(str(weights))
    x = np.random.default_rng(1).normal(size=(1, 3, 224, 224)).astype(np.float32)
    net.forward(data=x)
    cv_net = cv2.dnn.readNetFromCaffe(str(opencv_prototxt(path, tmp_path / "opencv.prototxt")), str(weights))
    cv_net.setInput(x)
    # (blob, the OpenCV layer that writes it last: the ReLUs run in place)
    pairs = [("conv2_1", "conv2_1/relu"), ("conv4_6", "conv4_6/relu"), ("pool5/7x7_s1", "pool5/7x7_s1"),
             ("classifier", "classifier")]
    outs = cv_net.forward([layer for _, layer in pairs])
    for (blob, _), theirs in zip(pairs, outs):
        ours = np.array(net.blobs[blob].data)
        np.testing.assert_allclose(ours, theirs.reshape(ours.shape), rtol=1e-5, atol=1e-5, err_msg=blob)
