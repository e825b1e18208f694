"""ParseNet's layers (issue 16), weiliu89/caffe branch fcn: ``UnPooling``
(``unpooling_layer.cpp``), ``ParseOutput`` (``parse_output_layer.cpp``) and ``ParseEvaluate``
(``parse_evaluate_layer.cpp``). Its pooling bins are in :mod:`.pool_bins`, its
``bilinear_upsampling`` filler in :mod:`caffelike.fillers`.

UnPooling spreads every input cell (h, w) over the output window that starts at
``(h*stride - pad, w*stride - pad)`` and spans ``kernel`` cells (clipped to the output). Each
axis acts on its own, so the layer is ``A_h @ x @ A_w^T`` with one small matrix per axis.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import torch

from ..proto import caffe_pb2
from .base import TEST, Layer, Shape, register_layer

Tensor = torch.Tensor
UnPool = caffe_pb2.UnPoolingParameter


# -- UnPooling ---------------------------------------------------------------------------------
def _given(layer: Layer, p: caffe_pb2.UnPoolingParameter, name: str, pair: str) -> None:
    """The fork's checks that ``out_<name>`` and ``out_<pair>_h``/``_w`` are not mixed."""
    one = p.HasField(f"out_{name}")
    h, w = p.HasField(f"out_{pair}_h"), p.HasField(f"out_{pair}_w")
    if name == "kernel_size":
        if one == (h and w):
            raise layer.error("unpooling_param needs out_kernel_size, or both out_kernel_h and "
                              "out_kernel_w (not both forms)")
    elif not ((not one and h and w) or (not h and not w)):
        raise layer.error(f"unpooling_param needs out_{name}, or both out_{pair}_h and out_{pair}_w")


def unpool_geometry(layer: Layer, p: caffe_pb2.UnPoolingParameter, shapes: Sequence[Shape]
                    ) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """(kernel, stride, pad), each (h, w), as the fork's UnPooling sets them up.

    With one bottom they are the ``out_*`` fields. With two, the second bottom's size S and the
    first's s give per axis kernel = stride = ceil(S / s) (stride 1 when that equals S) and
    pad = floor(((s - 1) * stride + kernel - S) / 2); the ``out_kernel*`` fields must still be
    given (any value). A non-zero pad must be smaller than the kernel.
    """
    for name, pair in (("kernel_size", "kernel"), ("pad", "pad"), ("stride", "stride")):
        _given(layer, p, name, pair)
    if len(shapes) == 1:
        kernel = (p.out_kernel_size,) * 2 if p.HasField("out_kernel_size") else (p.out_kernel_h, p.out_kernel_w)
        if min(kernel) <= 0:
            raise layer.error(f"out kernel must be > 0, got {kernel}")
        stride = (p.out_stride_h, p.out_stride_w) if p.HasField("out_stride_h") else (p.out_stride,) * 2
        pad = (p.out_pad_h, p.out_pad_w) if p.HasField("out_pad_h") else (p.out_pad,) * 2
    else:
        k, s, q = [], [], []
        for small, big in zip(shapes[0][2:4], shapes[1][2:4]):
            k.append(-(-big // small))
            s.append(1 if k[-1] == big else k[-1])
            q.append(((small - 1) * s[-1] + k[-1] - big) // 2)
        kernel, stride, pad = (k[0], k[1]), (s[0], s[1]), (q[0], q[1])
    if (pad[0] or pad[1]) and (pad[0] >= kernel[0] or pad[1] >= kernel[1]):
        raise layer.error(f"out pad {pad} must be smaller than the out kernel {kernel}")
    return kernel, stride, pad


@lru_cache(maxsize=64)
def unpool_matrix(method: int, size: int, kernel: int, stride: int, pad: int) -> Tensor:
    """The (out, size) float64 matrix of one axis: out = (size - 1) * stride - 2 * pad + kernel.

    FIXED puts cell i at the window's middle ``trunc((start + end - 1) / 2)`` clamped to the
    output (a later cell overwrites an earlier one). REP gives every output cell the input
    cells whose clipped windows cover it, divided by their number; DIV further divides each
    input cell by its window length (clipped at ``out + pad`` only, as the fork counts it).
    The 2-D layer is the product of both axes' matrices (the fork's counts are per-axis products).
    Cached: callers must not modify the result.
    """
    out = (size - 1) * stride - 2 * pad + kernel
    m = torch.zeros(max(out, 0), size, dtype=torch.float64)
    if out <= 0:
        return m
    if method == UnPool.FIXED:
        for i in range(size):
            start = i * stride - pad
            total = 2 * start + kernel - 1
            mid = min(max(int(total / 2), 0), out - 1)  # C integer division truncates
            m[mid].zero_()
            m[mid, i] = 1.0
        return m
    for i in range(size):
        start = i * stride - pad
        end = min(start + kernel, out + pad)
        m[max(start, 0):min(end, out), i] = 1.0 / (end - start) if method == UnPool.DIV else 1.0
    covered = (m != 0).sum(dim=1, keepdim=True).clamp_min(1)
    return m / covered


@register_layer("UnPooling", bottoms=(1, 2))
class UnPooling(Layer):
    """ParseNet's UnPooling of bottom 0, FIXED / DIV / REP (weiliu89/caffe branch fcn).

    Top (N, C, (H-1)*stride - 2*pad + kernel, likewise W). A second bottom only lends its
    size: kernel and stride become ceil(its size / bottom 0's), so a 1x1 map is repeated over
    it (ParseNet's global context feature). Backward is the transpose (the fork's).
    """

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: Sequence[Shape],
                 phase: int = TEST, where=None):
        super().__init__(param, bottom_shapes, phase, where)
        for i, shape in enumerate(self.bottom_shapes):
            if len(shape) != 4:
                raise self.error(f"bottom {i} shape {shape}: UnPooling needs 4-axis (N, C, H, W) bottoms")
        self.method = int(param.unpooling_param.unpool)
        self.top_shapes(self.bottom_shapes)

    def _matrices(self, shapes: Sequence[Shape]) -> tuple[Tensor, Tensor]:
        kernel, stride, pad = unpool_geometry(self, self.param.unpooling_param, shapes)
        h, w = shapes[0][2], shapes[0][3]
        return (unpool_matrix(self.method, h, kernel[0], stride[0], pad[0]),
                unpool_matrix(self.method, w, kernel[1], stride[1], pad[1]))

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        mh, mw = self._matrices([tuple(s) for s in bottom_shapes])
        if mh.shape[0] <= 0 or mw.shape[0] <= 0:
            raise self.error(f"unpooling {tuple(bottom_shapes[0])} gives an empty output")
        return [tuple(bottom_shapes[0][:2]) + (mh.shape[0], mw.shape[0])]

    def forward(self, x: Tensor, *like: Tensor) -> list[Tensor]:
        mh, mw = self._matrices([tuple(x.shape)] + [tuple(t.shape) for t in like])
        mh, mw = mh.to(dtype=x.dtype, device=x.device), mw.to(dtype=x.dtype, device=x.device)
        return [mh @ x @ mw.transpose(0, 1)]


# -- ParseOutput -------------------------------------------------------------------------------
@register_layer("ParseOutput", tops=(1, 2))
class ParseOutput(Layer):
    """Per-pixel label: the channel with the largest score, (N, 1, H, W); a second top holds
    that score. The first maximum wins (the fork's strict ``>`` scan from channel 0). No
    backward (the fork has none)."""

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: Sequence[Shape],
                 phase: int = TEST, where=None):
        super().__init__(param, bottom_shapes, phase, where)
        if len(self.bottom_shapes[0]) != 4:
            raise self.error(f"bottom shape {self.bottom_shapes[0]}: ParseOutput needs (N, C, H, W)")

    def forward(self, x: Tensor) -> list[Tensor]:
        x = x.detach()
        best = x[:, :1]
        label = torch.zeros_like(best)
        for j in range(1, x.shape[1]):
            better = x[:, j:j + 1] > best
            best = torch.where(better, x[:, j:j + 1], best)
            label = torch.where(better, torch.full_like(label, j), label)
        return [label, best][: max(1, len(self.param.top))]


# -- ParseEvaluate ----------------------------------------------------------------------------
@register_layer("ParseEvaluate", bottoms=2)
class ParseEvaluate(Layer):
    """Segmentation counts per label over the batch: top (1, num_labels, 1, 3) holds, for each
    label c, (#pixels labelled c and predicted c, #pixels labelled c, #pixels predicted c),
    skipping pixels whose label is an ``ignore_label``. Bottoms: predicted labels (N, 1, H, W)
    (ParseOutput's) and ground-truth labels of the same count. The fork's solver turns these into
    accuracies and IoU (``eval_type: "segmentation"``). No backward."""

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: Sequence[Shape],
                 phase: int = TEST, where=None):
        super().__init__(param, bottom_shapes, phase, where)
        pe = param.parse_evaluate_param
        if not pe.HasField("num_labels"):
            raise self.error("parse_evaluate_param needs num_labels")
        self.num_labels = int(pe.num_labels)
        self.ignore = sorted(set(int(v) for v in pe.ignore_label))
        self._check_shapes(self.bottom_shapes)

    def _check_shapes(self, shapes: Sequence[Shape]) -> None:
        pred, gt = (tuple(s) + (1,) * (4 - len(s)) for s in shapes[:2])
        if len(pred) != 4 or len(gt) != 4:
            raise self.error(f"bottom shapes {pred}, {gt}: ParseEvaluate needs (N, 1, H, W) bottoms")
        if pred[0] != gt[0] or pred[1] != gt[1] or pred[1] != 1 or pred[2] != gt[2] or pred[3] < gt[3]:
            raise self.error(f"bottom shapes {pred} (prediction) and {gt} (label): need the same "
                             "number, one channel each and the same height (prediction width >= label width)")

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        self._check_shapes(bottom_shapes)
        return [(1, self.num_labels, 1, 3)]

    def forward(self, pred: Tensor, gt: Tensor) -> list[Tensor]:
        self._check_shapes([tuple(pred.shape), tuple(gt.shape)])
        if pred.numel() != gt.numel():
            raise self.error(f"prediction ({pred.numel()} values) and label ({gt.numel()} values) "
                             "must have the same count")
        n = self.num_labels
        p = pred.detach().reshape(-1).to(torch.int64)  # C's float-to-int truncation
        g = gt.detach().reshape(-1).to(torch.int64)
        keep = torch.ones_like(g, dtype=torch.bool)
        for v in self.ignore:
            keep &= g != v
        bad_pred = (p < 0) | (p >= n)
        if bool(bad_pred.any()):
            raise self.error(f"predicted label {int(p[bad_pred][0])} out of range [0, {n})")
        p, g = p[keep], g[keep]
        bad_gt = (g < 0) | (g >= n)
        if bool(bad_gt.any()):
            raise self.error(f"label {int(g[bad_gt][0])} out of range [0, {n}) and not an ignore_label")
        counts = torch.stack([torch.bincount(g[p == g], minlength=n), torch.bincount(g, minlength=n),
                              torch.bincount(p, minlength=n)], dim=1)
        return [counts.to(pred.dtype).reshape(1, n, 1, 3)]
