"""ParseNet's layers (issue 16, weiliu89/caffe branch fcn): UnPooling, ParseOutput,
ParseEvaluate, pooling into bins (pooling_param.bin_size/bin_h/bin_w) and the
bilinear_upsampling filler.

Oracles: cases worked out by hand from the fork's sources (unpooling_layer.cpp,
parse_output_layer.cpp, parse_evaluate_layer.cpp, pooling_layer.cpp, filler.hpp); OpenCV dnn run
live for bin pooling (the fork pools as Caffe does once kernel, stride and pad follow from the
bins, so OpenCV gets the explicit geometry the fork derives); float64 central differences for
the UnPooling backward. OpenCV implements none of the other ParseNet types.
"""
from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch
from google.protobuf import text_format

import caffelike
from caffelike.errors import CaffelikeError, Where
from caffelike.fillers import fill
from caffelike.layers import LAYERS, TEST
from caffelike.proto import caffe_pb2

cv2 = pytest.importorskip("cv2")


def _layer(type_name: str, params: str, shapes: list[tuple[int, ...]], tops: int = 1) -> torch.nn.Module:
    text = f'name: "l" type: "{type_name}" {params} ' + " ".join(f'top: "t{i}"' for i in range(tops))
    param = text_format.Parse(text, caffe_pb2.LayerParameter())
    return LAYERS.get(type_name).cls(param, shapes, TEST, Where(layer="l", type=type_name))


# -- UnPooling ---------------------------------------------------------------------------------
def test_unpooling_rep_two_bottoms_repeats_a_1x1_map() -> None:
    """ParseNet's use: a 1x1 global feature repeated over the second bottom's 5 x 7 map."""
    layer = _layer("UnPooling", "unpooling_param { unpool: REP out_kernel_size: 0 out_stride: 0 }",
                   [(2, 3, 1, 1), (2, 4, 5, 7)])
    x = torch.randn(2, 3, 1, 1)
    (top,) = layer(x, torch.zeros(2, 4, 5, 7))
    assert tuple(top.shape) == (2, 3, 5, 7)
    torch.testing.assert_close(top, x.expand(2, 3, 5, 7), rtol=0, atol=0)


def test_unpooling_two_bottoms_geometry_hand_case() -> None:
    """3 -> 8: kernel = stride = ceil(8/3) = 3, pad = floor((2*3 + 3 - 8)/2) = 0, so the top is
    (3-1)*3 + 3 = 9 wide (the fork does not crop to the second bottom)."""
    layer = _layer("UnPooling", "unpooling_param { unpool: REP out_kernel_size: 1 }",
                   [(1, 1, 3, 1), (1, 1, 8, 2)])
    (top,) = layer(torch.tensor([1.0, 2.0, 3.0]).reshape(1, 1, 3, 1), torch.zeros(1, 1, 8, 2))
    np.testing.assert_array_equal(top.reshape(-1, 2).numpy(),
                                  np.repeat([[1.0], [2.0], [3.0]], 3, axis=0) * np.ones((1, 2)))


# One axis of 3 cells, kernel 3, stride 2, pad 1: output (3-1)*2 - 2 + 3 = 5; windows
# [-1,2) [1,4) [3,6) clip to [0,2) [1,4) [3,5); cells 1 and 3 are covered twice.
# REP: out = (a, (a+b)/2, b, (b+c)/2, c). DIV: each input also / its window length clipped at
# out + pad = 6 only: 3, 3, 3. FIXED: middles trunc((2*start + 2)/2) = 0, 2, 4.
AXIS = {"REP": [[1, 0, 0], [.5, .5, 0], [0, 1, 0], [0, .5, .5], [0, 0, 1]],
        "DIV": [[1 / 3, 0, 0], [1 / 6, 1 / 6, 0], [0, 1 / 3, 0], [0, 1 / 6, 1 / 6], [0, 0, 1 / 3]],
        "FIXED": [[1, 0, 0], [0, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 1]]}


@pytest.mark.parametrize("method", ["REP", "DIV", "FIXED"])
def test_unpooling_one_bottom_hand_cases(method: str) -> None:
    layer = _layer("UnPooling", f"unpooling_param {{ unpool: {method} out_kernel_size: 3 out_stride: 2 out_pad: 1 }}",
                   [(1, 2, 3, 3)])
    x = torch.arange(18, dtype=torch.float64).reshape(1, 2, 3, 3) + 1
    (top,) = layer(x)
    a = torch.tensor(AXIS[method], dtype=torch.float64)
    assert tuple(top.shape) == (1, 2, 5, 5)
    torch.testing.assert_close(top, a @ x @ a.T)


def test_unpooling_fixed_later_cell_overwrites() -> None:
    """Width: kernel 2, stride 1, pad 1 on 3 cells gives 2 outputs; the windows start at -1, 0, 1
    and their middles trunc((2*start + 1)/2) are 0, 0, 1: cell 1 overwrites cell 0."""
    layer = _layer("UnPooling", "unpooling_param { out_kernel_h: 1 out_kernel_w: 2 out_pad_h: 0 out_pad_w: 1 }",
                   [(1, 1, 1, 3)])
    (top,) = layer(torch.tensor([[[[5.0, 6.0, 7.0]]]]))
    np.testing.assert_array_equal(top.numpy(), [[[[6.0, 7.0]]]])


@pytest.mark.parametrize("method", ["REP", "DIV", "FIXED"])
def test_unpooling_backward_finite_differences(method: str) -> None:
    params = f"unpooling_param {{ unpool: {method} out_kernel_h: 3 out_kernel_w: 2 out_stride_h: 2 out_stride_w: 1 out_pad_h: 1 out_pad_w: 0 }}"
    layer = _layer("UnPooling", params, [(2, 2, 3, 4)])
    x = torch.randn(2, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: layer(t)[0], (x,), eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("params, message", [
    ("", "out_kernel_size, or both out_kernel_h"),
    ("unpooling_param { out_kernel_size: 2 out_kernel_h: 2 out_kernel_w: 2 }", "not both forms"),
    ("unpooling_param { out_kernel_size: 2 out_pad_h: 1 }", "out_pad, or both"),
    ("unpooling_param { out_kernel_size: 2 out_pad: 2 }", "smaller than the out kernel"),
    ("unpooling_param { out_kernel_size: 0 }", "out kernel must be > 0"),
])
def test_unpooling_refuses_what_the_fork_refuses(params: str, message: str) -> None:
    with pytest.raises(CaffelikeError, match=message):
        _layer("UnPooling", params, [(1, 1, 3, 3)])


# -- ParseOutput --------------------------------------------------------------------------------
def test_parse_output_first_maximum_and_value() -> None:
    x = torch.tensor([[[[1.0, 5.0]], [[3.0, 5.0]], [[3.0, 2.0]]]])  # (1, 3, 1, 2); ties 3/3, 5/5
    label, value = _layer("ParseOutput", "", [(1, 3, 1, 2)], tops=2)(x)
    np.testing.assert_array_equal(label.numpy(), [[[[1.0, 0.0]]]])
    np.testing.assert_array_equal(value.numpy(), [[[[3.0, 5.0]]]])
    (only,) = _layer("ParseOutput", "", [(1, 3, 1, 2)])(x)
    assert tuple(only.shape) == (1, 1, 1, 2)


# -- ParseEvaluate --------------------------------------------------------------------------------
def test_parse_evaluate_counts_hand_case() -> None:
    layer = _layer("ParseEvaluate", "parse_evaluate_param { num_labels: 3 ignore_label: 255 }",
                   [(2, 1, 1, 3), (2, 1, 1, 3)])
    pred = torch.tensor([0, 1, 2, 2, 2, 1], dtype=torch.float32).reshape(2, 1, 1, 3)
    gt = torch.tensor([0, 2, 2, 255, 1, 1], dtype=torch.float32).reshape(2, 1, 1, 3)
    (top,) = layer(pred, gt)
    # (pred, label) pairs (0,0) (1,2) (2,2) (2,255) (2,1) (1,1); per label (right, labelled,
    # predicted); the pixel labelled 255 counts nowhere, not even as predicted 2
    np.testing.assert_array_equal(top.reshape(3, 3).numpy(), [[1, 1, 1], [1, 2, 2], [1, 2, 2]])
    assert tuple(top.shape) == (1, 3, 1, 3)


def test_parse_evaluate_refusals() -> None:
    with pytest.raises(CaffelikeError, match="needs num_labels"):
        _layer("ParseEvaluate", "", [(1, 1, 2, 2), (1, 1, 2, 2)])
    with pytest.raises(CaffelikeError, match="one channel each"):
        _layer("ParseEvaluate", "parse_evaluate_param { num_labels: 2 }", [(1, 2, 2, 2), (1, 2, 2, 2)])
    layer = _layer("ParseEvaluate", "parse_evaluate_param { num_labels: 2 }", [(1, 1, 1, 2), (1, 1, 1, 2)])
    with pytest.raises(CaffelikeError, match="predicted label 2 out of range"):
        layer(torch.tensor([[[[0.0, 2.0]]]]), torch.zeros(1, 1, 1, 2))
    with pytest.raises(CaffelikeError, match="label 7 out of range"):
        layer(torch.zeros(1, 1, 1, 2), torch.tensor([[[[0.0, 7.0]]]]))


# -- pooling bins --------------------------------------------------------------------------------
def _bin_geometry(n: int, b: int) -> tuple[int, int, int]:
    """pooling_layer.cpp (fcn): kernel, stride, pad for b bins over n cells."""
    k = -(-n // b)
    s = 1 if k == n else k
    return k, s, ((b - 1) * s + k - n) // 2


POOL_NET = """name: "p"
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 2 dim: 3 dim: {h} dim: {w} }} }} }}
layer {{ name: "pool" type: "Pooling" bottom: "data" top: "pool" pooling_param {{ pool: {pool} {geom} }} }}
"""


@pytest.mark.parametrize("pool", ["MAX", "AVE"])
@pytest.mark.parametrize("h, w, bins", [(9, 11, "bin_size: 1"), (7, 10, "bin_size: 3"),
                                        (9, 8, "bin_h: 2 bin_w: 4"), (13, 6, "bin_size: 2")])
def test_bin_pooling_matches_opencv_with_the_derived_geometry(tmp_path: pathlib.Path, pool: str,
                                                              h: int, w: int, bins: str) -> None:
    values = dict(part.split(": ") for part in bins.replace(" bin", "\nbin").splitlines())
    bh = int(values.get("bin_h", values.get("bin_size")))
    bw = int(values.get("bin_w", values.get("bin_size")))
    (kh, sh, ph), (kw, sw, pw) = _bin_geometry(h, bh), _bin_geometry(w, bw)
    explicit = f"kernel_h: {kh} kernel_w: {kw} stride_h: {sh} stride_w: {sw} pad_h: {ph} pad_w: {pw}"
    ours_path, cv_path = tmp_path / "bins.prototxt", tmp_path / "explicit.prototxt"
    ours_path.write_text(POOL_NET.format(h=h, w=w, pool=pool, geom=bins))
    cv_path.write_text(POOL_NET.format(h=h, w=w, pool=pool, geom=explicit))
    x = np.random.default_rng(1).normal(size=(2, 3, h, w)).astype(np.float32)
    ours = np.array(caffelike.Net(str(ours_path), caffelike.TEST).forward(data=x)["pool"])
    cv_net = cv2.dnn.readNetFromCaffe(str(cv_path))
    cv_net.setInput(x, "data")
    theirs = cv_net.forward("pool")
    assert ours.shape == theirs.shape == (2, 3, bh, bw)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)


def test_bin_size_1_is_the_mean_and_follows_the_bottom() -> None:
    layer = _layer("Pooling", "pooling_param { pool: AVE bin_size: 1 }", [(1, 2, 4, 6)])
    x = torch.randn(1, 2, 5, 3)  # a reshaped bottom: the geometry follows it
    (top,) = layer(x)
    torch.testing.assert_close(top, x.mean(dim=(2, 3), keepdim=True))


@pytest.mark.parametrize("params, message", [
    ("bin_h: 2", "bin_size, or both bin_h and bin_w"),
    ("bin_size: 0", "must be > 0"),
    ("bin_size: 3", "more than half"),
])
def test_bin_pooling_refusals(params: str, message: str) -> None:
    with pytest.raises(CaffelikeError, match=message):
        _layer("Pooling", f"pooling_param {{ {params} }}", [(1, 1, 5, 5)])


# -- bilinear_upsampling filler ------------------------------------------------------------------
@pytest.mark.parametrize("k, row", [
    (3, [0.25, 0.75, 0.75]),        # f = 2, c = (4 - 1 - 0)/4 = 3/4 (BVLC's later bilinear: c = 1/2)
    (4, [0.25, 0.75, 0.75, 0.25]),  # f = 2, c = 3/4
    (5, [1 / 3, 2 / 3, 1, 2 / 3, 1 / 3]),  # f = 3, c = (6 - 1 - 1)/6 = 2/3
])
def test_bilinear_upsampling_filler_hand_values(k: int, row: list[float]) -> None:
    t = torch.empty(2, 1, k, k)
    fill(text_format.Parse('type: "bilinear_upsampling"', caffe_pb2.FillerParameter()), t)
    expected = np.outer(row, row).astype(np.float32)
    for out in range(2):
        np.testing.assert_allclose(t[out, 0].numpy(), expected, rtol=1e-6, atol=1e-7)
