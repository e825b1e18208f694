"""The forks' ``Upsample`` layer: SegNet's max-unpooling and YOLO's nearest-neighbour upsampling.

Two forks register a layer under the same type string ``Upsample`` with different meanings;
one class serves both and chooses by the number of bottoms:

* two bottoms (alexgkendall/caffe-segnet ``src/caffe/layers/upsample_layer.cpp``, copied
  unchanged by TimoSaemann/caffe-enet): bottom 1 is the MAX-pooling mask (the second top of a
  Pooling layer: for each pooled value the flat ``h * W + w`` index of its maximum inside its
  channel's input plane); every value is written at its index of a zero top;
* one bottom (eric612/MobileNet-YOLO ``upsample_layer.cpp``): every value is repeated into a
  ``scale x scale`` block.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..proto import caffe_pb2
from .base import TEST, Layer, Shape, register_layer

Tensor = torch.Tensor

# Fields only the two-bottom (SegNet) variant reads.
_UNPOOL_ONLY = ("scale_h", "scale_w", "pad_out_h", "pad_out_w", "upsample_h", "upsample_w")


@register_layer("Upsample", bottoms=(1, 2), tops=1)
class Upsample(Layer):
    """``Upsample``: SegNet's unpooling with a mask (two bottoms) or YOLO's nearest neighbour (one).

    Two bottoms, data (N, C, H, W) and mask (N, C, H, W): top (N, C, upsample_h, upsample_w),
    where the output size is ``upsample_h``/``upsample_w`` when both are set, else
    ``H * scale_h - pad_out_h`` by ``W * scale_w - pad_out_w`` (``scale_h``/``scale_w`` default
    to ``scale``, default 2). Caffe semantics (SegNet): the top is zero except at the mask's
    indices; where two values share an index the later one (in row-major order) wins; an
    index past the top's plane is a fatal error; the gradient of each value is the top
    gradient at its index, and the mask gets none. ``pad_out_*`` needs a scale of 2 and
    scales must be > 1.

    One bottom (N, C, H, W): top (N, C, H * scale, W * scale) with each value repeated in a
    scale x scale block; its gradient is the block's sum (MobileNet-YOLO). ``scale`` left unset
    is 1 there (the YOLO fork's default; our shared field's default 2 is SegNet's).
    Tests: tests/layers/test_segnet.py (fork-source formulas, OpenCV dnn, gradcheck).
    """

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: Sequence[Shape],
                 phase: int = TEST, where=None):
        super().__init__(param, bottom_shapes, phase, where)
        p = param.upsample_param
        for shape in self.bottom_shapes:
            if len(shape) != 4:
                raise self.error(f"bottoms must have 4 axes (num, channels, height, width), got {shape}")
        self.unpool = len(self.bottom_shapes) == 2
        if self.unpool:
            self._set_up_unpool(p)
            if self.bottom_shapes[1] != self.bottom_shapes[0]:
                raise self.error(f"the mask bottom {self.bottom_shapes[1]} must have the data "
                                 f"bottom's shape {self.bottom_shapes[0]}")
        else:
            given = [name for name in _UNPOOL_ONLY if p.HasField(name)]
            if given:
                raise self.error(f"{', '.join(given)} need the pooling mask as a second bottom; "
                                 "a one-bottom Upsample (the YOLO forks') reads only scale")
            self.scale = int(p.scale) if p.HasField("scale") else 1
            if self.scale < 1:
                raise self.error(f"scale must be at least 1, got {self.scale}")

    def _set_up_unpool(self, p: caffe_pb2.UpsampleParameter) -> None:
        """SegNet's LayerSetUp: exact size, or the deprecated scale(s) with pad_out."""
        exact = p.HasField("upsample_h") and p.HasField("upsample_w")
        if not (exact or (not p.HasField("scale") and p.HasField("scale_h") and p.HasField("scale_w"))
                or (not p.HasField("scale_h") and not p.HasField("scale_w"))):
            raise self.error("upsample_h and upsample_w are required, else (deprecated) scale "
                             "or scale_h and scale_w")
        self.size: tuple[int, int] | None = None
        if exact:
            self.size = (int(p.upsample_h), int(p.upsample_w))
            if min(self.size) <= 1:
                raise self.error(f"upsample_h and upsample_w must be > 1, got {self.size}")
            return
        self.scales = (int(p.scale_h), int(p.scale_w)) if p.HasField("scale_h") else (int(p.scale),) * 2
        if min(self.scales) <= 1:
            raise self.error(f"the upsampling scale must be > 1, got {self.scales}")
        self.pad_out = (int(p.pad_out_h), int(p.pad_out_w))
        for axis, pad, scale in zip("hw", self.pad_out, self.scales):
            if pad and scale != 2:
                raise self.error(f"pad_out_{axis} requires scale_{axis} == 2 (got {scale}); "
                                 "otherwise the output size is ill-defined")

    def out_size(self, height: int, width: int) -> tuple[int, int]:
        """The top's (height, width) for a bottom of ``height x width``."""
        if not self.unpool:
            return height * self.scale, width * self.scale
        if self.size is not None:
            return self.size
        return (height * self.scales[0] - self.pad_out[0], width * self.scales[1] - self.pad_out[1])

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        n, c, h, w = bottom_shapes[0]
        return [(n, c, *self.out_size(h, w))]

    def forward(self, x: Tensor, mask: Tensor | None = None) -> list[Tensor]:
        n, c, h, w = x.shape
        oh, ow = self.out_size(h, w)
        if mask is None:
            return [x.repeat_interleave(self.scale, dim=2).repeat_interleave(self.scale, dim=3)]
        if mask.shape != x.shape:
            raise self.error(f"the mask bottom {tuple(mask.shape)} must have the data bottom's "
                             f"shape {tuple(x.shape)}")
        index = mask.detach().reshape(n, c, h * w).to(torch.int64)
        if index.numel() and x.device.type != "meta":
            low, high = int(index.min()), int(index.max())
            if low < 0 or high >= oh * ow:
                raise self.error(f"upsample top index {high if high >= oh * ow else low} out of "
                                 f"range for a {oh}x{ow} top; check that the scale settings match "
                                 "the pooling layer that made the mask")
        top = x.new_zeros(n, c, oh * ow)
        top = top.scatter(2, index, x.reshape(n, c, h * w))
        return [top.reshape(n, c, oh, ow)]

    @classmethod
    def allow_force_backward(cls, bottom: int) -> bool:
        """The mask (bottom 1) gets no gradient (SegNet's Backward_cpu writes only bottom 0)."""
        return bottom == 0
