"""Fast/Faster R-CNN and R-FCN layers (issue 16): ``ROIPooling`` and ``SmoothL1Loss`` of
rbgirshick/caffe-fast-rcnn (branch faster-rcnn, ``roi_pooling_layer.cu``,
``smooth_L1_loss_layer.cu``) and ``PSROIPooling`` of daijifeng001/caffe-rfcn
(``psroi_pooling_layer.cu``).

A ROI is a row ``(batch_index, x1, y1, x2, y2)`` of the second bottom, in input-image pixels;
``spatial_scale`` maps it onto the feature map. The ROI bottom gets no gradient (the forks
write none).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from .base import Layer, Shape, register_layer
from .loss import LossLayer

Tensor = torch.Tensor


def round_half_away(x: Tensor) -> Tensor:
    """C's ``round()``: halves away from zero (torch.round rounds them to even)."""
    x = x.to(torch.float64)
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def _legacy(shape: Sequence[int], axis: int) -> int:
    return int(shape[axis]) if axis < len(shape) else 1


def _check_rois(layer: Layer) -> tuple[Shape, Shape]:
    data, rois = tuple(layer.bottom_shapes[0]), tuple(layer.bottom_shapes[1])
    if len(data) != 4:
        raise layer.error(f"bottom 0 shape {data}: needs a 4-axis feature map (N, C, H, W)")
    if _legacy(rois, 1) * _legacy(rois, 2) * _legacy(rois, 3) != 5:
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


def _masked_max(values: Tensor, mask: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """Max and first argmax of ``values`` along ``dim`` over the positions where ``mask`` holds."""
    masked = torch.where(mask, values, torch.full((), float("-inf"), dtype=values.dtype))
    index = masked.argmax(dim=dim, keepdim=True)
    return masked.gather(dim, index).squeeze(dim), index.squeeze(dim)


class _ROIPoolFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, bins: dict[str, Tensor], batch_index: Tensor) -> Tensor:
        n, channels, height, width = x.shape
        n_rois, pooled_h, pooled_w = len(batch_index), bins["hstart"].shape[1], bins["wstart"].shape[1]
        out = x.new_zeros(n_rois, channels, pooled_h, pooled_w)
        argmax = torch.full((n_rois, channels, pooled_h, pooled_w), -1, dtype=torch.int64)
        hs, he, ws, we = (bins[k].tolist() for k in ("hstart", "hend", "wstart", "wend"))
        for r, b in enumerate(batch_index.tolist()):
            h_lo, h_hi, w_lo, w_hi = min(hs[r]), max(he[r]), min(ws[r]), max(we[r])
            if h_hi <= h_lo or w_hi <= w_lo:
                continue  # every bin empty: zeros, no argmax
            crop = x[b, :, h_lo:h_hi, w_lo:w_hi]
            rows = torch.arange(h_lo, h_hi)
            cols = torch.arange(w_lo, w_hi)
            row_mask = (rows[None, :] >= bins["hstart"][r, :, None]) & (rows[None, :] < bins["hend"][r, :, None])
            col_mask = (cols[None, :] >= bins["wstart"][r, :, None]) & (cols[None, :] < bins["wend"][r, :, None])
            # max over each column bin (C, rows, PW), then over each row bin (C, PH, PW);
            # first maximum in (h, w) scan order, as the fork's strict '>'
            col_max, col_arg = _masked_max(crop[:, :, None, :], col_mask.to(x.device)[None, None], dim=3)
            best, row_arg = _masked_max(col_max[:, None, :, :], row_mask.to(x.device)[None, :, :, None], dim=2)
            best_col = col_arg.gather(1, row_arg)  # (C, PH, PW) column offsets of the winners
            empty = ~(row_mask.any(1)[:, None] & col_mask.any(1)[None, :]).to(x.device)
            out[r] = torch.where(empty, torch.zeros((), dtype=x.dtype, device=x.device), best)
            index = (row_arg + h_lo) * width + best_col + w_lo
            argmax[r] = torch.where(empty, torch.full((), -1, device=x.device), index).cpu()
        ctx.save_for_backward(argmax, batch_index, bins["backprop"])
        ctx.shape = tuple(x.shape)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None]:
        argmax, batch_index, backprop = ctx.saved_tensors
        n, channels, height, width = ctx.shape
        plane = (batch_index[:, None] * channels + torch.arange(channels)[None, :]) * (height * width)
        flat = plane[:, :, None, None] + argmax
        keep = (argmax >= 0) & backprop[:, None, None, None]
        grad_x = grad.new_zeros(n * channels * height * width)
        grad_x.index_add_(0, flat[keep].to(grad.device), grad[keep.to(grad.device)])
        return grad_x.reshape(ctx.shape), None, None


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
        rows = _roi_rows(self, rois, int(x.shape[0])).cpu()
        bins = roi_pool_bins(rows, self.spatial_scale, self.pooled, (int(x.shape[2]), int(x.shape[3])))
        return [_ROIPoolFn.apply(x, bins, rows[:, 0].to(torch.int64))]

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
        rows = _roi_rows(self, rois, int(x.shape[0])).cpu()
        g, d = self.group, self.output_dim
        bins = psroi_bins(rows, self.spatial_scale, g, (int(x.shape[2]), int(x.shape[3])))
        tops = []
        for r, b in enumerate(rows[:, 0].to(torch.int64).tolist()):
            hs, he, ws, we = (bins[k][r] for k in ("hstart", "hend", "wstart", "wend"))
            h_lo, h_hi, w_lo, w_hi = int(hs.min()), int(he.max()), int(ws.min()), int(we.max())
            if h_hi <= h_lo or w_hi <= w_lo:
                tops.append(x.new_zeros(d, g, g))
                continue
            rows_, cols = torch.arange(h_lo, h_hi), torch.arange(w_lo, w_hi)
            row_mask = ((rows_[None, :] >= hs[:, None]) & (rows_[None, :] < he[:, None])).to(x)
            col_mask = ((cols[None, :] >= ws[:, None]) & (cols[None, :] < we[:, None])).to(x)
            crop = x[b, :, h_lo:h_hi, w_lo:w_hi].reshape(d, g, g, h_hi - h_lo, w_hi - w_lo)
            sums = torch.einsum("dijhw,ih,jw->dij", crop, row_mask, col_mask)
            area = ((he - hs).clamp(min=0)[:, None] * (we - ws).clamp(min=0)[None, :]).to(x)
            tops.append(torch.where(area > 0, sums / area.clamp(min=1), torch.zeros((), dtype=x.dtype, device=x.device)))
        if not tops:
            return [x.new_zeros(0, d, g, g)]
        return [torch.stack(tops)]

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
            if any(_legacy(shapes[0], a) != _legacy(other, a) for a in (1, 2, 3)):
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
        return [errors.sum() / _legacy(pred.shape, 0)]
