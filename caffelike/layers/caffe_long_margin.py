"""Iteration-dependent layers of longpeng2008/Caffe_Long (commit ecdb08d): MarginInnerProduct
(A-Softmax), LargeMarginInnerProduct (L-Softmax) and LabelSpecificAdd, with the fork's semantics
(see :mod:`.caffe_long`).

They keep the fork's own counter: it starts at the param's ``iteration`` and advances once
per real forward, as in the fork (which never reads the solver's iteration).
:meth:`_IterationCounter.set_iteration` places it explicitly (a tool for scripts; the solver
does not call it, so a run resumed from a snapshot restarts the count, as the fork's does).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..proto import caffe_pb2
from .base import Layer, Shape, canonical_axis, register_layer
from .caffe_long import _count, _is_meta

Tensor = torch.Tensor


class _IterationCounter(Layer):
    """A layer with the fork's forward counter (``iteration`` param, advanced per real forward)."""

    iteration_field = ""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._first_iteration = int(self._own_param().iteration)
        self.iteration = self._first_iteration

    def _own_param(self):
        return getattr(self.param, self.iteration_field)

    def set_iteration(self, it: int) -> None:
        """Place the counter as if ``it`` training forwards had run since the layer was built
        (counter = the param's ``iteration`` + ``it``), e.g. when resuming from a snapshot."""
        self.iteration = self._first_iteration + int(it)


def _margin_terms(mtype: int, cos: Tensor, sign_of: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """psi(theta) of the label column (the margin value divided by the norms), and the fork's
    backward coefficients (coeff_w, coeff_x * |x|) for m = 2, 3, 4 (SphereFace / L-Softmax).

    The sign factors are computed from ``sign_of`` (default ``cos``): pass ``cos.detach()`` to
    differentiate psi as a polynomial with the fork's signs held constant.
    """
    sc = cos if sign_of is None else sign_of
    s0 = torch.sign(sc)
    c2, c3, c4 = cos * cos, cos ** 3, cos ** 4
    if mtype == 1:
        psi = 2.0 * s0 * c2 - 1.0
        cw, cx = 4.0 * s0 * cos, -(2.0 * s0 * c2 + 1.0)
    elif mtype == 2:
        s1 = torch.sign(torch.abs(sc) - 0.5)
        s2 = s0 * (s1 + 1.0) - 2.0
        psi = s1 * (4.0 * c3 - 3.0 * cos) + s2
        cw, cx = s1 * (12.0 * c2 - 3.0), -(8.0 * s1 * c3 - s2)
    else:
        s3 = s0 * torch.sign(2.0 * sc * sc - 1.0)
        s4 = 2.0 * s0 + s3 - 3.0
        psi = s3 * (8.0 * c4 - 8.0 * c2 + 1.0) + s4
        cw, cx = s3 * (32.0 * c3 - 16.0 * cos), -(s3 * (24.0 * c4 - 8.0 * c2 - 1.0) - s4)
    return psi, cw, cx


class _SphereFaceFn(torch.autograd.Function):
    """MarginInnerProduct's forward and the fork's (approximate) backward."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, label: Tensor, lam: float, mtype: int) -> Tensor:
        xw = x @ w.t()
        ctx.mtype, ctx.lam = mtype, lam
        if mtype == 0:
            ctx.save_for_backward(x, w)
            return xw
        x_norm = torch.sqrt((x * x).sum(dim=1))
        rows = torch.arange(x.shape[0], device=x.device)
        cos = xw[rows, label] / x_norm
        psi, cw, cx = _margin_terms(mtype, cos)
        top = xw.clone()
        top[rows, label] = x_norm * psi
        top = (top + lam * xw) / (1.0 + lam)
        cx = cx / x_norm
        norm = torch.sqrt(cw * cw + cx * cx)
        ctx.save_for_backward(x, w, label, cw / norm, cx / norm)
        return top

    @staticmethod
    def backward(ctx, dy: Tensor):
        if ctx.mtype == 0:
            x, w = ctx.saved_tensors
            return dy @ w, dy.t() @ x, None, None, None
        x, w, label, cw, cx = ctx.saved_tensors
        lam = ctx.lam
        rows = torch.arange(x.shape[0], device=x.device)
        d_label = dy[rows, label]
        off = dy.clone()
        off[rows, label] = 0.0
        dx = off @ w / (1.0 + lam)
        dx = dx + (d_label * cw / (1.0 + lam))[:, None] * w[label]
        dx = dx + (d_label * cx / (1.0 + lam))[:, None] * x
        dx = dx + (lam / (1.0 + lam)) * (dy @ w)
        return dx, dy.t() @ x, None, None, None


class _MarginBase(_IterationCounter):
    """Shared set-up of the two margin inner-product layers: weight (N, K), lambda schedule."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        p = self._own_param()
        shape = self.bottom_shapes[0]
        self.axis = canonical_axis(p.axis, len(shape), self)
        self.num_output = int(p.num_output)
        if self.num_output <= 0:
            raise self.error(f"{self.iteration_field}.num_output must be > 0")
        label_shape = self.bottom_shapes[1]
        if (shape[0] if shape else 1) != (label_shape[0] if label_shape else 1):
            raise self.error(f"data {tuple(shape)} and label {tuple(label_shape)} differ in their "
                             "first axis; one label per sample (multi-label is not supported)")
        self.margin_type = int(p.type)
        self.k = _count(shape, self.axis)
        self.add_blob((self.num_output, self.k), p.weight_filler)

    def _lambda(self) -> float:
        p = self._own_param()
        f32 = np.float32
        with np.errstate(all="ignore"):
            lam = f32(p.base) * np.power(f32(1.0) + f32(p.gamma) * f32(self.iteration), -f32(p.power))
        return float(max(f32(lam), f32(p.lambda_min)))

    def _rows(self, x: Tensor, label: Tensor) -> tuple[Tensor, Tensor]:
        m = _count(x.shape, 0, self.axis)
        labels = label.detach().reshape(-1).to(torch.int64)
        if not _is_meta(labels) and labels.numel() and (
                bool((labels < 0).any()) or bool((labels >= self.num_output).any())):
            raise self.error(f"label out of range; expected integers in [0, {self.num_output - 1}]")
        return x.reshape(m, self.k), labels

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        return [tuple(bottom_shapes[0][:self.axis]) + (self.num_output,), (1,)]


@register_layer("MarginInnerProduct", bottoms=2, tops=2)
class MarginInnerProduct(_MarginBase):
    """A-Softmax (SphereFace) inner product: weight (N, K), no bias; tops: scores and lambda (1,).

    Forward: each weight row is renormalised to unit length **in place** (the stored blob
    changes in every forward); ``cos = x.w / |x|``; the label column becomes
    ``|x| psi(theta)`` (m = 1..4 by ``type``: SINGLE is a plain inner product), and the
    scores are ``(top + lambda x.W^T) / (1 + lambda)`` with
    ``lambda = max(base * (1 + gamma * iter)^-power, lambda_min)``.

    Caffe_Long semantics: the counter starts at ``iteration`` and is incremented *before*
    use (first forward: iteration + 1); the weight gradient ignores the margin (dy^T x); the
    input gradient uses SphereFace's normalised (coeff_w, coeff_x) pair, not the exact
    derivative. Two tops are required (with one the fork writes past its top vector).
    Golden: ``MarginInnerProduct__single``, ``__double_it0_sphereface``,
    ``__quadruple_it1000`` (``param_after/0`` pins the renormalisation).
    """

    iteration_field = "margin_inner_product_param"

    def forward(self, x: Tensor, label: Tensor) -> list[Tensor]:
        w = self.blobs[0]
        if _is_meta(x, w):
            return [x.new_empty(tuple(x.shape[:self.axis]) + (self.num_output,)), x.new_empty((1,))]
        self.iteration += 1
        lam = self._lambda()
        with torch.no_grad():
            w.mul_(1.0 / torch.sqrt((w * w).sum(dim=1, keepdim=True)))
        x2, labels = self._rows(x, label)
        top = _SphereFaceFn.apply(x2, w, labels, lam, self.margin_type)
        shape = tuple(x.shape[:self.axis]) + (self.num_output,)
        return [top.reshape(shape), torch.full((1,), lam, dtype=x.dtype, device=x.device)]


@register_layer("LargeMarginInnerProduct", bottoms=2, tops=2)
class LargeMarginInnerProduct(_MarginBase):
    """L-Softmax inner product: weight (N, K), no bias; tops: scores and lambda (1,).

    ``cos = x.w / (|x||w| + 1e-9)``; the label column becomes ``(|x||w| + 1e-9) psi(theta)``
    and the scores ``(top + lambda x.W^T) / (1 + lambda)``, with MarginInnerProduct's lambda
    schedule. Caffe_Long semantics: the weights are not normalised, the counter is
    incremented before use, the backward is the exact derivative (signs held constant); two
    tops are required (with one the fork segfaults).
    Golden: ``LargeMarginInnerProduct__double_it0``, ``__quadruple_it2000``.
    """

    iteration_field = "largemargin_inner_product_param"

    def forward(self, x: Tensor, label: Tensor) -> list[Tensor]:
        w = self.blobs[0]
        shape = tuple(x.shape[:self.axis]) + (self.num_output,)
        if _is_meta(x, w):
            return [x.new_empty(shape), x.new_empty((1,))]
        self.iteration += 1
        lam = self._lambda()
        x2, labels = self._rows(x, label)
        xw = x2 @ w.t()
        if self.margin_type == 0:
            top = xw
        else:
            rows = torch.arange(x2.shape[0], device=x.device)
            x_norm = torch.sqrt((x2 * x2).sum(dim=1))
            w_norm = torch.sqrt((w * w).sum(dim=1))
            norm_product = x_norm * w_norm[labels] + 1e-9
            cos = xw[rows, labels] / norm_product
            # psi as a polynomial of cos with the fork's signs held constant (exact backward)
            psi = _margin_terms(self.margin_type, cos, cos.detach())[0]
            label_col = norm_product * psi
            mask = torch.zeros_like(xw, dtype=torch.bool)
            mask[rows, labels] = True
            full = torch.zeros_like(xw).index_put((rows, labels), label_col)
            top = (torch.where(mask, full, xw) + lam * xw) / (1.0 + lam)
        return [top.reshape(shape), torch.full((1,), lam, dtype=x.dtype, device=x.device)]


@register_layer("LabelSpecificAdd", bottoms=2)
class LabelSpecificAdd(_IterationCounter):
    """Adds ``bias`` to each sample's score at its label column, where that score > -bias.

    Scores are viewed as (num, count/num); the gradient is the identity (top diff copied).
    Annealing (when ``bias_base`` is set): ``bias = clip(bias_base + (1 + bias_gamma *
    iter)^bias_power - 1, bias_min, bias_max)``.

    Caffe_Long semantics: TRAIN only: ``transform_test`` is ANDed with phase == TRAIN, so in
    TEST the layer is always the identity; the counter starts at ``iteration`` and is used,
    then incremented (TRAIN forwards only); ``bias_max`` defaults to 0, so annealing without
    it gives bias <= 0. The fork's optional second top is never reshaped (it aborts), so one
    top only. Golden: ``LabelSpecificAdd__bias0.5_train``, ``__anneal_train``,
    ``__test_phase_identity``.
    """

    iteration_field = "label_specific_add_param"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        p = self.param.label_specific_add_param
        self.bias = float(np.float32(p.bias))
        self.anneal = p.HasField("bias_base")

    def _annealed_bias(self) -> float:
        p = self.param.label_specific_add_param
        f32 = np.float32
        with np.errstate(all="ignore"):
            bias = f32(p.bias_base) + np.power(f32(1.0) + f32(p.bias_gamma) * f32(self.iteration),
                                               f32(p.bias_power)) - f32(1.0)
        bias = min(max(f32(bias), f32(p.bias_min)), f32(p.bias_max))
        return float(bias)

    def forward(self, x: Tensor, label: Tensor) -> list[Tensor]:
        if self.phase != caffe_pb2.TRAIN or _is_meta(x, label):
            return [x.clone() if not _is_meta(x) else x]
        if self.anneal:
            self.bias = self._annealed_bias()
            self.iteration += 1
        num = x.shape[0]
        flat = x.reshape(num, -1)
        labels = label.detach().reshape(-1)[:num].to(torch.int64)
        if bool((labels < 0).any()) or bool((labels >= flat.shape[1]).any()):
            raise self.error(f"label out of range; expected integers in [0, {flat.shape[1] - 1}]")
        rows = torch.arange(num, device=x.device)
        picked = flat.detach()[rows, labels]
        add = torch.where(picked > -self.bias, torch.full_like(picked, self.bias), torch.zeros_like(picked))
        bump = torch.zeros_like(flat).index_put((rows, labels), add)
        return [(flat + bump).reshape(x.shape)]

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        return [tuple(bottom_shapes[0])]
