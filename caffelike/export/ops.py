"""The op table: how each Caffe layer type becomes one plain torch module.

``OPS`` maps a Caffe type string to a function ``(layer) -> TorchOp`` that reads the built
caffelike layer (its ``param``, ``bottom_shapes`` and parameter blobs) and says which torch
class to build, with which literal arguments and which state_dict. Standard ``torch.nn``
classes are used where torch has Caffe's exact semantics, the helpers of
:mod:`caffelike.export.helpers` where it does not. A layer type (a fork's included) becomes
exportable by adding one ``@torch_op("Type")`` function here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from ..errors import LayerError
from ..layers.base import Layer, canonical_axis
from ..proto import caffe_pb2
from ..registry import Registry
from . import helpers


class Uncovered(Exception):
    """A layer whose parameters the exporter does not cover (the message says which)."""


@dataclass(frozen=True)
class TorchOp:
    """One torch module to build: its class, literal constructor arguments and state_dict."""

    cls: type[nn.Module]
    args: tuple = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    state: Mapping[str, torch.Tensor] = field(default_factory=dict)

    def build(self) -> nn.Module:
        """A fresh module holding copies of ``state`` (nothing shared with the source net)."""
        with torch.device("meta"):  # no throw-away random init of big weights
            module = self.cls(*self.args, **self.kwargs)
        module = module.to_empty(device="cpu")
        module.load_state_dict(dict(self.state), strict=True)
        return module


OpFn = Callable[[Layer], TorchOp]
OPS: Registry[OpFn] = Registry("exportable layer type", LayerError)


def torch_op(*type_names: str) -> Callable[[OpFn], OpFn]:
    """Register ``fn`` as the export of each of these Caffe types."""

    def wrap(fn: OpFn) -> OpFn:
        for name in type_names:
            OPS.register(name, fn)
        return fn

    return wrap


def f32(value: float) -> float:
    """A float32 prototxt value as the shortest decimal that reads back to it (1e-05, not 9.99e-06)."""
    return float(str(np.float32(value)))


def compact(values: tuple) -> int | tuple:
    """A per-axis tuple as one int when every axis has the same value (``kernel_size=3``)."""
    return values[0] if values and all(v == values[0] for v in values) else tuple(values)


def _blob(layer: Layer, i: int) -> torch.Tensor:
    return layer.blobs[i].detach().to("cpu", torch.float32).clone()


# -- vision ---------------------------------------------------------------------------------------
def _conv(layer: Layer, transposed: bool) -> TorchOp:
    g, shape = layer.geom, layer.bottom_shapes[0]
    n = g.num_spatial
    if g.axis != 1 or n not in (1, 2, 3) or len(layer.bottom_shapes) != 1:
        raise Uncovered("only one bottom with channels on axis 1 and 1 to 3 spatial axes is covered")
    cls = ({1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d} if transposed
           else {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d})[n]
    kwargs: dict[str, Any] = {"kernel_size": compact(g.kernel)}
    for name, values, default in (("stride", g.stride, 1), ("padding", g.pad, 0), ("dilation", g.dilation, 1)):
        if any(v != default for v in values):
            kwargs[name] = compact(values)
    if layer.group != 1:
        kwargs["groups"] = layer.group
    if not layer.bias_term:
        kwargs["bias"] = False
    state = {"weight": _blob(layer, 0)}
    if layer.bias_term:
        state["bias"] = _blob(layer, 1)
    return TorchOp(cls, (shape[1], layer.num_output), kwargs, state)


@torch_op("Convolution", "ConvolutionDepthwise", "DepthwiseConvolution")
def convolution(layer: Layer) -> TorchOp:
    """torch.nn.ConvNd: Caffe's output size (C division) is torch's floor for non-negative spans.

    Also the forks' depthwise spellings: ConvolutionDepthwise (PR 5665; group = channels set
    up by the layer) and Caffe_Long's DepthwiseConvolution (Convolution itself on the CPU)."""
    return _conv(layer, transposed=False)


@torch_op("Deconvolution")
def deconvolution(layer: Layer) -> TorchOp:
    """torch.nn.ConvTransposeNd: same weight layout (in, out/group, k...), no output padding."""
    return _conv(layer, transposed=True)


def _torch_pool_exact(kernel: tuple, stride: tuple, pad: tuple, ceil: bool) -> bool:
    """Whether torch's pooling has Caffe's windows for every input size.

    torch needs pad <= kernel/2. In ceil mode torch drops a last window starting at or past
    size + pad on each axis, Caffe only when some pad is set; the two differ only on an
    unpadded layer with kernel < stride. In floor mode no window starts in the padding.
    """
    if any(2 * p > k for p, k in zip(pad, kernel)):
        return False
    return not ceil or any(pad) or all(k >= s for k, s in zip(kernel, stride))


@torch_op("Pooling")
def pooling(layer: Layer) -> TorchOp:
    """MaxPool2d/AvgPool2d(ceil_mode, count_include_pad) where exact, global pooling as
    AdaptiveXPool2d(1), else the Pool2d helper."""
    method = caffe_pb2.PoolingParameter.PoolMethod.Name(layer.pool)
    if method not in ("MAX", "AVE") or len(layer.param.top) > 1:
        raise Uncovered("only MAX and AVE pooling with one top are covered")
    g = layer.geom
    if layer.global_pooling:
        return TorchOp(nn.AdaptiveMaxPool2d if method == "MAX" else nn.AdaptiveAvgPool2d, (1,))
    if not _torch_pool_exact(g.kernel, g.stride, g.pad, g.ceil):
        return TorchOp(helpers.Pool2d, (method,), {"kernel_size": g.kernel, "stride": g.stride, "padding": g.pad,
                                                    "ceil_mode": g.ceil})
    kwargs: dict[str, Any] = {}
    if g.stride != g.kernel:
        kwargs["stride"] = compact(g.stride)
    if any(g.pad):
        kwargs["padding"] = compact(g.pad)
    kwargs["ceil_mode"] = g.ceil
    if method == "MAX":
        return TorchOp(nn.MaxPool2d, (compact(g.kernel),), kwargs)
    return TorchOp(nn.AvgPool2d, (compact(g.kernel),), kwargs)  # count_include_pad=True: Caffe's divisor


# -- common ---------------------------------------------------------------------------------------
@torch_op("InnerProduct")
def inner_product(layer: Layer) -> TorchOp:
    """torch.nn.Linear on a bottom with axis+1 axes, else the FlattenLinear helper; a transposed
    Caffe weight (K, N) is stored as torch's (N, K)."""
    ip = layer.param.inner_product_param
    shape = layer.bottom_shapes[0]
    axis = canonical_axis(ip.axis, len(shape), layer)
    weight = _blob(layer, 0)
    state = {"weight": weight.t().contiguous() if ip.transpose else weight}
    if ip.bias_term:
        state["bias"] = _blob(layer, 1)
    args = (layer.k, layer.num_output)
    kwargs: dict[str, Any] = {} if ip.bias_term else {"bias": False}
    if axis == len(shape) - 1:
        return TorchOp(nn.Linear, args, kwargs, state)
    return TorchOp(helpers.FlattenLinear, args, {**kwargs, **({"axis": axis} if axis != 1 else {})}, state)


@torch_op("Scale")
def scale(layer: Layer) -> TorchOp:
    """The Scale helper (learned scale, or the second bottom; optional bias)."""
    sp = layer.param.scale_param
    axis = canonical_axis(sp.axis, len(layer.bottom_shapes[0]), layer)
    learned = len(layer.bottom_shapes) == 1
    state = {"weight": _blob(layer, 0)} if learned else {}
    if sp.bias_term:
        state["bias"] = _blob(layer, len(layer.blobs) - 1)
    shape = tuple(layer.blobs[0].shape) if learned else None
    bias_shape = tuple(layer.blobs[-1].shape) if sp.bias_term else None
    return TorchOp(helpers.Scale, (), {"axis": axis, "shape": shape, "bias_shape": bias_shape}, state)


@torch_op("Bias")
def bias(layer: Layer) -> TorchOp:
    """The Bias helper (learned bias, or the second bottom)."""
    axis = canonical_axis(layer.param.bias_param.axis, len(layer.bottom_shapes[0]), layer)
    if len(layer.bottom_shapes) == 2:
        return TorchOp(helpers.Bias, (), {"axis": axis, "shape": None})
    return TorchOp(helpers.Bias, (), {"axis": axis, "shape": tuple(layer.blobs[0].shape)}, {"bias": _blob(layer, 0)})


@torch_op("Eltwise")
def eltwise(layer: Layer) -> TorchOp:
    """The Eltwise helper (SUM with coefficients, PROD, MAX with Caffe's tie rule)."""
    ep = layer.param.eltwise_param
    op = caffe_pb2.EltwiseParameter.EltwiseOp.Name(ep.operation)
    return TorchOp(helpers.Eltwise, (op, tuple(f32(c) for c in ep.coeff)) if ep.coeff else (op,))


@torch_op("Softmax")
def softmax(layer: Layer) -> TorchOp:
    """torch.nn.Softmax over Caffe's axis."""
    return TorchOp(nn.Softmax, (), {"dim": canonical_axis(layer.param.softmax_param.axis,
                                                          len(layer.bottom_shapes[0]), layer)})


# -- shape ----------------------------------------------------------------------------------------
def _legacy_axis(layer: Layer, p: Any, legacy: str) -> int:
    if p.HasField(legacy):
        return getattr(p, legacy)
    return canonical_axis(p.axis, len(layer.bottom_shapes[0]), layer)


@torch_op("Concat")
def concat(layer: Layer) -> TorchOp:
    """The Concat helper along Caffe's axis (or legacy concat_dim)."""
    return TorchOp(helpers.Concat, (_legacy_axis(layer, layer.param.concat_param, "concat_dim"),))


@torch_op("Slice")
def slice_(layer: Layer) -> TorchOp:
    """The Slice helper: Caffe's slice points, or equal parts."""
    sp = layer.param.slice_param
    axis = _legacy_axis(layer, sp, "slice_dim")
    if sp.slice_point:
        return TorchOp(helpers.Slice, (axis, tuple(sp.slice_point)))
    return TorchOp(helpers.Slice, (axis,), {"parts": max(len(layer.param.top), 1)})


@torch_op("Crop")
def crop(layer: Layer) -> TorchOp:
    """The Crop helper with one offset per cropped axis."""
    data, ref = layer.bottom_shapes
    start = canonical_axis(layer.param.crop_param.axis, len(data), layer)
    offsets = layer._offsets(data, ref)[start:]
    return TorchOp(helpers.Crop, (), {"axis": start, "offsets": tuple(offsets)})


@torch_op("Flatten")
def flatten(layer: Layer) -> TorchOp:
    """torch.nn.Flatten(axis, end_axis): the same merge of axes."""
    fp, ndim = layer.param.flatten_param, len(layer.bottom_shapes[0])
    start = canonical_axis(fp.axis, ndim, layer)
    end = canonical_axis(fp.end_axis, ndim, layer, "end_axis")
    return TorchOp(nn.Flatten, (start, end if end != ndim - 1 else -1))


@torch_op("Reshape")
def reshape(layer: Layer) -> TorchOp:
    """The Reshape helper: Caffe's axis/num_axes window, 0 = copy, -1 = infer."""
    rp, ndim = layer.param.reshape_param, len(layer.bottom_shapes[0])
    start = rp.axis if rp.axis >= 0 else ndim + rp.axis + 1
    end = None if rp.num_axes == -1 else start + rp.num_axes
    return TorchOp(helpers.Reshape, (tuple(rp.shape.dim),), {"start": start, "end": end})


# -- neurons --------------------------------------------------------------------------------------
@torch_op("ReLU")
def relu(layer: Layer) -> TorchOp:
    """torch.nn.ReLU, or LeakyReLU with Caffe's negative_slope."""
    slope = f32(layer.param.relu_param.negative_slope)
    return TorchOp(nn.LeakyReLU, (slope,)) if slope else TorchOp(nn.ReLU)


@torch_op("Sigmoid")
def sigmoid(layer: Layer) -> TorchOp:
    """torch.nn.Sigmoid."""
    return TorchOp(nn.Sigmoid)


@torch_op("TanH")
def tanh(layer: Layer) -> TorchOp:
    """torch.nn.Tanh."""
    return TorchOp(nn.Tanh)


@torch_op("AbsVal")
def absval(layer: Layer) -> TorchOp:
    """The AbsVal helper (torch has no module for |x|)."""
    return TorchOp(helpers.AbsVal)


@torch_op("BNLL")
def bnll(layer: Layer) -> TorchOp:
    """torch.nn.Softplus: log(1 + exp(x)); above its threshold 20 it returns x, where Caffe's
    x + log(1 + exp(-x)) rounds to x in float32 too."""
    return TorchOp(nn.Softplus)


@torch_op("ELU")
def elu(layer: Layer) -> TorchOp:
    """torch.nn.ELU(alpha)."""
    return TorchOp(nn.ELU, (f32(layer.param.elu_param.alpha),))


@torch_op("Clip")
def clip(layer: Layer) -> TorchOp:
    """torch.nn.Hardtanh(min, max): Caffe's clamp."""
    cp = layer.param.clip_param
    return TorchOp(nn.Hardtanh, (f32(cp.min), f32(cp.max)))


@torch_op("Power")
def power(layer: Layer) -> TorchOp:
    """The Power helper: (shift + scale * x) ^ power."""
    p = layer.param.power_param
    return TorchOp(helpers.Power, (f32(p.power), f32(p.scale), f32(p.shift)))


@torch_op("Swish")
def swish(layer: Layer) -> TorchOp:
    """torch.nn.SiLU for beta 1, else the Swish helper."""
    beta = f32(layer.param.swish_param.beta)
    return TorchOp(nn.SiLU) if beta == 1.0 else TorchOp(helpers.Swish, (beta,))


@torch_op("PReLU")
def prelu(layer: Layer) -> TorchOp:
    """torch.nn.PReLU: one slope per channel (axis 1), or one shared."""
    slopes = _blob(layer, 0).reshape(-1)
    return TorchOp(nn.PReLU, (slopes.numel(),), {}, {"weight": slopes})


@torch_op("Dropout")
def dropout(layer: Layer) -> TorchOp:
    """torch.nn.Dropout: Caffe's inverted dropout in train(), the identity in eval()."""
    return TorchOp(nn.Dropout, (f32(layer.param.dropout_param.dropout_ratio),))


# -- normalisation --------------------------------------------------------------------------------
@torch_op("BatchNorm")
def batch_norm(layer: Layer) -> TorchOp:
    """torch.nn.BatchNormNd(affine=False) with Caffe's statistics divided by its scale factor
    (factor 0 gives 0, as Caffe); momentum 1 - moving_average_fraction."""
    ndim = len(layer.bottom_shapes[0])
    cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}.get(ndim)
    if cls is None:
        raise Uncovered(f"a {ndim}-axis bottom is not covered (2 to 5 axes are)")
    mean, var = layer.global_stats()
    state = {"running_mean": mean.to("cpu", torch.float32).clone(),
             "running_var": var.to("cpu", torch.float32).clone(),
             "num_batches_tracked": torch.tensor(0, dtype=torch.long)}
    p = layer.param.batch_norm_param
    kwargs = {"eps": f32(p.eps), "momentum": f32(1.0 - f32(p.moving_average_fraction)),
              "affine": False}
    return TorchOp(cls, (layer.channels,), kwargs, state)


@torch_op("LRN")
def lrn(layer: Layer) -> TorchOp:
    """torch.nn.LocalResponseNorm (Caffe's across-channel formula, alpha/size included), or the
    LRNWithinChannel helper."""
    p = layer.param.lrn_param
    if p.norm_region == caffe_pb2.LRNParameter.WITHIN_CHANNEL:
        return TorchOp(helpers.LRNWithinChannel, (p.local_size, f32(p.alpha), f32(p.beta)))
    return TorchOp(nn.LocalResponseNorm, (p.local_size,), {"alpha": f32(p.alpha), "beta": f32(p.beta),
                                                          "k": f32(p.k)})


# -- fork layers (issue 16) -----------------------------------------------------------------------
@torch_op("Axpy")
def axpy(layer: Layer) -> TorchOp:
    """The Axpy helper (SENet): a * x + y."""
    return TorchOp(helpers.Axpy)


@torch_op("ShuffleChannel")
def shuffle_channel(layer: Layer) -> TorchOp:
    """The ShuffleChannel helper (ShuffleNet)."""
    return TorchOp(helpers.ShuffleChannel, (layer.group,))


@torch_op("ReLU6")
def relu6(layer: Layer) -> TorchOp:
    """torch.nn.ReLU6 (Caffe_Long's ReLU6 without a slope), else the ReLU6 helper."""
    slope = f32(layer.negative_slope)
    return TorchOp(helpers.ReLU6, (slope,)) if slope else TorchOp(nn.ReLU6)


@torch_op("Permute")
def permute(layer: Layer) -> TorchOp:
    """The Permute helper (SSD), the identity order as torch.nn.Identity."""
    if layer.order == tuple(range(len(layer.order))):
        return TorchOp(nn.Identity)
    return TorchOp(helpers.Permute, (layer.order,))


@torch_op("Normalize")
def normalize(layer: Layer) -> TorchOp:
    """The Normalize helper (SSD) with the learned scale."""
    shape = layer.bottom_shapes[0]
    return TorchOp(helpers.Normalize, (int(shape[1]) if len(shape) > 1 else 1,),
                   {"across_spatial": layer.across_spatial, "channel_shared": layer.channel_shared,
                    "eps": f32(layer.eps)}, {"weight": _blob(layer, 0)})


@torch_op("Interp")
def interp(layer: Layer) -> TorchOp:
    """The Interp helper (PSPNet), the fork's size rule resolved to the fields that apply."""
    p = layer.param.interp_param
    shrink, zoom = p.HasField("shrink_factor"), p.HasField("zoom_factor")
    kwargs: dict[str, Any] = {}
    if layer.pad_beg or layer.pad_end:
        kwargs.update(pad_beg=layer.pad_beg, pad_end=layer.pad_end)
    if shrink != zoom or not (p.HasField("height") and p.HasField("width")):
        if shrink:
            kwargs["shrink"] = int(p.shrink_factor)
        if zoom:
            kwargs["zoom"] = int(p.zoom_factor)
    else:
        kwargs.update(height=int(p.height), width=int(p.width))
    return TorchOp(helpers.Interp, (), kwargs)


@torch_op("Upsample")
def upsample(layer: Layer) -> TorchOp:
    """The UpsampleNearest helper (the YOLO forks' one-bottom Upsample); scale 1 is the identity."""
    if layer.unpool:
        raise Uncovered("the two-bottom Upsample (SegNet's unpooling) reads the mask top of a "
                        "Pooling layer, which the export does not cover; only the one-bottom "
                        "(nearest neighbour) Upsample is")
    return TorchOp(nn.Identity) if layer.scale == 1 else TorchOp(helpers.UpsampleNearest, (layer.scale,))


@torch_op("BN")
def bn(layer: Layer) -> TorchOp:
    """The Scale helper with bias: SegNet's INFERENCE BN (its scale and shift) and PSPNet's BN
    on its stored statistics (slope / sqrt(var + eps), bias - mean * that), in float32."""
    channels = int(layer.bottom_shapes[0][1])
    affine = layer.affine(channels)
    if affine is None:
        raise Uncovered("only a BN that is an affine map at deploy time is covered: SegNet's "
                        "bn_mode INFERENCE or PSPNet's (TEST or frozen), with one top; this one "
                        "uses batch statistics or writes statistics tops")
    weight, shift = (t.to(torch.float32) for t in affine)
    return TorchOp(helpers.Scale, (), {"axis": 1, "shape": (channels,), "bias_shape": (channels,)},
                   {"weight": weight, "bias": shift})


@torch_op("Reorg")
def reorg(layer: Layer) -> TorchOp:
    """The Reorg helper (YOLOv2 / MobileNet-YOLO)."""
    return TorchOp(helpers.Reorg, (layer.stride,), {"reverse": True} if layer.reverse else {})


@torch_op("PriorBox")
def prior_box(layer: Layer) -> TorchOp:
    """The PriorBox helper (SSD): boxes computed from the inputs' shapes in forward (no state),
    so they follow the feature map's size; the batch size does not enter them."""
    kwargs: dict[str, Any] = {"offset": f32(layer.offset)}
    if layer.step_h and layer.step_w:
        kwargs["step"] = (f32(layer.step_h), f32(layer.step_w))
    if layer.img_h and layer.img_w:
        kwargs["img_size"] = (layer.img_h, layer.img_w)
    if layer.clip:
        kwargs["clip"] = True
    return TorchOp(helpers.PriorBox, (tuple(layer.box_sizes()), tuple(f32(v) for v in layer.variances)), kwargs)
