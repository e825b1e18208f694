"""Layers of the book author's Caffe fork, longpeng2008/Caffe_Long (commit ecdb08d): the
convolution, element-wise and shuffle ones, and the helpers the fork's other modules share.

Caffe_Long's types are registered under the fork's type strings with the fork's semantics,
quirks included (each docstring names its quirk and the golden cases in
``tests/golden/caffe_long/layers`` that pin it); another fork may use the same type string
for another layer. Here: DepthwiseConvolution, ReLU6, SignedSqrt, L2Normalize, ChannelShuffle.
Bilinear pooling is in :mod:`.caffe_long_bilinear`, the margin / label-specific layers in
:mod:`.caffe_long_margin`, the losses and metrics in :mod:`.caffe_long_loss`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .base import Layer, Shape, register_layer
from .neuron import _NeuronLayer
from .vision import Convolution

Tensor = torch.Tensor


def _count(shape: Sequence[int], start: int = 0, end: int | None = None) -> int:
    n = 1
    for d in tuple(shape)[start:end]:
        n *= int(d)
    return n


def _legacy_4d(shape: Sequence[int]) -> Shape:
    """Caffe's num/channels/height/width view of a shape of at most 4 axes (missing axes are 1)."""
    s = tuple(int(d) for d in shape)
    return s + (1,) * (4 - len(s))


def _is_meta(*tensors: Tensor) -> bool:
    return any(t.device.type == "meta" for t in tensors)


def _refuse_in_place(layer: Layer) -> None:
    """The fork's CHECK(top != bottom): these layers cannot run in place."""
    if set(layer.param.top) & set(layer.param.bottom):
        raise layer.error(f"{layer.param.type} cannot run in place (top '{layer.param.top[0]}' is "
                          "also a bottom); give the top its own name")


# ---------------------------------------------------------------------------------------------
# Convolution and element-wise layers


@register_layer("DepthwiseConvolution", bottoms=(1, None), tops=(1, None))
class DepthwiseConvolution(Convolution):
    """The fork's DepthwiseConvolution: on the CPU exactly Caffe's Convolution (same blobs,
    same output size, same gradients).

    Caffe_Long semantics: the layer is depthwise only through ``convolution_param.group``
    (MobileNet prototxts set ``group`` = channels); without ``group`` it is a dense
    convolution. Golden: ``DepthwiseConvolution__dw_k3_p1_g4``, ``__dw_k3_s2_p1_mult2_g3``,
    ``__nogroup_k3``.
    """


@register_layer("ReLU6")
class ReLU6(_NeuronLayer):
    """y = min(max(x, 0) + slope * min(x, 0), 6), configured by ``relu6_param`` (a ReLUParameter).

    Caffe_Long semantics: the gradient is ``dy * ((x > 0) + slope * (x <= 0)) * (x < 6)``:
    0 at exactly 6, ``slope`` at exactly 0; the negative side is not clipped at -6.
    Golden: ``ReLU6__basic``, ``ReLU6__slope0.1``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.negative_slope = float(np.float32(self.param.relu6_param.negative_slope))

    def fn(self, x: Tensor) -> Tensor:
        y = torch.clamp(x, min=0)
        if self.negative_slope != 0.0:
            y = y + self.negative_slope * torch.clamp(x, max=0)
        return torch.clamp(y, max=6.0)

    def rule(self, x: Tensor, y: Tensor, dy: Tensor) -> Tensor:
        slope = (x > 0).to(x.dtype) + self.negative_slope * (x <= 0).to(x.dtype)
        return dy * slope * (x < 6).to(x.dtype)


class _SignedSqrtFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        y = torch.sign(x) * torch.sqrt(torch.abs(x))
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy: Tensor):
        (y,) = ctx.saved_tensors
        return 0.5 * (dy / (torch.abs(y) + SignedSqrt.EPSILON))


@register_layer("SignedSqrt")
class SignedSqrt(Layer):
    """y = sign(x) * sqrt(|x|), element-wise (the bilinear-CNN normalisation).

    Caffe_Long semantics: the backward is ``0.5 * dy / (|y| + 0.03)``, not the exact
    ``0.5 / sqrt|x|`` (finite at 0; 0.8% off at |x| ~ 100); it cannot run in place.
    Golden: ``SignedSqrt__basic``, ``SignedSqrt__2d_large``.
    """

    EPSILON = 0.03

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _refuse_in_place(self)

    def forward(self, x: Tensor) -> list[Tensor]:
        return [_SignedSqrtFn.apply(x)]

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        return [tuple(bottom_shapes[0])]


@register_layer("L2Normalize")
class L2Normalize(Layer):
    """Each sample scaled to unit L2 norm over all its C*H*W values: y = x / sqrt(sum x^2 + 1e-7).

    Caffe_Long semantics: the top is 4-D (num, channels, height, width), so a 2-D (N, D)
    bottom gives an (N, D, 1, 1) top; the gradient is exact; no in-place use.
    Golden: ``L2Normalize__nchw``, ``L2Normalize__2d_zero_row``.
    """

    EPSILON = 1e-7

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _refuse_in_place(self)
        if len(self.bottom_shapes[0]) > 4:
            raise self.error(f"bottom shape {self.bottom_shapes[0]} has more than 4 axes; "
                             "L2Normalize reads num/channels/height/width")

    def forward(self, x: Tensor) -> list[Tensor]:
        n = x.shape[0]
        flat = x.reshape(n, -1)
        scale = torch.rsqrt((flat * flat).sum(dim=1, keepdim=True) + self.EPSILON)
        return [(flat * scale).reshape(_legacy_4d(x.shape))]

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        return [_legacy_4d(bottom_shapes[0])]


# ---------------------------------------------------------------------------------------------
# ChannelShuffle


class _ShuffleFn(torch.autograd.Function):
    """Pattern 1: top[:, dest] = x[:, last group's src]; the backward hands every group dy[:, dest]."""

    @staticmethod
    def forward(ctx, x: Tensor, dest: Tensor, group: int) -> Tensor:
        n, c = x.shape[0], x.shape[1]
        per_group = c // group
        top = torch.zeros_like(x)
        top[:, dest] = x[:, (group - 1) * per_group:]
        ctx.dest, ctx.group = dest, group
        return top

    @staticmethod
    def backward(ctx, dy: Tensor):
        picked = dy[:, ctx.dest]
        return torch.cat([picked] * ctx.group, dim=1), None, None


@register_layer("ChannelShuffle")
class ChannelShuffle(Layer):
    """The fork's channel shuffle; top shaped like the bottom (N, C, H, W).

    Caffe_Long semantics, both patterns as its loops compute them:

    * ``shuffle_pattern: 1`` (default; ``group`` G, ``shuffle_channel_num`` k) is NOT
      ShuffleNet's shuffle: within each group of C/G channels, block b (k channels) goes to
      group ``b % G`` at block ``b // G``, but every input group writes to the same
      destinations, so only the last group survives and the remaining top channels stay 0
      (C=8, G=2: top = [x4, x6, 0, 0, x5, x7, 0, 0]); the backward hands each input group the
      same top-diff slices. Requires (C/G) % G == 0 and (C/G/G) % k == 0.
    * ``shuffle_pattern: 0`` rewrites the memory from NCHW to NHWC order and keeps the shape
      N, C, H, W (a pure permutation; exact backward).

    Golden: ``ChannelShuffle__g2_c8``, ``ChannelShuffle__pattern0_nchw_to_nhwc``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        p = self.param.channel_shuffle_param
        self.pattern = int(p.shuffle_pattern)
        if self.pattern not in (0, 1):
            raise self.error(f"channel_shuffle_param.shuffle_pattern {self.pattern}; expected 0 or 1")
        shape = self.bottom_shapes[0]
        if len(shape) < 2:
            raise self.error(f"bottom shape {shape} has no channel axis")
        channels = int(shape[1])
        self.dest: Tensor | None = None
        if self.pattern == 1:
            group, k = int(p.group), int(p.shuffle_channel_num)
            if group <= 0 or k <= 0 or channels % group:
                raise self.error(f"channels ({channels}) must be a multiple of group ({group}), "
                                 f"shuffle_channel_num ({k}) positive")
            per_group = channels // group
            if per_group % group or (per_group // group) % k:
                raise self.error(f"channels per group ({per_group}) must be a multiple of group "
                                 f"({group}) and (channels per group / group) a multiple of "
                                 f"shuffle_channel_num ({k}) (the fork's CHECKs)")
            dest = []
            for c in range(0, per_group, k):
                block = c // k
                start = (block % group) * per_group + (block // group) * k
                dest.extend(range(start, start + k))
            self.group = group
            self.dest = torch.tensor(dest, dtype=torch.int64)

    def forward(self, x: Tensor) -> list[Tensor]:
        if self.pattern == 0:
            n, c = x.shape[0], x.shape[1]
            return [x.reshape(n, c, -1).transpose(1, 2).reshape(x.shape)]
        return [_ShuffleFn.apply(x, self.dest.to(x.device), self.group)]

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        return [tuple(bottom_shapes[0])]
