"""YOLOv2 layers of the Caffe YOLO forks (issue 16): Reorg and Region.

* ``Reorg``: eric612/MobileNet-YOLO ``src/caffe/layers/reorg_layer.cpp`` and its
  ``reorg_cpu`` (include/caffe/layers/reorg_layer.hpp), which is darknet's reorg, quirk included;
  OpenCV dnn's Reorg computes the same order (with stride 2 always: its Caffe importer does not
  read ``reorg_param.stride``).
* ``Region``: openvinotoolkit/training_toolbox_caffe (commit 2137b63)
  ``src/caffe/layers/region_layer.cpp``, darknet's forward_region_layer for inference.

Neither fork passes a gradient back: their backward writes zeros (Reorg reads the never-filled
``diff_`` blob instead of the top's diff) or nothing (Region); the layers here do the same.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .base import Layer, Shape, register_layer
from .caffe_long import _refuse_in_place

Tensor = torch.Tensor


class _ZeroBackward(torch.autograd.Function):
    """Identity forward whose backward hands the bottom a zero gradient (the forks' backward)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, dy: Tensor) -> Tensor:
        return torch.zeros_like(dy)


def reorg_index(channels: int, height: int, width: int, stride: int, reverse: bool) -> torch.Tensor:
    """For each element of the top (flattened per sample), the flat bottom index it copies.

    darknet's reorg walks the (c, h, w) grid of the *bottom's* shape; for each position it pairs
    the flat index ``b = (k*h + j)*w + i`` with ``t = ((k % oc) * h*s + j*s + o // s) * w*s +
    i*s + o % s`` where ``oc = c / s^2`` and ``o = k // oc``. The fork's forward (reverse false)
    writes ``top[b] = bottom[t]``; with ``reverse`` it writes ``top[t] = bottom[b]``.
    """
    out_c = channels // (stride * stride)
    k = torch.arange(channels).view(-1, 1, 1)
    j = torch.arange(height).view(1, -1, 1)
    i = torch.arange(width).view(1, 1, -1)
    offset = k // out_c
    w2 = i * stride + offset % stride
    h2 = j * stride + offset // stride
    t = (w2 + width * stride * (h2 + height * stride * (k % out_c))).reshape(-1)
    b = torch.arange(channels * height * width)
    index = torch.empty_like(b)
    if reverse:
        index[t] = b
    else:
        index[b] = t
    return index


@register_layer("Reorg")
class Reorg(Layer):
    """YOLOv2's passthrough: (N, C, H, W) -> (N, C*s*s, H/s, W/s), or the reverse with ``reverse``.

    MobileNet-YOLO semantics: ``reorg_param.stride`` is required; the element order is darknet's
    (see :func:`reorg_index`): the bottom's memory is read as if it were (C/s^2, H*s, W*s), which
    is not a space-to-depth of the bottom. Sizes use C integer division (H, W multiples of s are
    expected); the backward gives the bottom a zero gradient, as the fork's does; the layer
    cannot run in place.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _refuse_in_place(self)
        p = self.param.reorg_param
        if not p.HasField("stride"):
            raise self.error("Reorg needs reorg_param.stride")
        shape = self.bottom_shapes[0]
        if len(shape) != 4:
            raise self.error(f"bottom shape {tuple(shape)}: Reorg takes a 4-D blob")
        self.stride, self.reverse = int(p.stride), bool(p.reverse)
        n, c, h, w = (int(d) for d in shape)
        s = self.stride
        if s <= 0 or c % (s * s) or (not self.reverse and (h % s or w % s)):
            raise self.error(f"bottom shape {tuple(shape)} does not fit reorg_param.stride {s}: channels "
                             "must be a multiple of stride^2 (and height, width multiples of stride)")
        self.top_chw = (c // (s * s), h * s, w * s) if self.reverse else (c * s * s, h // s, w // s)
        # the index always walks the grid of the bottom's own shape
        self.register_buffer("index", reorg_index(c, h, w, s, self.reverse), persistent=False)

    def forward(self, x: Tensor) -> list[Tensor]:
        flat = _ZeroBackward.apply(x).reshape(x.shape[0], -1)
        return [flat[:, self.index.to(x.device)].reshape((x.shape[0],) + self.top_chw)]

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        return [(int(bottom_shapes[0][0]),) + self.top_chw]


@register_layer("Region")
class Region(Layer):
    """YOLOv2's region activations; the top is shaped like the bottom (N, num*(coords+1+classes), H, W).

    training_toolbox_caffe semantics (darknet's layout: for each of the ``num`` anchors a block of
    coords + 1 + classes channels): x and y (the block's channels 0 and 1) and the objectness
    (channel ``coords``) go through the logistic function, the class scores (channels after it)
    through a softmax over the classes at each position, the other box channels (w, h) are copied
    unchanged. No box decoding, thresholding or NMS (the user does that on the top). No backward
    (zero gradient), as in the fork.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        p = self.param.region_param
        self.coords, self.classes, self.num = int(p.coords), int(p.classes), int(p.num)
        shape = tuple(self.bottom_shapes[0])
        if self.coords < 2 or self.classes < 0 or self.num <= 0:
            raise self.error(f"region_param coords {self.coords}, classes {self.classes}, num "
                             f"{self.num}: expected coords >= 2, classes >= 0, num >= 1")
        entries = self.coords + 1 + self.classes
        if len(shape) != 4 or shape[1] != self.num * entries:
            raise self.error(f"bottom shape {shape}: expected 4-D with num * (coords + 1 + classes) = "
                             f"{self.num} * {entries} = {self.num * entries} channels")

    def forward(self, x: Tensor) -> list[Tensor]:
        n, _, h, w = x.shape
        blocks = _ZeroBackward.apply(x).reshape(n, self.num, self.coords + 1 + self.classes, h, w)
        c = self.coords
        parts = [torch.sigmoid(blocks[:, :, :2]), blocks[:, :, 2:c], torch.sigmoid(blocks[:, :, c:c + 1])]
        if self.classes:
            parts.append(torch.softmax(blocks[:, :, c + 1:], dim=2))
        return [torch.cat(parts, dim=2).reshape(x.shape)]

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        return [tuple(bottom_shapes[0])]
