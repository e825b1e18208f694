"""Vision layers (Convolution, Deconvolution, Im2col, Pooling, SPP) against real Caffe."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from google.protobuf import text_format

from caffelike.errors import CaffelikeError
from caffelike.layers import LAYERS, TEST, TRAIN, vision
from caffelike.proto import caffe_pb2

from .golden_case import cases_for, run_case

VISION_TYPES = ("Convolution", "Deconvolution", "Im2col", "Pooling", "SPP")


@pytest.mark.parametrize("case", cases_for(*VISION_TYPES))
def test_golden(case: str) -> None:
    run_case(case)


# ---------------------------------------------------------------------------------------------
# Beyond the golden cases: Caffe's pooling loops (src/caffe/layers/pooling_layer.cpp,
# Reshape / Forward_cpu / Backward_cpu) re-stated naively in numpy as the reference.
# ---------------------------------------------------------------------------------------------


FLT_MAX = float(np.finfo(np.float32).max)


def _layer(text: str, shapes, phase=TRAIN):
    lp = text_format.Parse(text, caffe_pb2.LayerParameter())
    return LAYERS.get(lp.type).cls(lp, [tuple(s) for s in shapes], phase)


def _caffe_pool(x, k, s, p, method, topdiff_seed=0, ceil=True):
    """pooling_layer.cpp, CPU path: forward (top, mask) and backward for a random top diff."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = k, s, p
    rnd = np.ceil if ceil else np.floor
    oh = int(rnd((h + 2 * ph - kh) / sh)) + 1
    ow = int(rnd((w + 2 * pw - kw) / sw)) + 1
    if ph or pw:
        if (oh - 1) * sh >= h + ph:
            oh -= 1
        if (ow - 1) * sw >= w + pw:
            ow -= 1
    top = np.zeros((n, c, oh, ow), np.float32)
    mask = np.full((n, c, oh, ow), -1.0, np.float32)
    dtop = np.random.RandomState(topdiff_seed).randn(n, c, oh, ow).astype(np.float32)
    dx = np.zeros_like(x)
    for i, j, a, b in itertools.product(range(n), range(c), range(oh), range(ow)):
        hs, ws = a * sh - ph, b * sw - pw
        if method == "MAX":
            he, we = min(hs + kh, h), min(ws + kw, w)
            hs, ws = max(hs, 0), max(ws, 0)
            best = -FLT_MAX
            for y in range(hs, he):
                for z in range(ws, we):
                    if x[i, j, y, z] > best:
                        best, mask[i, j, a, b] = x[i, j, y, z], y * w + z
            top[i, j, a, b] = best
            if mask[i, j, a, b] >= 0:
                m = int(mask[i, j, a, b])
                dx[i, j, m // w, m % w] += dtop[i, j, a, b]
        else:
            he, we = min(hs + kh, h + ph), min(ws + kw, w + pw)
            size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            with np.errstate(invalid="ignore", divide="ignore"):
                top[i, j, a, b] = np.float32(x[i, j, hs:he, ws:we].sum()) / np.float32(size)
                dx[i, j, hs:he, ws:we] += dtop[i, j, a, b] / np.float32(size)
    return top, mask, dtop, dx


def _pool_text(method, k, s, p, mask_top=False):
    tops = 'top: "out" top: "mask"' if mask_top else 'top: "out"'
    return (f'name: "pool" type: "Pooling" bottom: "data" {tops} pooling_param {{ pool: {method} '
            f"kernel_h: {k[0]} kernel_w: {k[1]} stride_h: {s[0]} stride_w: {s[1]} "
            f"pad_h: {p[0]} pad_w: {p[1]} }}")


POOL_CONFIGS = [
    # (H, W), kernel, stride, pad
    ((9, 9), (2, 2), (3, 3), (0, 0)),   # kernel < stride: empty last window (4x4 out)
    ((10, 7), (3, 2), (2, 3), (1, 0)),
    ((6, 6), (3, 3), (2, 2), (2, 2)),   # pad close to kernel
    ((5, 8), (1, 3), (1, 2), (0, 1)),
    ((7, 7), (3, 3), (3, 3), (1, 1)),
    ((4, 4), (4, 4), (1, 1), (0, 0)),
    ((8, 5), (2, 3), (4, 1), (1, 2)),
]


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("cfg", POOL_CONFIGS, ids=lambda c: "x".join(map(str, c[0])) + f"_k{c[1]}_s{c[2]}_p{c[3]}")
def test_pooling_matches_caffe_loops(method: str, cfg) -> None:
    (h, w), k, s, p = cfg
    # Small integers make ties common, which pins the first-maximum rule.
    x = np.random.RandomState(h * 31 + w).randint(-3, 4, size=(2, 3, h, w)).astype(np.float32)
    top, mask, dtop, dx = _caffe_pool(x, k, s, p, method)
    layer = _layer(_pool_text(method, k, s, p, mask_top=method == "MAX"), [x.shape])
    xt = torch.from_numpy(x).requires_grad_(True)
    outs = layer(xt)
    if method == "MAX":
        np.testing.assert_array_equal(outs[0].detach().numpy(), top)
        np.testing.assert_array_equal(outs[1].numpy(), mask)
    else:
        np.testing.assert_allclose(outs[0].detach().numpy(), top, rtol=1e-6, atol=1e-6, equal_nan=True)
    assert tuple(layer.top_shapes([x.shape])[0]) == top.shape
    finite = torch.from_numpy(np.where(np.isfinite(top), dtop, 0).astype(np.float32))
    outs[0].backward(finite)
    np.testing.assert_allclose(xt.grad.numpy(), dx, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("cfg", POOL_CONFIGS, ids=lambda c: "x".join(map(str, c[0])) + f"_k{c[1]}_s{c[2]}_p{c[3]}")
def test_pooling_inference_channels_last_matches_caffe_loops(method: str, cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    # The deploy path pools a channels_last copy (from 1 channel on here, to cover these cases).
    monkeypatch.setattr(vision, "_CL_MIN_CHANNELS", 1)
    (h, w), k, s, p = cfg
    x = np.random.RandomState(h * 31 + w).randint(-3, 4, size=(2, 3, h, w)).astype(np.float32)
    top = _caffe_pool(x, k, s, p, method)[0]
    layer = _layer(_pool_text(method, k, s, p), [x.shape])
    with torch.no_grad():
        (out,) = layer(torch.from_numpy(x))
        # an input already channels_last (optimize=True's convolutions) is pooled as it is
        (out_cl,) = layer(torch.from_numpy(x).contiguous(memory_format=torch.channels_last))
    assert out.is_contiguous()
    for got in (out, out_cl):
        if method == "MAX":
            np.testing.assert_array_equal(got.numpy(), top)
        else:
            np.testing.assert_allclose(got.numpy(), top, rtol=1e-6, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("case", cases_for("Pooling"))
def test_golden_pooling_inference_channels_last(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vision, "_CL_MIN_CHANNELS", 1)
    with torch.no_grad():
        run_case(case, check_backward=False)


def test_pooling_kernel_smaller_than_stride_keeps_empty_window() -> None:
    # README/golden facts: 9x9, kernel 2, stride 3 -> 4x4 (torch's ceil_mode gives 3x3);
    # the last window holds nothing: -FLT_MAX for MAX (mask -1), NaN for AVE.
    x = torch.randn(1, 2, 9, 9)
    mx, mask = _layer('name: "p" type: "Pooling" top: "o" top: "m" pooling_param { pool: MAX kernel_size: 2 stride: 3 }',
                      [x.shape])(x)
    assert mx.shape == (1, 2, 4, 4)
    assert torch.all(mx[..., 3, :] == -FLT_MAX) and torch.all(mx[..., :, 3] == -FLT_MAX)
    assert torch.all(mask[..., 3, :] == -1)
    (ave,) = _layer('name: "p" type: "Pooling" pooling_param { pool: AVE kernel_size: 2 stride: 3 }', [x.shape])(x)
    assert torch.all(torch.isnan(ave[..., 3, :])) and torch.all(torch.isnan(ave[..., :, 3]))
    assert not torch.isnan(ave[..., :3, :3]).any()


def test_pooling_floor_round_mode_and_global() -> None:
    x = torch.randn(2, 3, 6, 7)
    (out,) = _layer('name: "p" type: "Pooling" pooling_param { kernel_size: 3 stride: 2 round_mode: FLOOR }',
                    [x.shape])(x)
    assert out.shape == (2, 3, 2, 3)
    (g,) = _layer('name: "p" type: "Pooling" pooling_param { pool: AVE global_pooling: true }', [x.shape])(x)
    torch.testing.assert_close(g, x.mean(dim=(2, 3), keepdim=True))


def test_pooling_global_follows_reshaped_input() -> None:
    layer = _layer('name: "p" type: "Pooling" pooling_param { pool: MAX global_pooling: true }', [(1, 2, 4, 4)])
    x = torch.randn(1, 2, 5, 3)
    torch.testing.assert_close(layer(x)[0], x.amax(dim=(2, 3), keepdim=True))


@pytest.mark.parametrize("text, match", [
    ('pooling_param { kernel_size: 3 kernel_h: 3 kernel_w: 3 }', "kernel_size, or both kernel_h and kernel_w"),
    ('pooling_param { kernel_h: 3 }', "kernel_size, or both kernel_h and kernel_w"),
    ('pooling_param { }', "kernel_size, or both kernel_h and kernel_w"),
    ('pooling_param { kernel_size: 2 pad: 2 }', "smaller than the kernel"),
    ('pooling_param { kernel_size: 2 pad_h: 1 }', "pad_h and pad_w"),
    ('pooling_param { global_pooling: true kernel_size: 2 }', "no kernel size"),
    ('pooling_param { global_pooling: true stride: 2 }', "only pad 0 and stride 1"),
    ('pooling_param { pool: AVE kernel_size: 2 } top: "a" top: "b"', "only MAX pooling has a second"),
])
def test_pooling_bad_params_name_the_layer(text: str, match: str) -> None:
    with pytest.raises(CaffelikeError, match=match) as info:
        _layer(f'name: "pool1" type: "Pooling" {text}', [(1, 1, 6, 6)])
    assert "layer 'pool1' (Pooling)" in str(info.value)


def test_pooling_needs_4_axes() -> None:
    with pytest.raises(CaffelikeError, match="4-axis"):
        _layer('name: "p" type: "Pooling" pooling_param { kernel_size: 2 }', [(2, 3, 8)])


def test_stochastic_pooling_test_phase_is_weighted_average() -> None:
    # pooling_layer.cu StoPoolForwardTest: sum(x^2)/sum(x) per window (0 when the sum is <= 0).
    x = torch.rand(1, 2, 4, 4)
    layer = _layer('name: "p" type: "Pooling" pooling_param { pool: STOCHASTIC kernel_size: 2 stride: 2 }',
                   [x.shape], TEST)
    win = x.unfold(2, 2, 2).unfold(3, 2, 2).flatten(-2)
    torch.testing.assert_close(layer(x)[0], (win * win).sum(-1) / win.sum(-1))
    train = _layer('name: "p" type: "Pooling" pooling_param { pool: STOCHASTIC kernel_size: 2 stride: 2 }',
                   [x.shape], TRAIN)
    out = train(x)[0]
    assert torch.all((win == out.unsqueeze(-1)).any(-1))  # a sampled element of each window


# --------------------------------------------------------------------------------------------
# SPP (spp_layer.cpp GetPoolingParam)
# --------------------------------------------------------------------------------------------
def test_spp_height1_is_plain_4d_pooling() -> None:
    x = torch.randn(2, 3, 5, 7)
    (out,) = _layer('name: "s" type: "SPP" spp_param { pyramid_height: 1 }', [x.shape])(x)
    torch.testing.assert_close(out, x.amax(dim=(2, 3), keepdim=True))


def test_spp_level_output_sizes() -> None:
    x = torch.randn(1, 2, 13, 11)
    layer = _layer('name: "s" type: "SPP" spp_param { pyramid_height: 3 pool: AVE }', [x.shape])
    assert layer.top_shapes([x.shape]) == [(1, 2 * (1 + 4 + 16))]
    # level 3 (8 bins) would need pad 2 with kernel 2 on 13 rows: refused like Caffe's CHECK_LT.
    with pytest.raises(CaffelikeError, match="pyramid level 3"):
        _layer('name: "s" type: "SPP" spp_param { pyramid_height: 4 }', [x.shape])


def test_spp_too_high_pyramid_is_refused() -> None:
    # 3x3 input, level 2 (4 bins): kernel 1, pad (4-3+1)/2 = 1 >= kernel: Caffe's CHECK_LT fails.
    with pytest.raises(CaffelikeError, match="pyramid level 2"):
        _layer('name: "s" type: "SPP" spp_param { pyramid_height: 3 }', [(1, 1, 3, 3)])


# --------------------------------------------------------------------------------------------
# Convolution / Deconvolution / Im2col geometry (base_conv_layer.cpp, conv_layer.cpp,
# deconv_layer.cpp, util/im2col.cpp)
# --------------------------------------------------------------------------------------------
def _naive_im2col(x, k, s, p, d):
    """util/im2col.cpp im2col_cpu for one (C, H, W) image: (C*kh*kw, oh, ow)."""
    c, h, w = x.shape
    oh = (h + 2 * p[0] - (d[0] * (k[0] - 1) + 1)) // s[0] + 1
    ow = (w + 2 * p[1] - (d[1] * (k[1] - 1) + 1)) // s[1] + 1
    col = np.zeros((c * k[0] * k[1], oh, ow), np.float32)
    for ci, ki, kj, a, b in itertools.product(range(c), range(k[0]), range(k[1]), range(oh), range(ow)):
        y, z = a * s[0] - p[0] + ki * d[0], b * s[1] - p[1] + kj * d[1]
        if 0 <= y < h and 0 <= z < w:
            col[(ci * k[0] + ki) * k[1] + kj, a, b] = x[ci, y, z]
    return col


def test_im2col_stride_dilation_layout() -> None:
    x = np.random.RandomState(0).randn(2, 3, 7, 6).astype(np.float32)
    layer = _layer('name: "i" type: "Im2col" convolution_param { kernel_h: 3 kernel_w: 2 stride_h: 2 '
                   'stride_w: 1 pad_h: 1 pad_w: 2 } ', [x.shape])
    (out,) = layer(torch.from_numpy(x))
    # the dilation field is repeated, kernel_h/w are not: test dilation separately
    want = np.stack([_naive_im2col(img, (3, 2), (2, 1), (1, 2), (1, 1)) for img in x])
    np.testing.assert_array_equal(out.numpy(), want)
    layer = _layer('name: "i" type: "Im2col" convolution_param { kernel_size: 2 stride: 1 pad: 1 dilation: 2 }',
                   [x.shape])
    want = np.stack([_naive_im2col(img, (2, 2), (1, 1), (1, 1), (2, 2)) for img in x])
    np.testing.assert_array_equal(layer(torch.from_numpy(x))[0].numpy(), want)


def _conv_ref(x, wt, b, k, s, p, d, group):
    """conv_layer.cpp Forward_cpu: per group, weight (out/g, in/g*kh*kw) @ im2col + bias."""
    outs = []
    for img in x:
        col = _naive_im2col(img, k, s, p, d)
        kd = col.shape[0] // group
        og = wt.shape[0] // group
        rows = [wt[gi * og:(gi + 1) * og].reshape(og, -1) @ col[gi * kd:(gi + 1) * kd].reshape(kd, -1)
                for gi in range(group)]
        y = np.concatenate(rows).reshape((wt.shape[0],) + col.shape[1:])
        outs.append(y + (b[:, None, None] if b is not None else 0))
    return np.stack(outs).astype(np.float32)


def test_convolution_axis_and_multiple_bottoms() -> None:
    # axis 2 on a (2, 3, 4, 6, 5) blob: num = 2*3, channels 4, 2-D spatial (6, 5).
    rs = np.random.RandomState(1)
    x1 = rs.randn(2, 3, 4, 6, 5).astype(np.float32)
    x2 = rs.randn(2, 3, 4, 6, 5).astype(np.float32)
    layer = _layer('name: "c" type: "Convolution" bottom: "a" bottom: "b" top: "a1" top: "b1" '
                   'convolution_param { num_output: 6 kernel_size: 3 kernel_size: 2 stride: 2 pad: 1 '
                   'dilation: 1 dilation: 2 group: 2 axis: 2 '
                   'weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "uniform" } }',
                   [x1.shape, x2.shape])
    wt, b = (blob.detach().numpy() for blob in layer.blobs)
    assert wt.shape == (6, 2, 3, 2) and b.shape == (6,)
    outs = layer(torch.from_numpy(x1), torch.from_numpy(x2))
    for x, out in zip((x1, x2), outs):
        ref = _conv_ref(x.reshape(6, 4, 6, 5), wt, b, (3, 2), (2, 2), (1, 1), (1, 2), 2)
        np.testing.assert_allclose(out.detach().numpy(), ref.reshape((2, 3) + ref.shape[1:]),
                                   rtol=1e-5, atol=1e-5)


def test_convolution_1d_and_3d_shapes() -> None:
    c1 = _layer('name: "c" type: "Convolution" convolution_param { num_output: 4 kernel_size: 3 stride: 2 }',
                [(2, 3, 11)])
    assert c1.top_shapes([(2, 3, 11)]) == [(2, 4, 5)]
    c3 = _layer('name: "c" type: "Convolution" convolution_param { num_output: 2 kernel_size: 3 kernel_size: 1 '
                'kernel_size: 2 pad: 1 }', [(1, 3, 4, 5, 6)])
    assert c3.blobs[0].shape == (2, 3, 3, 1, 2)
    assert c3.top_shapes([(1, 3, 4, 5, 6)]) == [(1, 2, 4, 7, 7)]


def test_deconvolution_output_size_and_weight_layout() -> None:
    # deconv_layer.cpp: out = stride*(in-1) + dilation*(k-1)+1 - 2*pad; weight (in, out/g, k...)
    layer = _layer('name: "d" type: "Deconvolution" convolution_param { num_output: 6 kernel_size: 3 '
                   'stride: 3 pad: 1 dilation: 2 group: 3 bias_term: false }', [(2, 3, 4, 5)])
    assert layer.blobs[0].shape == (3, 2, 3, 3)
    assert layer.top_shapes([(2, 3, 4, 5)]) == [(2, 6, 3 * 3 + 5 - 2, 3 * 4 + 5 - 2)]


def test_bilinear_deconvolution_upsamples_constant_image() -> None:
    # filler.hpp's documented use: factor-2 upsampling, kernel 4, stride 2, pad 1, group C.
    layer = _layer('name: "up" type: "Deconvolution" convolution_param { num_output: 2 group: 2 '
                   'kernel_size: 4 stride: 2 pad: 1 bias_term: false weight_filler { type: "bilinear" } }',
                   [(1, 2, 5, 5)])
    (out,) = layer(torch.ones(1, 2, 5, 5))
    assert out.shape == (1, 2, 10, 10)
    torch.testing.assert_close(out[..., 1:-1, 1:-1], torch.ones(1, 2, 8, 8))


@pytest.mark.parametrize("params, match", [
    ("num_output: 2 kernel_size: 3 kernel_h: 3 kernel_w: 3", "either kernel_size or kernel_h"),
    ("num_output: 2", "needs kernel_size"),
    ("num_output: 2 kernel_size: 3 kernel_size: 3 kernel_size: 3", "once per spatial axis"),
    ("num_output: 3 kernel_size: 3 group: 2", "multiple of group"),
    ("num_output: 2 kernel_size: 3 group: 3", "multiple of group"),
    ("kernel_size: 3", "num_output must be > 0"),
    ("num_output: 2 kernel_size: 0", "kernel size must be > 0"),
    ("num_output: 2 kernel_size: 3 stride: 0", "stride must be > 0"),
    ("num_output: 2 kernel_size: 3 weight_filler { type: \"gausian\" }", "did you mean 'gaussian'"),
])
def test_convolution_bad_params_name_the_layer(params: str, match: str) -> None:
    with pytest.raises(CaffelikeError, match=match) as info:
        _layer(f'name: "conv1" type: "Convolution" convolution_param {{ {params} }}', [(1, 4, 8, 8)])
    assert "layer 'conv1' (Convolution)" in str(info.value)


def test_convolution_4d_spatial_goes_through_im2col() -> None:
    # Caffe's N-D im2col path (util/im2col.cpp im2col_nd_cpu); checked against the 3-D torch
    # path: a 4-D kernel of extent 1 on the last axis is the same 3-D convolution per slice.
    rs = np.random.RandomState(3)
    x = rs.randn(2, 4, 5, 6, 5, 3).astype(np.float32)
    text = ('name: "c" type: "Convolution" convolution_param { num_output: 6 group: 2 '
            'kernel_size: 3 kernel_size: 2 kernel_size: 3 kernel_size: 1 stride: 2 stride: 1 '
            'stride: 1 stride: 1 pad: 1 pad: 0 pad: 2 pad: 0 weight_filler { type: "xavier" } '
            'bias_filler { type: "gaussian" } }')
    c4 = _layer(text, [x.shape])
    assert c4.blobs[0].shape == (6, 2, 3, 2, 3, 1)
    (y,) = c4(torch.from_numpy(x))
    assert c4.top_shapes([x.shape]) == [tuple(y.shape)] == [(2, 6, 3, 5, 7, 3)]
    w3 = c4.blobs[0].detach()[..., 0]
    for i in range(3):
        ref = torch.nn.functional.conv3d(torch.from_numpy(x[..., i]), w3, c4.blobs[1].detach(),
                                         stride=(2, 1, 1), padding=(1, 0, 2), groups=2)
        torch.testing.assert_close(y[..., i].detach(), ref, rtol=1e-5, atol=1e-5)


def test_deconvolution_4d_spatial_raises_clearly() -> None:
    with pytest.raises(CaffelikeError, match="4-D Deconvolution is not implemented"):
        _layer('name: "c" type: "Deconvolution" convolution_param { num_output: 2 kernel_size: 1 }',
               [(1, 2, 3, 3, 3, 3)])


@pytest.mark.parametrize("text, shape", [
    ('type: "Convolution" convolution_param { num_output: 4 kernel_size: 3 pad: 1 }', (2, 3, 6, 6)),
    ('type: "Deconvolution" convolution_param { num_output: 4 kernel_size: 3 stride: 2 }', (2, 3, 6, 6)),
    ('type: "Im2col" convolution_param { kernel_size: 3 }', (2, 3, 6, 6)),
    ('type: "Pooling" top: "a" top: "b" pooling_param { kernel_size: 3 stride: 2 }', (2, 3, 9, 9)),
    ('type: "Pooling" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }', (2, 3, 9, 9)),
    ('type: "SPP" spp_param { pyramid_height: 3 }', (2, 3, 9, 9)),
])
def test_top_shapes_on_meta_match_forward(text: str, shape) -> None:
    layer = _layer(f'name: "l" {text}', [shape])
    outs = layer(torch.randn(shape))
    assert layer.top_shapes([shape]) == [tuple(o.shape) for o in outs]


def test_convolution_without_spatial_axes_is_grouped_inner_product() -> None:
    # base_conv_layer.cpp allows 0 spatial axes: weight (out, in/group), top (N, out).
    x = torch.randn(4, 6)
    layer = _layer('name: "c" type: "Convolution" convolution_param { num_output: 4 kernel_size: 1 group: 2 '
                   'weight_filler { type: "gaussian" } bias_filler { type: "gaussian" } }', [x.shape])
    w, b = (blob.detach() for blob in layer.blobs)
    assert w.shape == (4, 3)
    (y,) = layer(x)
    want = torch.cat([x[:, :3] @ w[:2].T, x[:, 3:] @ w[2:].T], dim=1) + b
    torch.testing.assert_close(y.detach(), want)
    assert layer.top_shapes([(4, 6)]) == [(4, 4)]
