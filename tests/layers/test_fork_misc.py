"""Axpy (hujie-frank/SENet), ShuffleChannel (farmingyard/ShuffleNet), ConvolutionDepthwise
(BVLC/caffe PR 5665, conv_dw_layer.cpp) and ReLU6 (eric612/MobileNet-YOLO = Caffe_Long), issue 16.

Forward oracle: OpenCV dnn run live on the same prototxt (and a caffemodel caffelike writes);
the forks' index rules re-derived by hand where OpenCV does not decide. Backward: float64
central finite differences (torch.autograd.gradcheck) on the layer.
"""
from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch
from google.protobuf import text_format

import caffelike
from caffelike.errors import LayerError
from caffelike.layers import LAYERS
from caffelike.proto import caffe_pb2

cv2 = pytest.importorskip("cv2")


def make(text: str, bottom_shapes) -> torch.nn.Module:
    """One layer built from its prototxt text."""
    lp = text_format.Parse(text, caffe_pb2.LayerParameter())
    return LAYERS.get(lp.type).cls(lp, [tuple(s) for s in bottom_shapes], caffe_pb2.TEST)


def inputs_net(shapes: dict[str, tuple[int, ...]], body: str) -> str:
    tops = "".join(f' top: "{n}"' for n in shapes)
    dims = "".join(" shape { " + " ".join(f"dim: {d}" for d in s) + " }" for s in shapes.values())
    return f'name: "t"\nlayer {{ name: "in" type: "Input"{tops} input_param {{{dims} }} }}\n{body}\n'


def run_both(tmp_path: pathlib.Path, text: str, feed: dict[str, np.ndarray], fill=None,
             cv_text: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(caffelike's, OpenCV's) value of the net's one output "out"; ``fill(net)`` sets weights,
    saved for OpenCV; OpenCV reads ``cv_text`` when given."""
    proto = tmp_path / "net.prototxt"
    proto.write_text(text)
    net = caffelike.Net(str(proto), caffelike.TEST)
    weights = ""
    if fill is not None:
        fill(net)
        weights = str(tmp_path / "w.caffemodel")
        net.save(weights)
    ours = np.array(net.forward(**feed)["out"])
    if cv_text is not None:
        proto = tmp_path / "opencv.prototxt"
        proto.write_text(cv_text)
    cv_net = cv2.dnn.readNetFromCaffe(str(proto), weights)
    for name, value in feed.items():
        cv_net.setInput(value, name)
    return ours, cv_net.forward()


RNG = np.random.default_rng(16)


def normal(*shape: int) -> np.ndarray:
    return RNG.normal(size=shape).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Axpy


@pytest.mark.parametrize("a_shape", [(2, 5, 1, 1), (2, 5)])
def test_axpy_is_a_times_x_plus_y(a_shape) -> None:
    layer = make('name: "axpy" type: "Axpy"', [a_shape, (2, 5, 3, 4), (2, 5, 3, 4)])
    a, x, y = normal(*a_shape), normal(2, 5, 3, 4), normal(2, 5, 3, 4)
    (top,) = layer(torch.from_numpy(a), torch.from_numpy(x), torch.from_numpy(y))
    expected = np.empty_like(x)
    for n in range(2):
        for c in range(5):
            expected[n, c] = a.reshape(2, 5)[n, c] * x[n, c] + y[n, c]
    np.testing.assert_allclose(top.numpy(), expected, rtol=1e-6, atol=1e-6)


def axpy_for_opencv(text: str) -> str:
    """The prototxt with every Axpy's bottoms 1 and 2 exchanged: OpenCV's importer computes
    ``a * bottom[2] + bottom[1]`` (a Scale of bottom 2, then an Eltwise sum with bottom 1), the
    fork ``a * bottom[1] + bottom[2]`` (axpy_layer.cpp copies bottom 2, adds a * bottom 1)."""
    net = caffe_pb2.NetParameter()
    text_format.Parse(text, net)
    for layer in net.layer:
        if layer.type == "Axpy":
            layer.bottom[1], layer.bottom[2] = layer.bottom[2], layer.bottom[1]
    return text_format.MessageToString(net)


def test_axpy_matches_opencv_once_opencvs_swap_is_undone(tmp_path: pathlib.Path) -> None:
    shapes = {"a": (1, 6, 1, 1), "x": (1, 6, 5, 4), "y": (1, 6, 5, 4)}
    text = inputs_net(shapes, 'layer { name: "axpy" type: "Axpy" bottom: "a" bottom: "x" bottom: "y" top: "out" }')
    feed = {name: normal(*s) for name, s in shapes.items()}
    ours, as_written = run_both(tmp_path, text, feed)
    _, swapped = run_both(tmp_path, axpy_for_opencv(text), feed)
    assert ours.shape == swapped.shape == (1, 6, 5, 4)
    np.testing.assert_allclose(ours, feed["a"] * feed["x"] + feed["y"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ours, swapped, rtol=1e-5, atol=1e-6)
    # OpenCV on the prototxt as written scales y instead of x: the fork's source wins.
    np.testing.assert_allclose(as_written, feed["a"] * feed["y"] + feed["x"], rtol=1e-5, atol=1e-6)
    assert not np.allclose(ours, as_written, atol=1e-3)


def test_axpy_gradcheck() -> None:
    layer = make('name: "axpy" type: "Axpy"', [(2, 3, 1, 1), (2, 3, 2, 3), (2, 3, 2, 3)])
    args = [torch.randn(s, dtype=torch.float64, requires_grad=True)
            for s in ((2, 3, 1, 1), (2, 3, 2, 3), (2, 3, 2, 3))]
    assert torch.autograd.gradcheck(lambda *b: layer(*b)[0], args)


@pytest.mark.parametrize("shapes,needle", [
    ([(2, 4, 1, 1), (2, 5, 3, 3), (2, 5, 3, 3)], "first two axes"),
    ([(2, 5, 2, 1), (2, 5, 3, 3), (2, 5, 3, 3)], "1x1 spatially"),
    ([(2, 5, 1, 1), (2, 5, 3, 3), (2, 5, 3, 2)], "same shape"),
])
def test_axpy_shape_errors_name_the_layer(shapes, needle) -> None:
    with pytest.raises(LayerError, match=needle) as info:
        make('name: "se_axpy" type: "Axpy"', shapes)
    assert "se_axpy" in str(info.value) and "Axpy" in str(info.value)


# ---------------------------------------------------------------------------------------------
# ShuffleChannel


@pytest.mark.parametrize("group", [1, 2, 3, 6])
def test_shuffle_channel_follows_the_forks_index_rule(group: int) -> None:
    layer = make(f'name: "shuffle" type: "ShuffleChannel" shuffle_channel_param {{ group: {group} }}',
                 [(2, 6, 3, 2)])
    x = normal(2, 6, 3, 2)
    (top,) = layer(torch.from_numpy(x))
    per = 6 // group
    expected = np.empty_like(x)
    for i in range(group):  # the fork's Resize_cpu: input row i, column j -> output j*group + i
        for j in range(per):
            expected[:, j * group + i] = x[:, i * per + j]
    np.testing.assert_array_equal(top.numpy(), expected)


def test_shuffle_channel_matches_opencv(tmp_path: pathlib.Path) -> None:
    text = inputs_net({"data": (2, 12, 3, 5)}, 'layer { name: "shuffle" type: "ShuffleChannel" '
                      'bottom: "data" top: "out" shuffle_channel_param { group: 3 } }')
    ours, theirs = run_both(tmp_path, text, {"data": normal(2, 12, 3, 5)})
    np.testing.assert_array_equal(ours, theirs)


def test_shuffle_channel_is_not_caffe_longs_channel_shuffle() -> None:
    x = torch.arange(8, dtype=torch.float32).reshape(1, 8, 1, 1)
    ours = make('name: "s" type: "ShuffleChannel" shuffle_channel_param { group: 2 }', [(1, 8, 1, 1)])(x)[0]
    book = make('name: "s" type: "ChannelShuffle" channel_shuffle_param { group: 2 }', [(1, 8, 1, 1)])(x)[0]
    assert ours.flatten().tolist() == [0, 4, 1, 5, 2, 6, 3, 7]
    assert book.flatten().tolist() != ours.flatten().tolist()


def test_shuffle_channel_gradcheck() -> None:
    layer = make('name: "s" type: "ShuffleChannel" shuffle_channel_param { group: 2 }', [(2, 4, 2, 3)])
    x = torch.randn(2, 4, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: layer(t)[0], (x,))


def test_shuffle_channel_group_must_divide_channels() -> None:
    with pytest.raises(LayerError, match=r"channels \(6\) must be a multiple of shuffle_channel_param.group \(4\)"):
        make('name: "s" type: "ShuffleChannel" shuffle_channel_param { group: 4 }', [(1, 6, 2, 2)])


# ---------------------------------------------------------------------------------------------
# ConvolutionDepthwise / DepthwiseConvolution


def _fill_normal(net) -> None:
    rng = np.random.default_rng(5)
    for blobs in net.params.values():
        for b in blobs:
            b.data[...] = rng.normal(size=b.data.shape)


DW = ('layer {{ name: "dw" type: "{type}" bottom: "data" top: "out" convolution_param {{ '
      'num_output: {num_output} {group} kernel_size: 3 stride: {stride} pad: 1 bias_term: {bias} }} }}')


@pytest.mark.parametrize("stride,bias", [(1, "true"), (2, "false")])
@pytest.mark.parametrize("type_name", ["ConvolutionDepthwise", "DepthwiseConvolution"])
def test_depthwise_matches_opencv(tmp_path: pathlib.Path, type_name: str, stride: int, bias: str) -> None:
    # group = channels, as the MobileNet prototxts of both spellings write it (OpenCV maps
    # ConvolutionDepthwise to Convolution, which reads group).
    text = inputs_net({"data": (2, 6, 7, 8)}, DW.format(type=type_name, num_output=6, group="group: 6",
                                                       stride=stride, bias=bias))
    # OpenCV knows no "DepthwiseConvolution": it runs the fork's meaning, a Convolution.
    cv_text = text.replace('"DepthwiseConvolution"', '"Convolution"')
    ours, theirs = run_both(tmp_path, text, {"data": normal(2, 6, 7, 8)}, fill=_fill_normal,
                            cv_text=cv_text)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def test_convolution_depthwise_ignores_num_output_and_group(tmp_path: pathlib.Path) -> None:
    """PR 5665's layer reads neither: weight (C, 1, k, k), top channels = C. Without group,
    OpenCV (Convolution with group 1) cannot run it; the fork's source decides."""
    x = normal(1, 4, 5, 5)
    outs = []
    for num_output, group in ((4, "group: 4"), (32, "")):
        text = inputs_net({"data": x.shape}, DW.format(type="ConvolutionDepthwise", num_output=num_output,
                                                      group=group, stride=1, bias="true"))
        (tmp_path / "n.prototxt").write_text(text)
        net = caffelike.Net(str(tmp_path / "n.prototxt"), caffelike.TEST)
        assert [b.data.shape for b in net.params["dw"]] == [(4, 1, 3, 3), (4,)]
        _fill_normal(net)
        outs.append(np.array(net.forward(data=x)["out"]))
    assert outs[0].shape == (1, 4, 5, 5)
    np.testing.assert_array_equal(outs[0], outs[1])
    w = np.random.default_rng(5)  # by hand: channel c filtered by weight[c, 0] only
    weight = w.normal(size=(4, 1, 3, 3)).astype(np.float32)
    bias = w.normal(size=(4,)).astype(np.float32)
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    expected = np.zeros((1, 4, 5, 5), np.float32)
    for c in range(4):
        for i in range(5):
            for j in range(5):
                expected[0, c, i, j] = (padded[0, c, i:i + 3, j:j + 3] * weight[c, 0]).sum() + bias[c]
    np.testing.assert_allclose(outs[0], expected, rtol=1e-5, atol=1e-5)


def test_convolution_depthwise_gradcheck() -> None:
    layer = make('name: "dw" type: "ConvolutionDepthwise" convolution_param { num_output: 3 '
                 'kernel_size: 3 stride: 2 pad: 1 }', [(2, 3, 5, 4)]).double()
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        for b in layer.blobs:
            b.normal_()
    assert torch.autograd.gradcheck(lambda t: layer(t)[0], (x,))
    assert all(b.requires_grad for b in layer.blobs)
    assert torch.autograd.gradcheck(lambda w, b: torch.nn.functional.conv2d(x, w, b, 2, 1, 1, 3),
                                    tuple(layer.blobs))


# ---------------------------------------------------------------------------------------------
# ReLU6


def test_relu6_matches_opencv(tmp_path: pathlib.Path) -> None:
    text = inputs_net({"data": (2, 3, 4, 5)}, 'layer { name: "r6" type: "ReLU6" bottom: "data" top: "out" }')
    x = 5 * normal(2, 3, 4, 5)
    ours, theirs = run_both(tmp_path, text, {"data": x})
    np.testing.assert_array_equal(ours, np.clip(x, 0, 6))
    np.testing.assert_array_equal(ours, theirs)


def test_relu6_negative_slope_follows_the_fork_not_opencv(tmp_path: pathlib.Path) -> None:
    # MobileNet-YOLO's relu6_layer.cpp: min(max(x, 0) + slope * min(x, 0), 6). OpenCV's ReLU6
    # ignores relu6_param.negative_slope (it clips to [0, 6]); the fork's source wins.
    text = inputs_net({"data": (1, 2, 3, 4)}, 'layer { name: "r6" type: "ReLU6" bottom: "data" '
                      'top: "out" relu6_param { negative_slope: 0.1 } }')
    x = 5 * normal(1, 2, 3, 4)
    ours, theirs = run_both(tmp_path, text, {"data": x})
    np.testing.assert_allclose(ours, np.minimum(np.maximum(x, 0) + np.float32(0.1) * np.minimum(x, 0), 6),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(theirs, np.clip(x, 0, 6))
