"""Loss and metric layers of the book author's Caffe fork, longpeng2008/Caffe_Long (commit ecdb08d).

L1Loss, AsymEuclideanLoss, KnowledgeDistillation, MultiLabelAccuracy, MultiLabelSigmoidLoss,
AdaptedWeightedSoftmaxWithLoss, FixedWeightedSoftmaxWithLoss and
AdaptedWeightedSigmoidCrossEntropyLoss, with the fork's forward and backward formulas (several
backwards are not the derivative of the forward; each docstring says how, and names the golden
cases in ``tests/golden/caffe_long/layers`` that pin it). Loss tops are 0-d tensors; the net
applies ``loss_weight``. Labels arrive as float tensors.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..proto import caffe_pb2
from .base import Layer, Shape, canonical_axis, legacy_dim, register_layer
from .loss import FLT_MIN, EuclideanLoss, LossLayer, _count, normalizer
from .neuron import caffe_sigmoid

Tensor = torch.Tensor
Norm = caffe_pb2.LossParameter


def _int_labels(label: Tensor) -> Tensor:
    """``static_cast<int>`` of float labels (truncation toward zero)."""
    return label.detach().to(torch.int64)


@register_layer("L1Loss", bottoms=2, loss=True)
class L1Loss(EuclideanLoss):
    """sum|a - b| / N (N = first axis); both bottoms get gradients (EuclideanLoss's checks).

    Caffe_Long semantics: the gradient is ``+-sign(a - b) * loss_weight / N`` with
    sign(0) = 0 (what autograd of |.| gives); both bottoms may be forced backward.
    Golden: ``L1Loss__basic``, ``L1Loss__lw2_2d``.
    """

    def forward(self, a: Tensor, b: Tensor) -> list[Tensor]:
        return [torch.abs(a - b.reshape(a.shape)).sum() / a.shape[0]]


@register_layer("AsymEuclideanLoss", bottoms=2, loss=True)
class AsymEuclideanLoss(EuclideanLoss):
    """sum((a - b)^2) / (2N), gradients +-(a - b) * loss_weight / N.

    Caffe_Long semantics: despite its name the fork's layer has no asymmetry: it is exactly
    EuclideanLoss (its GPU code calls the CPU code).
    Golden: ``AsymEuclideanLoss__basic``, ``AsymEuclideanLoss__lw0.5_2d``.
    """


# ---------------------------------------------------------------------------------------------
# Knowledge distillation


class _DistillFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, student: Tensor, teacher: Tensor, valid: Tensor, temperature: float,
                axis: int, norm: float) -> Tensor:
        p_s = torch.softmax(student * (1.0 / temperature), dim=axis)
        p_t = torch.softmax(teacher * (1.0 / temperature), dim=axis)
        terms = p_t * (torch.log(torch.clamp(p_s, min=FLT_MIN)) - torch.log(torch.clamp(p_t, min=FLT_MIN)))
        mask = valid.unsqueeze(axis).to(terms.dtype)
        ctx.save_for_backward(p_s, p_t, mask)
        ctx.temperature, ctx.norm = temperature, norm
        return -(terms * mask).sum() / norm

    @staticmethod
    def backward(ctx, dloss: Tensor):
        p_s, p_t, mask = ctx.saved_tensors
        grad = ctx.temperature * (p_s - p_t) * mask
        return grad * (dloss / ctx.norm), None, None, None, None, None


@register_layer("KnowledgeDistillation", bottoms=(2, 3), loss=True)
class KnowledgeDistillation(LossLayer):
    """KL(p_t || p_s) of teacher and student softmaxes at temperature T (``knowledge_distillation_param``).

    Bottoms: student logits, teacher logits, optionally labels (only to mask
    ``loss_param.ignore_label`` positions). loss = sum p_t (log p_t - log p_s) over the
    softmax axis (``softmax_param.axis``) and the counted positions, / normalizer
    (``loss_param.normalization``, default VALID = counted positions; FLT_MIN clip in the logs).

    Caffe_Long semantics: the gradient is ``T * (p_s - p_t) * loss_weight / normalizer``,
    i.e. T^2 times the exact gradient of the reported loss (16x at T = 4). A third bottom is
    required exactly when ``ignore_label`` is set. Neither the teacher nor the labels get a
    gradient (the fork aborts on propagate_down there, so net-level force_backward with 3
    bottoms aborts in the fork; here it sends nothing to them).
    Golden: ``KnowledgeDistillation__T1_2d``, ``KnowledgeDistillation__T4_spatial_ignore``.
    """

    @classmethod
    def allow_force_backward(cls, bottom: int) -> bool:
        return bottom == 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        lp = self.param.loss_param
        s, t = self.bottom_shapes[0], self.bottom_shapes[1]
        self.axis = canonical_axis(self.param.softmax_param.axis, len(s), self)
        self.temperature = float(np.float32(self.param.knowledge_distillation_param.temperature))
        self.ignore = int(lp.ignore_label) if lp.HasField("ignore_label") else None
        if lp.HasField("normalization") or not lp.HasField("normalize"):
            self.mode = int(lp.normalization)
        else:
            self.mode = Norm.VALID if lp.normalize else Norm.BATCH_SIZE
        self.outer, self.inner = _count(s, 0, self.axis), _count(s, self.axis + 1)
        if tuple(s) != tuple(t):
            raise self.error(f"student {tuple(s)} and teacher {tuple(t)} logits must have the same shape")
        if (len(self.bottom_shapes) == 3) != (self.ignore is not None):
            raise self.error("ignore_label is only valid when label inputs are given as bottom[2] "
                             "(and a third bottom needs loss_param.ignore_label)")
        if self.ignore is not None and _count(self.bottom_shapes[2]) != self.outer * self.inner:
            raise self.error(f"label count {_count(self.bottom_shapes[2])} must match the number of "
                             f"predictions {self.outer * self.inner}")

    def forward(self, student: Tensor, teacher: Tensor, label: Tensor | None = None) -> list[Tensor]:
        shape = (self.outer, self.inner)
        if label is not None and self.ignore is not None:
            valid = _int_labels(label).reshape(shape) != self.ignore
            count = int(valid.sum())
        else:
            valid = torch.ones(shape, dtype=torch.bool, device=student.device)
            count = self.outer * self.inner
        norm = normalizer(self.mode, self.outer, self.inner, count)
        c = student.shape[self.axis]
        s3 = student.reshape(self.outer, c, self.inner)
        t3 = teacher.detach().reshape(self.outer, c, self.inner)
        return [_DistillFn.apply(s3, t3, valid, self.temperature, 1, norm)]


# ---------------------------------------------------------------------------------------------
# Multi-label layers


def _check_legacy_match(layer: Layer, axes: Sequence[int]) -> None:
    a, b = layer.bottom_shapes[0], layer.bottom_shapes[1]
    names = ("num", "channels", "height", "width")
    for i in axes:
        if legacy_dim(a, i) != legacy_dim(b, i):
            raise layer.error(f"data {tuple(a)} and label {tuple(b)} differ in {names[i]}; "
                              "they must have the same shape")


@register_layer("MultiLabelAccuracy", bottoms=2)
class MultiLabelAccuracy(Layer):
    """Multi-label metrics, top (1, 5, 1, 1) = [sensitivity, specificity, harmonic mean of
    the two, precision, F1].

    Caffe_Long semantics: label (truncated to int) > 0 is positive, < 0 negative, 0 ignored;
    a score >= 0 predicts positive. Each metric is 0 when its guard count is 0; the harmonic
    mean is ``2 / (n_pos/TP + n_neg/TN)`` in float, so a zero TP or TN gives 0 (and 0/0 gives
    NaN, as in the fork). No backward.
    Golden: ``MultiLabelAccuracy__basic``, ``MultiLabelAccuracy__2d_zero_score``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _check_legacy_match(self, (0, 1, 2, 3))

    def forward(self, score: Tensor, label: Tensor) -> list[Tensor]:
        s = score.detach().reshape(-1).cpu().numpy()
        lab = label.detach().reshape(-1).to(torch.int64).cpu().numpy()
        f32 = np.float32
        pos, neg = lab > 0, lab < 0
        tp, fn = f32(np.sum(pos & (s >= 0))), f32(np.sum(pos & (s < 0)))
        tn, fp = f32(np.sum(neg & (s < 0))), f32(np.sum(neg & (s >= 0)))
        n_pos, n_neg = int(pos.sum()), int(neg.sum())
        with np.errstate(all="ignore"):
            sens = tp / f32(n_pos) if n_pos > 0 else f32(0)
            spec = tn / f32(n_neg) if n_neg > 0 else f32(0)
            harm = f32(2) / (f32(n_pos) / tp + f32(n_neg) / tn) if n_pos + n_neg > 0 else f32(0)
            prec = tp / (tp + fp) if tp > 0 else f32(0)
            f1 = f32(2) * tp / (f32(2) * tp + fp + fn) if tp > 0 else f32(0)
        out = np.array([sens, spec, harm, prec, f1], dtype=np.float32).reshape(1, 5, 1, 1)
        return [torch.from_numpy(out).to(score.device)]

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        return [(1, 5, 1, 1)]


def _sigmoid_ce_term(x: Tensor, target: Tensor) -> Tensor:
    """Caffe's stable -(cross-entropy) of sigmoid(x) against ``target``, element-wise."""
    nonneg = (x >= 0).to(x.dtype)
    return x * (target - nonneg) - torch.log1p(torch.exp(x - 2.0 * x * nonneg))


class _SigmoidLossFn(torch.autograd.Function):
    """Returns the forward value computed by the layer; backward ``(sigmoid(x) - t) * w * dloss / num``."""

    @staticmethod
    def forward(ctx, x: Tensor, value: Tensor, target: Tensor, weight: Tensor, num: int) -> Tensor:
        ctx.save_for_backward(x, target, weight)
        ctx.num = num
        return value.clone()

    @staticmethod
    def backward(ctx, dloss: Tensor):
        x, target, weight = ctx.saved_tensors
        grad = (caffe_sigmoid(x) - target) * weight
        return grad * (dloss / ctx.num), None, None, None, None


@register_layer("MultiLabelSigmoidLoss", bottoms=2, loss=True)
class MultiLabelSigmoidLoss(LossLayer):
    """Sigmoid cross-entropy over labels in {-1, 0, +1}: target > 0 positive, < 0 negative,
    0 ignored; loss / N (first axis).

    Caffe_Long semantics: gradient ``(sigmoid(x) - [t > 0]) * loss_weight / N`` on counted
    entries, 0 on ignored ones; exactly one top; data and label must agree in channels,
    height and width. Golden: ``MultiLabelSigmoidLoss__basic``, ``__nchw_lw2``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _check_legacy_match(self, (1, 2, 3))

    def forward(self, x: Tensor, target: Tensor) -> list[Tensor]:
        t = target.detach().reshape(x.shape)
        counted = (t != 0).to(x.dtype)
        positive = (t > 0).to(x.dtype)
        num = int(x.shape[0])
        with torch.no_grad():
            value = -(_sigmoid_ce_term(x, positive) * counted).sum() / num
        return [_SigmoidLossFn.apply(x, value, positive, counted, num)]


# ---------------------------------------------------------------------------------------------
# Weighted softmax losses


class _WeightedSoftmaxFn(torch.autograd.Function):
    """loss = -sum w_fwd log(max(p_label, FLT_MIN)) / norm; grad = (p - onehot) * w_bwd * dloss / norm.

    ``x`` is (outer, C, inner); labels and weights (outer, inner); an ignored position has
    weight 0 (and any valid label).
    """

    @staticmethod
    def forward(ctx, x: Tensor, labels: Tensor, w_fwd: Tensor, w_bwd: Tensor, norm: float) -> Tensor:
        prob = torch.softmax(x, dim=1)
        p_label = prob.gather(1, labels.unsqueeze(1)).squeeze(1)
        loss = -(w_fwd * torch.log(torch.clamp(p_label, min=FLT_MIN))).sum() / norm
        ctx.save_for_backward(prob, labels, w_bwd)
        ctx.norm = norm
        return loss

    @staticmethod
    def backward(ctx, dloss: Tensor):
        prob, labels, w_bwd = ctx.saved_tensors
        onehot = torch.zeros_like(prob).scatter_(1, labels.unsqueeze(1), 1.0)
        grad = (prob - onehot) * w_bwd.unsqueeze(1)
        return grad * (dloss / ctx.norm), None, None, None, None


class _SoftmaxLossBase(LossLayer):
    """Axis handling shared by the fork's weighted softmax losses; top 1 (if any) is the softmax."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        shape = self.bottom_shapes[0]
        self.axis = canonical_axis(self.param.softmax_param.axis, len(shape), self)
        self.outer, self.inner = _count(shape, 0, self.axis), _count(shape, self.axis + 1)
        self.classes = int(shape[self.axis])
        if _count(self.bottom_shapes[1]) != self.outer * self.inner:
            raise self.error(f"number of labels {_count(self.bottom_shapes[1])} must match the number "
                             f"of predictions {self.outer * self.inner}; e.g., if softmax axis == 1 "
                             "and prediction shape is (N, C, H, W), label count must be N*H*W")

    def _split(self, x: Tensor, label: Tensor) -> tuple[Tensor, Tensor]:
        labels = _int_labels(label).reshape(self.outer, self.inner)
        return x.reshape(self.outer, self.classes, self.inner), labels

    def _tops(self, x: Tensor, loss: Tensor) -> list[Tensor]:
        if len(self.param.top) < 2:
            return [loss]
        return [loss, torch.softmax(x.detach(), dim=self.axis)]

    def _check_range(self, labels: Tensor, counted: Tensor) -> None:
        bad = counted & ((labels < 0) | (labels >= self.classes))
        if bool(bad.any()):
            raise self.error(f"label {int(labels[bad][0])} out of range; expected integers in "
                             f"[0, {self.classes - 1}]")


@register_layer("AdaptedWeightedSoftmaxWithLoss", bottoms=2, tops=(1, 2), loss=True)
class AdaptedWeightedSoftmaxWithLoss(_SoftmaxLossBase):
    """Softmax loss with per-sample class-balancing weights (label > 0 = positive).

    Forward: per sample, positives weigh #neg/#all and negatives #pos/#all of that sample's
    positions; loss = sum of weighted -log(max(p, FLT_MIN)) / (outer * inner).

    Caffe_Long semantics: the backward accumulates the positive/negative counts over the
    samples (they are never reset), so for N > 1 sample i's weights use the counts of samples
    0..i and the gradient is not that of the forward (4% off in a golden case). No
    ignore_label. Golden: ``AdaptedWeightedSoftmaxWithLoss__spatial_n2_c3``, ``__spatial_n3_c2``.
    """

    def forward(self, x: Tensor, label: Tensor) -> list[Tensor]:
        x3, labels = self._split(x, label)
        self._check_range(labels, torch.ones_like(labels, dtype=torch.bool))
        positive = labels > 0
        n_pos = positive.sum(dim=1, keepdim=True).to(x.dtype)
        n_neg = (~positive).sum(dim=1, keepdim=True).to(x.dtype)
        w_fwd = torch.where(positive, n_neg / (n_pos + n_neg), n_pos / (n_pos + n_neg))
        c_pos, c_neg = torch.cumsum(n_pos, dim=0), torch.cumsum(n_neg, dim=0)
        w_bwd = torch.where(positive, c_neg / (c_pos + c_neg), c_pos / (c_pos + c_neg))
        loss = _WeightedSoftmaxFn.apply(x3, labels, w_fwd, w_bwd, float(self.outer * self.inner))
        return self._tops(x, loss)


@register_layer("FixedWeightedSoftmaxWithLoss", bottoms=2, tops=(1, 2), loss=True)
class FixedWeightedSoftmaxWithLoss(_SoftmaxLossBase):
    """Softmax loss where the class ``softmax_param.pos_cid`` (default 1) weighs
    ``softmax_param.pos_mult`` (default 1) and every other class 1.

    Caffe_Long semantics: ``loss_param.normalize`` unset or false divides by the outer count
    N (not BVLC's VALID default; ``normalization`` is not read), ``normalize: true`` by the
    number of non-ignored positions (unweighted); ``ignore_label`` positions add nothing and
    get gradient 0; the gradient is ``(p - onehot) * w * loss_weight / normalizer``.
    Golden: ``FixedWeightedSoftmaxWithLoss__posmult3_cid1``, ``__spatial_normalize_ignore``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        sp, lp = self.param.softmax_param, self.param.loss_param
        self.pos_mult = float(np.float32(sp.pos_mult))
        self.pos_cid = int(sp.pos_cid)
        self.ignore = int(lp.ignore_label) if lp.HasField("ignore_label") else None
        self.normalize = bool(lp.normalize)

    def forward(self, x: Tensor, label: Tensor) -> list[Tensor]:
        x3, labels = self._split(x, label)
        counted = torch.ones_like(labels, dtype=torch.bool) if self.ignore is None else labels != self.ignore
        self._check_range(labels, counted)
        w = torch.where(labels == self.pos_cid, torch.full_like(labels, self.pos_mult, dtype=x.dtype),
                        torch.ones_like(labels, dtype=x.dtype)) * counted.to(x.dtype)
        norm = float(int(counted.sum())) if self.normalize else float(self.outer)
        loss = _WeightedSoftmaxFn.apply(x3, torch.where(counted, labels, torch.zeros_like(labels)), w, w, norm)
        return self._tops(x, loss)


# ---------------------------------------------------------------------------------------------
# Weighted sigmoid cross-entropy


@register_layer("AdaptedWeightedSigmoidCrossEntropyLoss", bottoms=2, loss=True)
class AdaptedWeightedSigmoidCrossEntropyLoss(LossLayer):
    """Sigmoid cross-entropy with per-sample class balancing: in each sample, targets equal
    to 1 weigh #zeros/#(zeros+ones) and targets equal to 0 weigh #ones/#(zeros+ones); / N.

    Caffe_Long semantics: only targets exactly 0 or 1 enter the forward; any other target
    (0.5, 255) is skipped there but still gets the unweighted gradient (sigmoid(x) - t) / N;
    an all-positive sample weighs its positives by 0; a sample with no target exactly 0 or 1
    makes the loss NaN (0 * 0 / 0) while its gradient stays finite.
    Golden: ``AdaptedWeightedSigmoidCrossEntropyLoss__basic``, ``__dontcare_allpos_row``,
    ``__soft_targets_nan``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if _count(self.bottom_shapes[0]) != _count(self.bottom_shapes[1]):
            raise self.error(f"inputs {tuple(self.bottom_shapes[0])} and {tuple(self.bottom_shapes[1])} "
                             "must have the same count")

    def forward(self, x: Tensor, target: Tensor) -> list[Tensor]:
        t = target.detach().reshape(x.shape)
        num = int(x.shape[0])
        x2, t2 = x.detach().reshape(num, -1), t.reshape(num, -1)
        is_pos, is_neg = t2 == 1, t2 == 0
        c_pos = is_pos.sum(dim=1).to(x.dtype)
        c_neg = is_neg.sum(dim=1).to(x.dtype)
        total = c_pos + c_neg
        per = -_sigmoid_ce_term(x2, t2)
        loss_pos = (per * is_pos.to(x.dtype)).sum(dim=1)
        loss_neg = (per * is_neg.to(x.dtype)).sum(dim=1)
        value = (loss_pos * c_neg / total + loss_neg * c_pos / total).sum() / num  # 0*0/0: NaN
        weight = torch.where(is_pos, (c_neg / total)[:, None],
                             torch.where(is_neg, (c_pos / total)[:, None], torch.ones_like(x2)))
        return [_SigmoidLossFn.apply(x, value, t, weight.reshape(x.shape), num)]
