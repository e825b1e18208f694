"""Fork fields of BVLC layer types (issue 16, slice rcnn), checked live against OpenCV dnn.

* ``convolution_param { filter_stride }`` (and ``filter_stride_h``/``_w``) of ParseNet/DeepLab
  (weiliu89/caffe branch fcn, base_conv_layer.cpp) and ``hole``/``hole_h``/``hole_w`` of DeepLab v1
  (TheLegendAli/DeepLab-Context conv_layer.cpp): the "hole" algorithm, spacing the filter taps,
  which is ``dilation``. OpenCV does not read the forks' fields, so it runs the same net spelled
  with ``dilation`` and the same weights.
* ``dropout_param { scale_train: false }`` of rbgirshick/caffe-fast-rcnn (dropout_layer.cpp), used
  by the ZF Faster R-CNN nets: TRAIN drops without rescaling, TEST multiplies by 1 - ratio.
  OpenCV reads this field and computes the same TEST output.
"""
from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch

import caffelike
from caffelike.errors import CaffelikeError

cv2 = pytest.importorskip("cv2")

NET = """name: "fork_fields"
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 2 dim: 3 dim: 13 dim: 11 }} }} }}
layer {{ name: "layer" type: "{type}" bottom: "data" top: "out" {body} }}
"""


def _write(tmp_path: pathlib.Path, name: str, type_name: str, body: str) -> pathlib.Path:
    path = tmp_path / name
    path.write_text(NET.format(type=type_name, body=body))
    return path


@pytest.mark.parametrize("fork,bvlc", [
    ("filter_stride: 2", "dilation: 2"),
    ("filter_stride: 3 pad: 3", "dilation: 3 pad: 3"),
    ("filter_stride_h: 2 filter_stride_w: 3 pad_h: 2 pad_w: 3", "dilation: 2 dilation: 3 pad_h: 2 pad_w: 3"),
    ("hole: 2 pad: 2", "dilation: 2 pad: 2"),
    ("hole_h: 3 hole_w: 2", "dilation: 3 dilation: 2"),
])
def test_filter_stride_is_dilation(tmp_path: pathlib.Path, fork: str, bvlc: str) -> None:
    body = "convolution_param {{ num_output: 4 kernel_size: 3 {} weight_filler {{ type: \"gaussian\" std: 0.3 }} " \
           "bias_filler {{ type: \"gaussian\" std: 0.1 }} }}"
    ours_path = _write(tmp_path, "fork.prototxt", "Convolution", body.format(fork))
    cv_path = _write(tmp_path, "bvlc.prototxt", "Convolution", body.format(bvlc))
    net = caffelike.Net(str(ours_path), caffelike.TEST)
    weights = tmp_path / "w.caffemodel"
    net.save(str(weights))
    x = np.random.default_rng(0).normal(size=(2, 3, 13, 11)).astype(np.float32)
    ours = np.array(net.forward(data=x)["out"])
    cv_net = cv2.dnn.readNetFromCaffe(str(cv_path), str(weights))
    cv_net.setInput(x)
    theirs = cv_net.forward("out")
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("body,message", [
    ("filter_stride: 2 dilation: 2", "give one of dilation, filter_stride, hole"),
    ("filter_stride: 2 hole: 2", "give one of dilation, filter_stride, hole"),
    ("filter_stride_h: 2", "give filter_stride, or both filter_stride_h and filter_stride_w"),
    ("filter_stride: 2 filter_stride_h: 2 filter_stride_w: 2", "give filter_stride, or both"),
    ("hole_w: 2", "give hole, or both hole_h and hole_w"),
])
def test_filter_stride_errors(tmp_path: pathlib.Path, body: str, message: str) -> None:
    path = _write(tmp_path, "net.prototxt", "Convolution", f"convolution_param {{ num_output: 2 kernel_size: 3 {body} }}")
    with pytest.raises(CaffelikeError) as info:
        caffelike.Net(str(path), caffelike.TEST)
    assert "layer 'layer' (Convolution)" in str(info.value) and message in str(info.value)


def test_parsenet_dilated_layers_keep_their_size() -> None:
    """ParseNet's fc6 (kernel 3, filter_stride 12, pad 12) keeps the map size, as dilation 12 does."""
    from caffelike.io import read_net

    path = (pathlib.Path(__file__).resolve().parents[1] / "data" / "corpus" / "natanielruiz__net-archive"
            / "parsenet" / "VGG_VOC2012ext.prototxt")
    net, _ = read_net(path, allow_unknown_fields=True)
    conv = {layer.name: layer.convolution_param for layer in net.layer}
    assert conv["fc6"].filter_stride == 12 and conv["conv5_3"].filter_stride == 2


@pytest.mark.parametrize("ratio", [0.3, 0.5])
def test_dropout_scale_train_false_test_phase_matches_opencv(tmp_path: pathlib.Path, ratio: float) -> None:
    path = _write(tmp_path, "net.prototxt", "Dropout", f"dropout_param {{ dropout_ratio: {ratio} scale_train: false }}")
    x = np.random.default_rng(1).normal(size=(2, 3, 13, 11)).astype(np.float32)
    ours = np.array(caffelike.Net(str(path), caffelike.TEST).forward(data=x)["out"])
    cv_net = cv2.dnn.readNetFromCaffe(str(path))
    cv_net.setInput(x)
    np.testing.assert_allclose(ours, cv_net.forward("layer"), rtol=1e-6, atol=0)
    np.testing.assert_allclose(ours, x * np.float32(1 - ratio), rtol=1e-6, atol=0)


def test_dropout_scale_train_false_train_phase_does_not_rescale(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, "net.prototxt", "Dropout", "dropout_param { dropout_ratio: 0.5 scale_train: false }")
    torch.manual_seed(0)
    x = np.random.default_rng(2).uniform(1, 2, size=(2, 3, 13, 11)).astype(np.float32)
    out = np.array(caffelike.Net(str(path), caffelike.TRAIN).forward(data=x)["out"])
    kept = out != 0
    np.testing.assert_array_equal(out[kept], x[kept])  # the fork's TRAIN: x * mask, no 1/(1-ratio)
    assert 0.3 < kept.mean() < 0.7
