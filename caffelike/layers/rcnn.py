"""Fast/Faster R-CNN and R-FCN layers (issue 16): ``ROIPooling`` and ``SmoothL1Loss`` of
rbgirshick/caffe-fast-rcnn (branch faster-rcnn, ``roi_pooling_layer.cu``,
``smooth_L1_loss_layer.cu``) and ``PSROIPooling`` of daijifeng001/caffe-rfcn
(``psroi_pooling_layer.cu``).

A ROI is a row ``(batch_index, x1, y1, x2, y2)`` of the second bottom, in input-image pixels;
``spatial_scale`` maps it onto the feature map. The ROI bottom gets no gradient (the forks
write none).
"""
from __future__ import annotations

from typing import Sequence

import torch

from .base import Layer, Shape, legacy_dim, register_layer
from .loss import LossLayer

Tensor = torch.Tensor


def round_half_away(x: Tensor) -> Tensor:
    """C's ``round()``: halves away from zero (torch.round rounds them to even)."""
    x = x.to(torch.float64)
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def _check_rois(layer: Layer) -> tuple[Shape, Shape]:
    data, rois = tuple(layer.bottom_shapes[0]), tuple(layer.bottom_shapes[1])
    if len(data) != 4:
        raise layer.error(f"bottom 0 shape {data}: needs a 4-axis feature map (N, C, H, W)")
    if legacy_dim(rois, 1) * legacy_dim(rois, 2) * legacy_dim(rois, 3) != 5:
        raise layer.error(f"bottom 1 shape {rois}: needs one row (batch_index, x1, y1, x2, y2) per ROI")
    return data, rois


def _roi_rows(layer: Layer, rois: Tensor, batch: int) -> Tensor:
    """The ROIs as an (R, 5) tensor, with the fork's check of the batch index."""
    rows = rois.detach().reshape(rois.shape[0], 5)
    index = rows[:, 0].to(torch.int64)
    if len(index) and (int(index.min()) < 0 or int(index.max()) >= batch):
        raise layer.error(f"ROI batch index {index.tolist()} out of range for a batch of {batch}")
    return rows


# -- ROIPooling --------------------------------------------------------------------------------
def roi_pool_bins(rows: Tensor, spatial_scale: float, pooled: tuple[int, int],
                  size: tuple[int, int]) -> dict[str, Tensor]:
    """caffe-fast-rcnn's integer bins of each ROI: ``hstart/hend`` (R, PH), ``wstart/wend`` (R, PW),
    and ``backprop`` (R,): whether the ROI's bottom gets gradient.

    ROI corners are ``round(coord * spatial_scale)`` (product in the blob's type, C rounding);
    the ROI spans ``end - start + 1`` cells (at least 1); bin p covers
    ``[floor(p * size / pooled), ceil((p + 1) * size / pooled))`` with ``size / pooled`` in the
    blob's type, offset by the ROI start and clipped to the map. The fork's backward only
    reaches cells with ``start <= h <= end``, so a ROI with ``end < start`` gets none.
    """
    scale = torch.tensor(spatial_scale, dtype=torch.float32).to(rows.dtype)
    start_w, start_h, end_w, end_h = (round_half_away(rows[:, i] * scale).to(torch.int64) for i in (1, 2, 3, 4))
    out: dict[str, Tensor] = {"backprop": (end_w >= start_w) & (end_h >= start_h)}
    for axis, start, end, n_bins, limit in (("h", start_h, end_h, pooled[0], size[0]),
                                            ("w", start_w, end_w, pooled[1], size[1])):
        extent = torch.clamp(end - start + 1, min=1).to(rows.dtype)
        bin_size = extent / torch.tensor(float(n_bins), dtype=rows.dtype)
        p = torch.arange(n_bins, dtype=rows.dtype)
        lo = torch.floor(p[None, :] * bin_size[:, None]).to(torch.int64) + start[:, None]
        hi = torch.ceil((p[None, :] + 1) * bin_size[:, None]).to(torch.int64) + start[:, None]
        out[f"{axis}start"] = lo.clamp(0, limit)
        out[f"{axis}end"] = hi.clamp(0, limit)
    return out


def _bin_taps(start: Tensor, end: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """The cells ``start + k`` of each bin ``[start, end)``, padded to the widest bin (last axis),
    clamped into ``[0, size)`` for indexing, and whether each is inside its bin."""
    widest = max(1, int((end - start).max())) if start.numel() else 1
    taps = start[..., None] + torch.arange(widest)
    return taps.clamp(0, size - 1), taps < end[..., None]


def _chunks(n: int, per_item: int, budget: int = 1 << 24) -> list[slice]:
    """Slices of ``range(n)`` holding about ``budget`` gathered values each."""
    step = max(1, budget // max(1, per_item))
    return [slice(i, min(n, i + step)) for i in range(0, n, step)]


class _BinMax(torch.autograd.Function):
    """Max of each bin's cells (R, PH, PW, taps) of ``pixels`` (cells, C): top (R, PH, PW, C), 0
    for an empty bin. Backward: each top's gradient to its argmax (the first maximum in scan
    order, as the fork's '>'), none from empty bins or from ROIs whose ``backprop`` is false."""

    @staticmethod
    def forward(ctx, pixels: Tensor, cells: Tensor, inside: Tensor, backprop: Tensor) -> Tensor:
        n_rois, ph, pw, taps = cells.shape
        channels = pixels.shape[1]
        top = pixels.new_zeros(n_rois, ph, pw, channels)
        argmax = torch.full((n_rois, ph, pw, channels), -1, dtype=torch.int64, device=pixels.device)
        low = torch.full((), float("-inf"), dtype=pixels.dtype, device=pixels.device)
        for part in _chunks(n_rois, ph * pw * taps * channels):
            values = torch.where(inside[part, ..., None], pixels[cells[part]], low)  # (r, PH, PW, taps, C)
            best, tap = values.max(dim=3)
            cell = cells[part, ..., None].expand(-1, -1, -1, -1, channels).gather(3, tap[:, :, :, None]).squeeze(3)
            filled = inside[part].any(dim=3, keepdim=True)
            top[part] = torch.where(filled, best, torch.zeros_like(best))
            argmax[part] = torch.where(filled & backprop[part, None, None, None],
                                       cell * channels + torch.arange(channels, device=pixels.device), -1)
        ctx.save_for_backward(argmax)
        ctx.pixels_shape = tuple(pixels.shape)
        return top

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:
        (argmax,) = ctx.saved_tensors
        index, grad = argmax.reshape(-1), grad.reshape(-1)
        keep = index >= 0
        out = grad.new_zeros(ctx.pixels_shape[0] * ctx.pixels_shape[1])
        out.index_add_(0, index[keep], grad[keep])
        return out.reshape(ctx.pixels_shape), None, None, None


@register_layer("ROIPooling", bottoms=2)
class ROIPooling(Layer):
    """Max pooling of each ROI into ``pooled_h x pooled_w`` bins: top (R, C, pooled_h, pooled_w).

    ``roi_pooling_param { pooled_h pooled_w spatial_scale }``. Fork semantics (see
    :func:`roi_pool_bins`): integer ROI corners by C rounding, floor/ceil bin edges, an empty
    bin gives 0; backward sends each top's gradient to its bin's first maximum (Caffe's argmax),
    none for a ROI with ``x2 < x1`` or ``y2 < y1`` after scaling. Tests: ``tests/layers/test_rcnn.py``
    (OpenCV dnn live, hand cases from roi_pooling_layer.cpp, gradcheck).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        p = self.param.roi_pooling_param
        if p.pooled_h <= 0 or p.pooled_w <= 0:
            raise self.error(f"pooled_h {p.pooled_h} and pooled_w {p.pooled_w}: both must be > 0")
        self.pooled = (int(p.pooled_h), int(p.pooled_w))
        self.spatial_scale = float(p.spatial_scale)
        _check_rois(self)

    def forward(self, x: Tensor, rois: Tensor) -> list[Tensor]:
        n, channels, height, width = (int(d) for d in x.shape)
        rows = _roi_rows(self, rois, n).cpu()
        bins = roi_pool_bins(rows, self.spatial_scale, self.pooled, (height, width))
        (ph, pw), n_rois = self.pooled, len(rows)
        h_taps, h_in = _bin_taps(bins["hstart"], bins["hend"], height)  # (R, PH, KH)
        w_taps, w_in = _bin_taps(bins["wstart"], bins["wend"], width)  # (R, PW, KW)
        batch = rows[:, 0].to(torch.int64)[:, None, None, None, None]
        # (R, PH, PW, KH*KW): each bin's cells in the fork's (h, w) scan order
        cells = ((batch * height + h_taps[:, :, None, :, None]) * width + w_taps[:, None, :, None, :])
        inside = h_in[:, :, None, :, None] & w_in[:, None, :, None, :]
        taps = cells.shape[3] * cells.shape[4]
        cells, inside = cells.reshape(n_rois, ph, pw, taps), inside.reshape(n_rois, ph, pw, taps)
        pixels = x.permute(0, 2, 3, 1).reshape(n * height * width, channels)
        top = _BinMax.apply(pixels, cells.to(x.device), inside.to(x.device), bins["backprop"].to(x.device))
        return [top.permute(0, 3, 1, 2)]

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        return [(int(bottom_shapes[1][0]), int(bottom_shapes[0][1])) + self.pooled]


# -- PSROIPooling ------------------------------------------------------------------------------
def psroi_bins(rows: Tensor, spatial_scale: float, group: int, size: tuple[int, int]) -> dict[str, Tensor]:
    """caffe-rfcn's bins of each ROI: ``hstart/hend`` (R, G), ``wstart/wend`` (R, G), float32.

    ROI edges are ``round(x1) * scale`` and ``(round(x2) + 1) * scale``; the size is at least
    0.1; bin p covers ``[floor(p * bin + start), ceil((p + 1) * bin + start))``, clipped to the
    map. (The fork's CUDA build may fuse ``p * bin + start`` into one FMA; we round twice.)
    """
    f32 = torch.float32
    scale = torch.tensor(spatial_scale, dtype=f32)
    corners = round_half_away(rows[:, 1:5].to(f32)).to(f32)
    start = corners[:, :2] * scale
    end = (corners[:, 2:] + 1) * scale
    extent = torch.where((end - start).to(torch.float64) > 0.1, end - start, torch.tensor(0.1, dtype=f32))
    bin_size = extent / torch.tensor(float(group), dtype=f32)
    p = torch.arange(group, dtype=f32)
    out: dict[str, Tensor] = {}
    for axis, i, limit in (("w", 0, size[1]), ("h", 1, size[0])):
        lo = torch.floor(p[None, :] * bin_size[:, i, None] + start[:, i, None]).to(torch.int64)
        hi = torch.ceil((p[None, :] + 1) * bin_size[:, i, None] + start[:, i, None]).to(torch.int64)
        out[f"{axis}start"] = lo.clamp(0, limit)
        out[f"{axis}end"] = hi.clamp(0, limit)
    return out


@register_layer("PSROIPooling", bottoms=2)
class PSROIPooling(Layer):
    """Position-sensitive ROI average pooling (R-FCN): top (R, output_dim, group_size, group_size).

    ``psroi_pooling_param { spatial_scale output_dim group_size }``; the bottom has
    ``output_dim * group_size^2`` channels and bin (i, j) of output channel d averages channel
    ``(d * group_size + i) * group_size + j`` over the bin (see :func:`psroi_bins`); an empty
    bin gives 0. Backward spreads each gradient evenly over its bin (exact, by autograd).
    Tests: ``tests/layers/test_rcnn.py``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        p = self.param.psroi_pooling_param
        for field in ("spatial_scale", "output_dim", "group_size"):
            if not p.HasField(field):
                raise self.error(f"psroi_pooling_param.{field} is required (the fork declares it required)")
        if p.output_dim <= 0 or p.group_size <= 0:
            raise self.error(f"output_dim {p.output_dim} and group_size {p.group_size}: both must be > 0")
        self.output_dim, self.group = int(p.output_dim), int(p.group_size)
        self.spatial_scale = float(p.spatial_scale)
        data, _ = _check_rois(self)
        if data[1] != self.output_dim * self.group ** 2:
            raise self.error(f"bottom 0 has {data[1]} channels; output_dim * group_size^2 = "
                             f"{self.output_dim * self.group ** 2} expected")

    def forward(self, x: Tensor, rois: Tensor) -> list[Tensor]:
        n, channels, height, width = (int(d) for d in x.shape)
        rows = _roi_rows(self, rois, n).cpu()
        g, d, n_rois = self.group, self.output_dim, len(rows)
        bins = psroi_bins(rows, self.spatial_scale, g, (height, width))
        h_taps, h_in = _bin_taps(bins["hstart"], bins["hend"], height)  # (R, G, KH)
        w_taps, w_in = _bin_taps(bins["wstart"], bins["wend"], width)  # (R, G, KW)
        ar = torch.arange(g)
        channel = (torch.arange(d)[:, None, None] * g + ar[None, :, None]) * g + ar[None, None, :]  # (D, G, G)
        batch = rows[:, 0].to(torch.int64)[:, None, None, None, None, None]
        # (R, D, G, KH, G, KW): flat indices of bin (i, j)'s cells in its channel
        cells = (((batch * channels + channel[None, :, :, None, :, None]) * height
                  + h_taps[:, None, :, :, None, None]) * width + w_taps[:, None, None, None, :, :])
        inside = h_in[:, None, :, :, None, None] & w_in[:, None, None, None, :, :]
        flat = x.reshape(-1)
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        sums = [torch.where(inside[part].to(x.device), flat[cells[part].to(x.device)], zero).sum(dim=(3, 5))
                for part in _chunks(n_rois, cells[0].numel())]
        total = torch.cat(sums) if sums else x.new_zeros(0, d, g, g)
        area = ((bins["hend"] - bins["hstart"]).clamp(min=0)[:, :, None]
                * (bins["wend"] - bins["wstart"]).clamp(min=0)[:, None, :])[:, None].to(x)
        return [torch.where(area > 0, total / area.clamp(min=1), zero)]

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        return [(int(bottom_shapes[1][0]), self.output_dim, self.group, self.group)]


# -- SmoothL1Loss ------------------------------------------------------------------------------
@register_layer("SmoothL1Loss", bottoms=(2, 4), loss=True)
class SmoothL1Loss(LossLayer):
    """Fast R-CNN's box regression loss: ``sum(w_out * f(w_in * (a - b))) / N``.

    ``f(x) = 0.5 * (sigma * x)^2`` where ``|x| < 1 / sigma^2``, else ``|x| - 0.5 / sigma^2``
    (``smooth_l1_loss_param { sigma }``, default 1); bottoms: prediction, target, and optionally
    inside and outside weights (both or neither); N is bottom 0's first axis. Fork semantics:
    gradients go to the prediction and the target (``AllowForceBackward`` is true for every
    bottom) but never to the weights. Tests: ``tests/layers/test_rcnn.py`` (hand cases, gradcheck).
    """

    @classmethod
    def allow_force_backward(cls, bottom: int) -> bool:
        return True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        shapes = self.bottom_shapes
        if len(shapes) == 3:
            raise self.error("3 bottoms: with weights, give both inside and outside weights (4 bottoms)")
        for i, other in enumerate(shapes[1:], start=1):
            if any(legacy_dim(shapes[0], a) != legacy_dim(other, a) for a in (1, 2, 3)):
                raise self.error(f"bottom {i} shape {tuple(other)} does not match bottom 0 {tuple(shapes[0])} "
                                 "in channels, height and width")
        sigma = torch.tensor(self.param.smooth_l1_loss_param.sigma, dtype=torch.float32)
        self.sigma2 = float(sigma * sigma)

    def forward(self, pred: Tensor, target: Tensor, *weights: Tensor) -> list[Tensor]:
        diff = pred - target
        if weights:
            diff = weights[0].detach() * diff
        small = diff.abs() < 1.0 / self.sigma2
        errors = torch.where(small, 0.5 * diff * diff * self.sigma2, diff.abs() - 0.5 / self.sigma2)
        if weights:
            errors = weights[1].detach() * errors
        return [errors.sum() / legacy_dim(pred.shape, 0)]
