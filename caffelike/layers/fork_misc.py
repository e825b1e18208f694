"""Building blocks of the SENet, ShuffleNet and MobileNet forks (issue 16): Axpy, ShuffleChannel,
ConvolutionDepthwise.

* ``Axpy``: hujie-frank/SENet ``src/caffe/layers/axpy_layer.cpp``.
* ``ShuffleChannel``: farmingyard/ShuffleNet ``shuffle_channel_layer.cpp`` (ShuffleNet's channel
  shuffle; not Caffe_Long's ``ChannelShuffle``, whose pattern 1 keeps only the last group).
* ``ConvolutionDepthwise``: BVLC/caffe PR 5665's ``conv_dw_layer.cpp`` (sp2823), the spelling of
  the MobileNet / ShuffleNet prototxts. The other spelling, ``DepthwiseConvolution``
  (yonghenglh6/DepthwiseConvolution, eric612/MobileNet-YOLO, Caffe_Long), is a plain Convolution
  driven by ``group`` and lives in :mod:`.caffe_long`.
* ``ReLU6`` is Caffe_Long's class (:mod:`.caffe_long`): eric612/MobileNet-YOLO's
  ``relu6_layer.cpp`` computes the same thing from the same ``relu6_param`` (a ReLUParameter).
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..proto import caffe_pb2
from .base import Layer, Shape, register_layer
from .caffe_long import _legacy_4d
from .vision import Convolution

Tensor = torch.Tensor


@register_layer("Axpy", bottoms=3)
class Axpy(Layer):
    """top = a * x + y with bottoms (a, x, y): a holds one scale per sample and channel.

    SENet semantics: ``a`` is (N, C) or (N, C, 1, 1), ``x`` and ``y`` share a shape whose first
    two axes are (N, C); the top is shaped like ``x``. The gradients are exact (da sums dy * x
    over the spatial positions).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        a, x, y = (tuple(s) for s in self.bottom_shapes)
        if len(a) < 2 or len(x) < 2 or a[:2] != x[:2]:
            raise self.error(f"bottom 0 (the scale, shape {a}) must match bottom 1 (shape {x}) on "
                             "its first two axes (num, channels)")
        if len(a) == 4 and a[2:] != (1, 1):
            raise self.error(f"bottom 0 (the scale, shape {a}) must be 1x1 spatially")
        if x != y:
            raise self.error(f"bottoms 1 and 2 must have the same shape: {x} vs {y}")

    def forward(self, a: Tensor, x: Tensor, y: Tensor) -> list[Tensor]:
        scale = a.reshape(tuple(a.shape[:2]) + (1,) * (x.dim() - 2))
        return [torch.addcmul(y, scale, x)]

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        return [tuple(bottom_shapes[1])]


@register_layer("ShuffleChannel")
class ShuffleChannel(Layer):
    """ShuffleNet's channel shuffle: the C channels, read as a (group, C/group) grid, are written
    out column by column, so input channel ``i * (C/group) + j`` becomes top channel
    ``j * group + i``; a pure permutation (exact backward).

    ShuffleNet semantics: ``shuffle_channel_param.group`` > 0 divides C; the top is 4-D
    (num, channels, height, width), like the fork's Reshape.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        shape = self.bottom_shapes[0]
        if not 2 <= len(shape) <= 4:
            raise self.error(f"bottom shape {shape}: ShuffleChannel reads num/channels/height/width")
        self.group = int(self.param.shuffle_channel_param.group)
        channels = int(shape[1])
        if self.group <= 0:
            raise self.error(f"shuffle_channel_param.group is {self.group}; it must be greater than 0")
        if channels % self.group:
            raise self.error(f"channels ({channels}) must be a multiple of "
                             f"shuffle_channel_param.group ({self.group})")

    def forward(self, x: Tensor) -> list[Tensor]:
        n, c, h, w = _legacy_4d(x.shape)
        grid = x.reshape(n, self.group, c // self.group, h * w)
        return [grid.transpose(1, 2).reshape(n, c, h, w)]

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        return [_legacy_4d(bottom_shapes[0])]


def _depthwise_param(param: caffe_pb2.LayerParameter, channels: int) -> caffe_pb2.LayerParameter:
    """``param`` with ``num_output`` and ``group`` set to the bottom's channel count."""
    out = caffe_pb2.LayerParameter()
    out.CopyFrom(param)
    out.convolution_param.num_output = channels
    out.convolution_param.group = channels
    return out


@register_layer("ConvolutionDepthwise")
class ConvolutionDepthwise(Convolution):
    """A depthwise 2-D convolution: each channel filtered by its own kernel, weight (C, 1, kh, kw),
    bias (C,) when ``bias_term``; top channels = bottom channels.

    PR 5665 semantics: always depthwise, whatever ``num_output`` and ``group`` say (the fork
    reads neither; the prototxts using this spelling usually leave ``group`` out). Kernel,
    stride, pad, dilation and fillers come from ``convolution_param`` as for Convolution; the
    output size is Convolution's. One bottom, one top, 4-D.
    """

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: Sequence[Shape], *args, **kwargs):
        shape = tuple(bottom_shapes[0])
        super().__init__(_depthwise_param(param, int(shape[1]) if len(shape) > 1 else 1),
                         bottom_shapes, *args, **kwargs)
        self.param = param  # the layer's own text, as written
        if len(shape) != 4:
            raise self.error(f"bottom shape {shape}: ConvolutionDepthwise takes a 4-D "
                             "(num, channels, height, width) blob")
