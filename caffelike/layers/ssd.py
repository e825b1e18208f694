"""SSD's layers (weiliu89/caffe branch ssd): PriorBox, Permute, Normalize.

Each follows the fork's ``src/caffe/layers/<name>_layer.cpp`` (CPU code). DetectionOutput is
in :mod:`.ssd_detection`, AnnotatedData in :mod:`.ssd_data`.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from ..proto import caffe_pb2
from .base import Layer, Shape, legacy_dim, register_layer

Tensor = torch.Tensor


@register_layer("PriorBox", bottoms=2, tops=1)
class PriorBox(Layer):
    """Default boxes of one feature map: top (1, 2, H*W*P*4), boxes then variances.

    Fork semantics (prior_box_layer.cpp): aspect ratios start at 1; each given ratio that is not
    within 1e-6 of one already kept is added, followed by its inverse when ``flip`` (the inverse
    is not de-duplicated). Per cell (row-major, h then w) and per min_size: the square
    min_size box, then the sqrt(min_size * max_size) square (when max sizes are given), then one
    box per ratio other than 1. The fork truncates ``min_size`` and ``max_size`` to integers
    (``int min_size_ = min_sizes_[s]``). Centres are ``(w + offset) * step``; step defaults to
    image size / feature size (bottom[1]'s size unless img_size/img_h/img_w); ``clip`` clamps the
    coordinates to [0, 1]; the second channel holds the 1 or 4 variances for every coordinate.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        p = self.param.prior_box_param
        if len(p.min_size) == 0:
            raise self.error("prior_box_param: must provide min_size")
        if any(s <= 0 for s in p.min_size):
            raise self.error("prior_box_param.min_size must be positive")
        self.min_sizes = [float(np.float32(s)) for s in p.min_size]
        ratios = [1.0]
        for ar in p.aspect_ratio:
            ar = float(np.float32(ar))
            if any(abs(ar - r) < 1e-6 for r in ratios):
                continue
            ratios.append(ar)
            if p.flip:
                ratios.append(float(np.float32(1.0 / ar)))
        self.aspect_ratios = ratios
        self.max_sizes = [float(np.float32(s)) for s in p.max_size]
        if self.max_sizes:
            if len(self.max_sizes) != len(self.min_sizes):
                raise self.error(f"prior_box_param: {len(self.max_sizes)} max_size for "
                                 f"{len(self.min_sizes)} min_size; expected as many")
            for lo, hi in zip(self.min_sizes, self.max_sizes):
                if not hi > lo:
                    raise self.error(f"prior_box_param: max_size {hi:g} must be greater than "
                                     f"min_size {lo:g}")
        self.num_priors = len(ratios) * len(self.min_sizes) + len(self.max_sizes)
        variances = [float(np.float32(v)) for v in p.variance]
        if len(variances) > 1 and len(variances) != 4:
            raise self.error(f"prior_box_param: {len(variances)} variance values; expected 1 or 4")
        if any(v <= 0 for v in variances):
            raise self.error("prior_box_param.variance must be positive")
        self.variances = variances or [0.1]
        self.img_h, self.img_w = self._pair(p, "img_size", "img_h", "img_w", int)
        self.step_h, self.step_w = self._pair(p, "step", "step_h", "step_w", float)
        self.offset = float(np.float32(p.offset))
        self.clip = bool(p.clip)

    def _pair(self, p, both: str, h: str, w: str, kind: type) -> tuple:
        """(h, w) from ``both`` or from ``h``/``w`` (not both ways); (0, 0) when unset."""
        if p.HasField(h) or p.HasField(w):
            if p.HasField(both):
                raise self.error(f"prior_box_param: either {both} or {h}/{w} should be "
                                 "specified; not both")
            values = (kind(getattr(p, h)), kind(getattr(p, w)))
        elif p.HasField(both):
            values = (kind(getattr(p, both)),) * 2
        else:
            return (kind(0), kind(0))
        if min(values) <= 0:
            raise self.error(f"prior_box_param: {h}/{w} ({both}) must be larger than 0")
        return tuple(float(np.float32(v)) if kind is float else v for v in values)

    def box_sizes(self) -> list[tuple[float, float]]:
        """(box width, box height) of the boxes of one cell, in the fork's order."""
        f32 = np.float32
        sizes: list[tuple[float, float]] = []
        for s, min_size in enumerate(self.min_sizes):
            m = int(min_size)
            sizes.append((float(m), float(m)))
            if self.max_sizes:
                side = math.sqrt(m * int(self.max_sizes[s]))
                sizes.append((float(f32(side)),) * 2)
            for ar in self.aspect_ratios:
                if abs(ar - 1.0) < 1e-6:
                    continue
                root = f32(np.sqrt(f32(ar)))
                sizes.append((float(f32(m * root)), float(f32(m / root))))
        return sizes

    def _boxes(self, layer_h: int, layer_w: int, img_h: int, img_w: int) -> np.ndarray:
        f32 = np.float32
        if self.step_w == 0 or self.step_h == 0:
            step_w, step_h = f32(f32(img_w) / f32(layer_w)), f32(f32(img_h) / f32(layer_h))
        else:
            step_w, step_h = f32(self.step_w), f32(self.step_h)
        cx = (np.arange(layer_w, dtype=f32) + f32(self.offset)) * step_w  # float, as the fork
        cy = (np.arange(layer_h, dtype=f32) + f32(self.offset)) * step_h
        sizes = self.box_sizes()
        bw = np.array([w for w, _ in sizes], dtype=np.float64)
        bh = np.array([h for _, h in sizes], dtype=np.float64)
        x = cx.astype(np.float64)[None, :, None]
        y = cy.astype(np.float64)[:, None, None]
        shape = (layer_h, layer_w, len(sizes))
        boxes = np.stack([np.broadcast_to((x - bw / 2.0) / img_w, shape),
                          np.broadcast_to((y - bh / 2.0) / img_h, shape),
                          np.broadcast_to((x + bw / 2.0) / img_w, shape),
                          np.broadcast_to((y + bh / 2.0) / img_h, shape)], axis=-1)
        boxes = boxes.astype(np.float32).reshape(-1)
        if self.clip:
            boxes = np.clip(boxes, 0.0, 1.0)
        variances = np.resize(np.asarray(self.variances, dtype=np.float32), boxes.shape)
        return np.stack([boxes, variances])[None]

    def forward(self, feature: Tensor, image: Tensor) -> list[Tensor]:
        layer_h, layer_w = legacy_dim(feature.shape, 2), legacy_dim(feature.shape, 3)
        size = layer_h * layer_w * self.num_priors * 4
        if feature.device.type == "meta":
            return [torch.empty((1, 2, size), device="meta")]
        if self.img_h == 0 or self.img_w == 0:
            img_h, img_w = legacy_dim(image.shape, 2), legacy_dim(image.shape, 3)
        else:
            img_h, img_w = self.img_h, self.img_w
        top = torch.from_numpy(self._boxes(layer_h, layer_w, img_h, img_w))
        return [top.to(device=feature.device, dtype=feature.dtype)]

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        shape = bottom_shapes[0]
        size = legacy_dim(shape, 2) * legacy_dim(shape, 3) * self.num_priors * 4
        if size <= 0:
            raise self.error(f"bottom shape {tuple(shape)} gives no prior boxes")
        return [(1, 2, size)]

    @classmethod
    def allow_force_backward(cls, bottom: int) -> bool:
        return False


@register_layer("Permute")
class Permute(Layer):
    """Reorders the axes: top axis i is bottom axis ``order[i]``.

    Fork semantics (permute_layer.cpp): the given orders (each below the bottom's axis count,
    no repeats) are followed by the axes not named, in increasing order; the backward scatters
    the top diff back (a pure permutation).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        num_axes = len(self.bottom_shapes[0])
        orders: list[int] = []
        for order in self.param.permute_param.order:
            if order >= num_axes:
                raise self.error(f"permute_param.order {order} should be less than the input "
                                 f"dimension {num_axes}")
            if order in orders:
                raise self.error(f"permute_param.order has duplicate orders ({order})")
            orders.append(int(order))
        self.order = tuple(orders + [i for i in range(num_axes) if i not in orders])

    def forward(self, x: Tensor) -> list[Tensor]:
        if self.order == tuple(range(x.dim())):
            return [x]
        return [x.permute(self.order).contiguous()]


@register_layer("Normalize")
class Normalize(Layer):
    """L2 normalisation with a learned scale (ParseNet / SSD conv4_3_norm).

    Fork semantics (normalize_layer.cpp): with ``across_spatial`` each sample is divided by
    ``sqrt(sum(x^2) + eps)`` over all its C*H*W values; otherwise each spatial position by
    ``sqrt(eps + sum_c x^2)`` over its channels. The result is multiplied by the scale blob:
    one value (shape ``()``) when ``channel_shared``, else one per channel (shape ``(C,)``);
    ``scale_filler`` fills it (default constant 1). The backward is the exact gradient of that
    (both for the bottom and the scale).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        shape = self.bottom_shapes[0]
        if len(shape) < 2:
            raise self.error(f"bottom shape {tuple(shape)}: number of axes of bottom blob must be >= 2")
        p = self.param.norm_param
        self.across_spatial = bool(p.across_spatial)
        self.channel_shared = bool(p.channel_shared)
        self.eps = float(np.float32(p.eps))
        channels = legacy_dim(shape, 1)
        filler = p.scale_filler if p.HasField("scale_filler") else \
            caffe_pb2.FillerParameter(type="constant", value=1.0)
        self.add_blob(() if self.channel_shared else (channels,), filler)

    def forward(self, x: Tensor) -> list[Tensor]:
        n, c = x.shape[0], legacy_dim(x.shape, 1)
        flat = x.reshape(n, c, -1)
        if self.across_spatial:
            norm = torch.sqrt((flat * flat).sum(dim=(1, 2), keepdim=True) + self.eps)
        else:
            norm = torch.sqrt((flat * flat).sum(dim=1, keepdim=True) + self.eps)
        scale = self.blobs[0].to(x.dtype)
        scale = scale.reshape(1, 1, 1) if self.channel_shared else scale.reshape(1, c, 1)
        return [(flat / norm * scale).reshape(x.shape)]
