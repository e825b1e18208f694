"""Loss layers (and Accuracy): scalar tops, Caffe's normalisations and backward formulas.

SoftmaxWithLoss, InfogainLoss, MultinomialLogisticLoss, SigmoidCrossEntropyLoss,
EuclideanLoss, HingeLoss, ContrastiveLoss and Accuracy. Loss tops are 0-d tensors; the net
applies ``loss_weight`` (default 1 on top 0, from ``loss=True`` in the registry). Where
Caffe's backward is not the exact derivative of its forward (the FLT_MIN / 1e-20 clips,
ContrastiveLoss's ``d + 1e-4``), a ``torch.autograd.Function`` carries Caffe's formula.
Labels arrive as float tensors and are truncated to int as ``static_cast<int>`` does.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from ..proto import caffe_pb2
from .base import Layer, Shape, canonical_axis, legacy_dim, register_layer
from .neuron import caffe_sigmoid

Tensor = torch.Tensor
Norm = caffe_pb2.LossParameter

FLT_MIN = float(np.finfo(np.float32).tiny)  # softmax_loss_layer.cpp clips probabilities here
LOG_FLT_MIN = float(np.log(np.float64(FLT_MIN)))
LOG_THRESHOLD = 1e-20  # kLOG_THRESHOLD (loss_layers.hpp): Infogain / MultinomialLogistic clip


def _count(shape: Sequence[int], start: int = 0, end: int | None = None) -> int:
    n = 1
    for d in tuple(shape)[start:end]:
        n *= int(d)
    return n


def _labels(label: Tensor) -> Tensor:
    """Float labels to int64 by truncation toward zero (``static_cast<int>``)."""
    return label.to(torch.int64)  # an integer tensor carries no gradient


def normalizer(mode: int, outer: int, inner: int, valid: int) -> float:
    """Caffe's LossLayer get_normalizer, floored at 1 (max(1, n))."""
    if mode == Norm.FULL:
        n = outer * inner
    elif mode == Norm.VALID:
        n = valid
    elif mode == Norm.BATCH_SIZE:
        n = outer
    else:  # NONE
        n = 1
    return max(1.0, float(n))


def _masked_loss(per: Tensor, valid: Tensor | None, mode: int, outer: int, inner: int) -> tuple[Tensor, float]:
    """``-sum(per)`` over the items that count (``valid`` None: all of them), divided by
    Caffe's normalizer; and that normalizer."""
    if valid is None:  # no ignore_label: the same sum without the mask's product and count
        norm = normalizer(mode, outer, inner, outer * inner)
        return per.sum() / -norm, norm  # -(s/n) exactly, one op fewer
    n_valid = int(valid.sum()) if valid.device.type != "meta" else 0
    norm = normalizer(mode, outer, inner, n_valid)
    return (per * valid.to(per.dtype)).sum() / -norm, norm


class LossLayer(Layer):
    """Common checks of Caffe's LossLayer: scalar top 0, bottoms 0 and 1 share axis 0."""

    check_first_axis = True

    @classmethod
    def allow_force_backward(cls, bottom: int) -> bool:
        return bottom != 1  # Caffe's LossLayer: never the label

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        shapes = self.bottom_shapes
        if self.check_first_axis and len(shapes) >= 2:
            a, b = shapes[0], shapes[1]
            if (a[0] if a else 1) != (b[0] if b else 1):
                raise self.error(f"bottoms have first dimensions {a[0] if a else 1} and "
                                 f"{b[0] if b else 1}; the data and label must have the same "
                                 "first dimension")
        self._check_tops()

    def _check_tops(self) -> None:
        """Caffe's LossLayer adds one implicit loss_weight 1; SetLossWeights wants one per top."""
        n_tops = len(self.param.top)
        n_weights = len(self.param.loss_weight)
        if n_tops > 1 and n_weights != n_tops:
            raise self.error("loss_weight must be unspecified or specified once per top blob "
                             f"(this {n_tops}-top loss layer gets Caffe's implicit single "
                             "loss_weight 1); give one loss_weight per top")

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        return [()] + [tuple(bottom_shapes[0])] * (len(self.param.top) - 1)


def _normalization(layer: Layer, default: int) -> int:
    """loss_param.normalization, or the legacy ``normalize`` bool (true VALID, false BATCH_SIZE)."""
    lp = layer.param.loss_param
    if lp.HasField("normalization"):
        return int(lp.normalization)
    if lp.HasField("normalize"):
        return Norm.VALID if lp.normalize else Norm.BATCH_SIZE
    return default


def _ignore_label(layer: Layer) -> int | None:
    lp = layer.param.loss_param
    return int(lp.ignore_label) if lp.HasField("ignore_label") else None


def _split_axis(shape: Sequence[int], axis: int) -> tuple[int, int, int]:
    return _count(shape, 0, axis), int(shape[axis]), _count(shape, axis + 1)


def _label_mask(labels: Tensor, ignore: int | None, num_classes: int, layer: Layer) -> Tensor:
    """Which labels count (not ``ignore_label``); a label out of range is a user error."""
    valid = torch.ones_like(labels, dtype=torch.bool) if ignore is None else labels != ignore
    if labels.device.type != "meta":
        bad = valid & ((labels < 0) | (labels >= num_classes))
        if bool(bad.any()):
            value = int(labels[bad][0])
            raise layer.error(f"label {value} out of range; expected integers in "
                              f"[0, {num_classes - 1}]" + ("" if ignore is None else
                                                          f" or ignore_label {ignore}"))
    return valid


def _check_label_range(labels: Tensor, num_classes: int, layer: Layer) -> None:
    """:func:`_label_mask` without an ignore_label, as one min/max pass: a label out of range
    is a user error."""
    if labels.device.type == "meta" or labels.numel() == 0:
        return
    low, high = torch.aminmax(labels)
    if int(low) < 0 or int(high) >= num_classes:
        _label_mask(labels, None, num_classes, layer)  # raises, naming the first bad label


class _SoftmaxLossFn(torch.autograd.Function):
    """Softmax + log loss over (outer, C, inner) with Caffe's backward (prob - onehot).

    ``index`` is the (outer, 1, inner) int64 labels, 0 where ``valid`` (same shape) is False."""

    @staticmethod
    def forward(ctx, x: Tensor, index: Tensor, valid: Tensor | None, mode: int,
                class_weights: Tensor | None = None) -> Tensor:
        outer, c, inner = x.shape
        prob = torch.softmax(x, dim=1)
        logs = prob.gather(1, index).clamp_(min=FLT_MIN).log_()
        # each item's term (and gradient) times its weight: 0 for an ignored label, and SegNet's
        # class_weighting; no weight at all when every label counts unweighted
        weight = None if class_weights is None else class_weights.to(x.device, x.dtype)[index]
        if valid is not None:
            mask = valid.to(x.dtype)
            weight = mask if weight is None else weight * mask
        loss, ctx.norm = _masked_loss(logs if weight is None else logs * weight, valid, mode, outer, inner)
        ctx.save_for_backward(prob, index, weight)
        return loss

    @staticmethod
    def backward(ctx, dloss: Tensor):
        prob, index, weight = ctx.saved_tensors
        grad = prob.clone().scatter_(1, index, -1.0, reduce="add")
        if weight is not None:
            grad.mul_(weight)
        return grad.mul_(dloss / ctx.norm), None, None, None, None


def _row_softmax_loss(x: Tensor, target: Tensor, reduction: int) -> Tensor:
    """:class:`_SoftmaxLossFn` for (N, C) scores whose every label counts, unweighted:
    ``-sum(max(log p, log FLT_MIN))`` over the N labels, divided by N (``reduction`` 1, mean)
    or by 1 (2, sum: Caffe's NONE), with Caffe's gradient ``(p - onehot) * dloss / norm``,
    which the clip does not enter.

    Only torch operations with built-in derivatives (``log_softmax``, ``nll_loss``), so the
    backward never enters Python: the clipped log p is passed on with the unclipped one's
    gradient (``clipped + (logp - logp)``, whose second term is an exact zero for a finite
    log p; a label whose log p is -inf gives NaN, and the caller takes the general path)."""
    logp = torch.log_softmax(x, 1)
    passed = logp.clamp_min(LOG_FLT_MIN).detach() + (logp - logp.detach())
    return torch._C._nn.nll_loss(passed, target, None, reduction, -100)


_REDUCTION = {Norm.FULL: 1, Norm.VALID: 1, Norm.BATCH_SIZE: 1, Norm.NONE: 2}  # mean over N, sum


@register_layer("SoftmaxWithLoss", bottoms=2, tops=(1, 2), loss=True)
class SoftmaxWithLoss(LossLayer):
    """Softmax over ``softmax_param.axis`` then the mean negative log-likelihood of the labels.

    Labels: ``outer*inner`` values in [0, C) (or ``loss_param.ignore_label``). Normalisation:
    FULL, VALID (default), BATCH_SIZE, NONE, or the legacy ``normalize`` bool; the normaliser
    is max(1, n). Caffe semantics: probabilities are clipped at FLT_MIN in the log; this
    commit cannot build the layer with a second (prob) top (loss_weight count check), and
    neither can caffelike. Golden ``SoftmaxWithLoss__*``. SegNet/ENet's
    ``weight_by_label_freqs`` (alexgkendall/caffe-segnet softmax_loss_layer.cpp): each item's
    term and gradient times ``class_weighting[label]`` (one weight per class), the normaliser
    unchanged (tests/layers/test_fork_loss.py).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.mode = _normalization(self, Norm.VALID)
        self.ignore = _ignore_label(self)
        _, c, _ = self._check_labels(self.bottom_shapes)
        self._checked: tuple = (None, None)  # (bottom shapes, their (outer, C, inner)) last seen
        lp = self.param.loss_param
        weights = None
        if lp.weight_by_label_freqs:
            if len(lp.class_weighting) != c:
                raise self.error(f"{len(lp.class_weighting)} class_weighting values for {c} classes; "
                                 "weight_by_label_freqs needs one per class")
            weights = torch.tensor(list(lp.class_weighting), dtype=torch.float32)
        self.register_buffer("class_weights", weights, persistent=False)

    def _check_tops(self) -> None:
        if len(self.param.top) > 1:
            # With 2 tops Caffe fails one SetLossWeights check or the other (the layer's own,
            # or its internal Softmax's), whatever loss_weights are given.
            raise self.error("loss_weight must be unspecified or specified once per top blob: "
                             "SoftmaxWithLoss with a second (prob) top cannot be built in BVLC "
                             "Caffe; add a separate Softmax layer for the probabilities")

    def _check_labels(self, shapes: Sequence[Shape]) -> tuple[int, int, int]:
        x_shape, label_shape = shapes[0], shapes[1]
        axis = canonical_axis(self.param.softmax_param.axis, len(x_shape), self)
        outer, c, inner = _split_axis(x_shape, axis)
        if outer * inner != _count(label_shape):
            raise self.error(f"label shape {tuple(label_shape)} has {_count(label_shape)} values "
                             f"but prediction shape {tuple(x_shape)} needs {outer * inner} "
                             f"(number of labels must match number of predictions)")
        return outer, c, inner

    def forward(self, x: Tensor, label: Tensor) -> list[Tensor]:
        shapes = (tuple(x.shape), tuple(label.shape))
        if shapes != self._checked[0]:
            self._checked = (shapes, self._check_labels(shapes))
        outer, c, inner = self._checked[1]
        # (N, C) scores on the CPU; elsewhere the NaN test would wait for the device, or break a graph
        if (inner == 1 and outer and self.ignore is None and self.class_weights is None
                and x.device.type == "cpu" and not (torch.compiler.is_compiling() or torch.jit.is_tracing())):
            target = _labels(label).view(outer)
            loss = self._every_label_counts(target, c, lambda: _row_softmax_loss(
                x.reshape(outer, c), target, _REDUCTION[self.mode]))
            value = loss.item()
            if value == value:  # NaN only from a score of -inf (or NaN): the path below is exact
                return [loss]
        index = _labels(label).reshape(outer, 1, inner)
        if self.ignore is None:  # every label counts: no mask to build, multiply or count
            return [self._every_label_counts(index, c, lambda: _SoftmaxLossFn.apply(
                x.reshape(outer, c, inner), index, None, self.mode, self.class_weights))]
        valid = _label_mask(index, self.ignore, c, self)
        index = torch.where(valid, index, torch.zeros_like(index))
        return [_SoftmaxLossFn.apply(x.reshape(outer, c, inner), index, valid, self.mode, self.class_weights)]

    def _every_label_counts(self, labels: Tensor, c: int, loss: Callable[[], Tensor]) -> Tensor:
        """``loss()`` of labels that all count, with no mask built: on the CPU its kernel
        (gather, nll_loss) checks their range, elsewhere one min/max pass does; a label out of
        range is a user error naming it."""
        on_cpu = labels.device.type == "cpu"
        if not on_cpu:
            _check_label_range(labels, c, self)
        try:
            return loss()
        except (RuntimeError, IndexError):  # IndexError: nll_loss's out-of-range target
            if on_cpu:
                _label_mask(labels, None, c, self)  # a label out of range: says which
            raise


class _InfogainFn(torch.autograd.Function):
    """Softmax + infogain loss with Caffe's backward prob*rowsum(H)[y] - H[y, :]."""

    @staticmethod
    def forward(ctx, x: Tensor, labels: Tensor, valid: Tensor, h: Tensor, mode: int):
        outer, c, inner = x.shape
        prob = torch.softmax(x, dim=1)
        safe = torch.where(valid, labels, torch.zeros_like(labels))
        rows = h[safe]  # (outer, inner, C): H[label, :]
        logp = torch.log(torch.clamp(prob, min=LOG_THRESHOLD)).permute(0, 2, 1)
        per = (rows * logp).sum(dim=2)
        loss, ctx.norm = _masked_loss(per, valid, mode, outer, inner)
        ctx.save_for_backward(prob, safe, valid, h)
        ctx.mark_non_differentiable(prob)
        return loss, prob

    @staticmethod
    def backward(ctx, dloss: Tensor, _dprob: Tensor):
        prob, safe, valid, h = ctx.saved_tensors
        row_sums = h.sum(dim=1)[safe]  # (outer, inner)
        rows = h[safe].permute(0, 2, 1)  # (outer, C, inner)
        grad = prob * row_sums.unsqueeze(1) - rows
        grad = grad * valid.unsqueeze(1).to(grad.dtype)
        return grad * (dloss / ctx.norm), None, None, None, None


@register_layer("InfogainLoss", bottoms=(2, 3), tops=(1, 2), loss=True)
class InfogainLoss(LossLayer):
    """Infogain loss -sum_l H[y, l] log(max(p_l, 1e-20)) of the softmax p of raw scores.

    H (C x C) is bottom 2 or ``infogain_loss_param.source`` (a .binaryproto). Supports
    ignore_label, normalization (the legacy ``normalize`` is refused, as in Caffe), axis, and
    a second top with the probabilities (its diff is ignored). Caffe semantics: this commit
    applies the softmax internally; no gradient flows to labels or H.
    Golden ``InfogainLoss__H_bottom`` (layer-level gradients).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        lp = self.param.loss_param
        if lp.HasField("normalize"):
            raise self.error('normalize is deprecated. use "normalization"')
        self.mode = int(lp.normalization)
        self.ignore = _ignore_label(self)
        self.axis_param = int(self.param.infogain_loss_param.axis)
        # H from the source file: a plain array (not a buffer), fixed once read, like Caffe's.
        self.infogain: np.ndarray | None = None
        if len(self.bottom_shapes) < 3:
            source = self.param.infogain_loss_param.source
            if not self.param.infogain_loss_param.HasField("source"):
                raise self.error("Infogain matrix source must be specified "
                                 "(infogain_loss_param.source or a third bottom)")
            self.infogain = self._read_matrix(source)
        self._geometry(self.bottom_shapes)

    def _read_matrix(self, path: str) -> np.ndarray:
        blob = caffe_pb2.BlobProto()
        try:
            with open(path, "rb") as f:
                blob.ParseFromString(f.read())
        except OSError as exc:
            raise self.error(f"cannot read infogain matrix {path!r}: {exc.strerror}") from None
        except Exception:  # protobuf DecodeError
            raise self.error(f"infogain matrix {path!r} is not a BlobProto (.binaryproto)") from None
        values = blob.double_data if len(blob.double_data) else blob.data
        return np.asarray(values, dtype=np.float32)

    def _geometry(self, shapes: Sequence[Shape]) -> tuple[int, int, int]:
        x_shape, label_shape = shapes[0], shapes[1]
        axis = canonical_axis(self.axis_param, len(x_shape), self)
        outer, c, inner = _split_axis(x_shape, axis)
        if outer * inner != _count(label_shape):
            raise self.error(f"label shape {tuple(label_shape)} has {_count(label_shape)} values "
                             f"but prediction shape {tuple(x_shape)} needs {outer * inner} "
                             f"(number of labels must match number of predictions)")
        h_count = _count(shapes[2]) if len(shapes) > 2 else int(self.infogain.size)
        if h_count != c * c:
            raise self.error(f"infogain matrix H has {h_count} values; expected {c}x{c}")
        return outer, c, inner

    def forward(self, x: Tensor, label: Tensor, h: Tensor | None = None) -> list[Tensor]:
        shapes = [tuple(x.shape), tuple(label.shape)] + ([tuple(h.shape)] if h is not None else [])
        outer, c, inner = self._geometry(shapes)
        if h is not None:
            matrix = h.detach().reshape(c, c)
        else:
            matrix = torch.from_numpy(self.infogain).to(x.device).reshape(c, c)
        labels = _labels(label).reshape(outer, inner)
        valid = _label_mask(labels, self.ignore, c, self)
        loss, prob = _InfogainFn.apply(x.reshape(outer, c, inner), labels, valid,
                                        matrix.to(x.dtype), self.mode)
        tops = [loss]
        if len(self.param.top) > 1:
            tops.append(prob.reshape(x.shape))
        return tops


class _MultinomialFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, prob: Tensor, labels: Tensor) -> Tensor:
        num = prob.shape[0]
        picked = torch.clamp(prob.gather(1, labels.unsqueeze(1)).squeeze(1), min=LOG_THRESHOLD)
        ctx.save_for_backward(picked, labels)
        ctx.shape = prob.shape
        return -torch.log(picked).sum() / num

    @staticmethod
    def backward(ctx, dloss: Tensor):
        picked, labels = ctx.saved_tensors
        num = ctx.shape[0]
        grad = torch.zeros(ctx.shape, dtype=picked.dtype, device=picked.device)
        grad.scatter_(1, labels.unsqueeze(1), ((-dloss / num) / picked).unsqueeze(1))
        return grad, None


@register_layer("MultinomialLogisticLoss", bottoms=2, loss=True)
class MultinomialLogisticLoss(LossLayer):
    """-mean_n log(max(p[n, y_n], 1e-20)) of given probabilities (no softmax inside).

    Caffe semantics: the 1e-20 clip applies in forward and backward (-1/(N p)).
    Golden ``MultinomialLogisticLoss__basic``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        label = self.bottom_shapes[1]
        if any(legacy_dim(label, i) != 1 for i in (1, 2, 3)):
            raise self.error(f"label shape {tuple(label)}; expected one label per sample (N, 1, 1, 1)")

    def forward(self, prob: Tensor, label: Tensor) -> list[Tensor]:
        num = prob.shape[0]
        flat = prob.reshape(num, -1)
        labels = _labels(label).reshape(num)
        _label_mask(labels, None, flat.shape[1], self)
        return [_MultinomialFn.apply(flat, labels).reshape(())]


class _SigmoidCEFn(torch.autograd.Function):
    """Sigmoid cross-entropy in Caffe's overflow-safe form; backward sigmoid(x) - target."""

    @staticmethod
    def forward(ctx, x: Tensor, target: Tensor, valid: Tensor, norm_args: tuple) -> Tensor:
        mode, outer, inner = norm_args
        pos = (x >= 0).to(x.dtype)
        per = x * (target - pos) - torch.log(1.0 + torch.exp(x - 2.0 * x * pos))
        loss, ctx.norm = _masked_loss(per, valid, mode, outer, inner)
        ctx.save_for_backward(x, target, valid)
        return loss

    @staticmethod
    def backward(ctx, dloss: Tensor):
        x, target, valid = ctx.saved_tensors
        grad = (caffe_sigmoid(x) - target) * valid.to(x.dtype)
        return grad * (dloss / ctx.norm), None, None, None


@register_layer("SigmoidCrossEntropyLoss", bottoms=2, loss=True)
class SigmoidCrossEntropyLoss(LossLayer):
    """Cross-entropy of sigmoid(x) against targets in [0, 1], in Caffe's stable form.

    Normalisation defaults to BATCH_SIZE (unlike SoftmaxWithLoss); targets whose int value
    equals ``ignore_label`` are skipped. Backward (sigmoid(x) - t) / normaliser.
    Golden ``SigmoidCrossEntropyLoss__binary``, ``__soft_targets``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.mode = _normalization(self, Norm.BATCH_SIZE)
        self.ignore = _ignore_label(self)
        a, b = self.bottom_shapes[0], self.bottom_shapes[1]
        if _count(a) != _count(b):
            raise self.error(f"inputs have {_count(a)} and {_count(b)} values; "
                             "SigmoidCrossEntropyLoss inputs must have the same count")

    def forward(self, x: Tensor, target: Tensor) -> list[Tensor]:
        t = target.detach().reshape(x.shape).to(x.dtype)
        if self.ignore is None:
            valid = torch.ones(x.shape, dtype=torch.bool, device=x.device)
        else:
            valid = _labels(t) != self.ignore
        outer = int(x.shape[0]) if x.dim() else 1
        inner = _count(x.shape, 1)
        return [_SigmoidCEFn.apply(x, t, valid, (self.mode, outer, inner))]


@register_layer("EuclideanLoss", bottoms=2, loss=True)
class EuclideanLoss(LossLayer):
    """sum((a - b)^2) / (2N); both bottoms get gradients (+-(a - b)/N).

    Golden ``EuclideanLoss__basic``.
    """

    @classmethod
    def allow_force_backward(cls, bottom: int) -> bool:
        return True  # both bottoms are predictions

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        a, b = self.bottom_shapes[0], self.bottom_shapes[1]
        if _count(a, 1) != _count(b, 1):
            raise self.error(f"inputs of shapes {tuple(a)} and {tuple(b)} differ in dimension; "
                             "inputs must have the same dimension")

    def forward(self, a: Tensor, b: Tensor) -> list[Tensor]:
        diff = a - b.reshape(a.shape)
        num = a.shape[0]
        return [(diff * diff).sum() / num / 2.0]


@register_layer("HingeLoss", bottoms=2, loss=True)
class HingeLoss(LossLayer):
    """One-vs-all hinge: sum_k max(0, 1 - s_k x_k) (L1) or its square (L2), over N.

    s_k is +1 for the true class and -1 otherwise. Gradients: L1 sign-based, L2 2x the
    margin, both / N (autograd equals Caffe's formula, including 0 at the hinge).
    Golden ``HingeLoss__L1``, ``HingeLoss__L2``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.norm = int(self.param.hinge_loss_param.norm)

    def forward(self, x: Tensor, label: Tensor) -> list[Tensor]:
        num = x.shape[0]
        flat = x.reshape(num, -1)
        labels = _labels(label).reshape(-1)[:num]
        _label_mask(labels, None, flat.shape[1], self)
        sign = torch.ones_like(flat)
        sign.scatter_(1, labels.unsqueeze(1), -1.0)
        margin = torch.relu(1.0 + sign * flat)
        if self.norm == caffe_pb2.HingeLossParameter.L2:
            return [(margin * margin).sum() / num]
        return [margin.sum() / num]


class _ContrastiveFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, similar: Tensor, margin: float, legacy: bool) -> Tensor:
        diff = a - b
        dist_sq = (diff * diff).sum(dim=1)
        if legacy:
            dissimilar = torch.clamp(margin - dist_sq, min=0.0)
        else:
            dissimilar = torch.clamp(margin - torch.sqrt(dist_sq), min=0.0) ** 2
        per = torch.where(similar, dist_sq, dissimilar)
        ctx.save_for_backward(diff, dist_sq, similar)
        ctx.margin, ctx.legacy = margin, legacy
        return per.sum() / a.shape[0] / 2.0

    @staticmethod
    def backward(ctx, dloss: Tensor):
        diff, dist_sq, similar = ctx.saved_tensors
        num = diff.shape[0]
        alpha = dloss / num
        if ctx.legacy:
            mdist = ctx.margin - dist_sq
            beta = -alpha * torch.ones_like(dist_sq)
        else:
            dist = torch.sqrt(dist_sq)
            mdist = ctx.margin - dist
            beta = -alpha * mdist / (dist + 1e-4)  # Caffe's d + 1e-4, not the exact gradient
        beta = torch.where(mdist > 0, beta, torch.zeros_like(beta))
        coeff = torch.where(similar, alpha * torch.ones_like(beta), beta)
        grad = coeff.unsqueeze(1) * diff
        ga = grad if ctx.needs_input_grad[0] else None
        gb = -grad if ctx.needs_input_grad[1] else None
        return ga, gb, None, None, None


@register_layer("ContrastiveLoss", bottoms=3, loss=True)
class ContrastiveLoss(LossLayer):
    """Siamese contrastive loss over pairs (a, b) with similarity labels (N, 1, 1, 1).

    Similar: d^2; dissimilar: max(margin - d, 0)^2, or max(margin - d^2, 0) with
    ``legacy_version``; summed / 2N. Caffe semantics: the backward divides by d + 1e-4.
    Golden ``ContrastiveLoss__margin1``, ``ContrastiveLoss__legacy_margin1``.
    """

    @classmethod
    def allow_force_backward(cls, bottom: int) -> bool:
        return bottom != 2  # the similarity label

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        a, b, s = self.bottom_shapes
        if legacy_dim(a, 1) != legacy_dim(b, 1):
            raise self.error(f"bottoms 0 and 1 have shapes {tuple(a)} and {tuple(b)}; "
                             "expected the same number of channels")
        for name, shape, need in (("a", a, (2, 3)), ("b", b, (2, 3)), ("similarity", s, (1, 2, 3))):
            if any(legacy_dim(shape, i) != 1 for i in need):
                raise self.error(f"bottom {name} has shape {tuple(shape)}; expected "
                                 + ("(N, C, 1, 1)" if name != "similarity" else "(N, 1, 1, 1)"))
        p = self.param.contrastive_loss_param
        self.margin = float(torch.tensor(p.margin, dtype=torch.float32))
        self.legacy = bool(p.legacy_version)

    def forward(self, a: Tensor, b: Tensor, sim: Tensor) -> list[Tensor]:
        num = a.shape[0]
        similar = _labels(sim).reshape(-1)[:num] != 0
        return [_ContrastiveFn.apply(a.reshape(num, -1), b.reshape(num, -1), similar,
                                     self.margin, self.legacy)]


@register_layer("Accuracy", bottoms=2, tops=(1, 2))
class Accuracy(Layer):
    """Top-k accuracy over ``axis``; optional second top = per-class accuracy (C,).

    A sample is correct when fewer than k other classes score >= the true class.
    ``ignore_label`` samples are skipped; no samples gives 0. No backward.
    Golden ``Accuracy__top1``, ``__top3``, ``__ignore2_perclass`` (exact).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        p = self.param.accuracy_param
        self.top_k = int(p.top_k)
        self.ignore = int(p.ignore_label) if p.HasField("ignore_label") else None
        self._geometry(self.bottom_shapes)

    def _geometry(self, shapes: Sequence[Shape]) -> tuple[int, int, int]:
        x_shape, label_shape = shapes[0], shapes[1]
        if self.top_k > _count(x_shape) // max(1, _count(label_shape)):
            raise self.error(f"top_k {self.top_k} is larger than the number of classes; "
                             "top_k must be less than or equal to the number of classes")
        axis = canonical_axis(self.param.accuracy_param.axis, len(x_shape), self)
        outer, c, inner = _split_axis(x_shape, axis)
        if outer * inner != _count(label_shape):
            raise self.error(f"label shape {tuple(label_shape)} has {_count(label_shape)} values "
                             f"but prediction shape {tuple(x_shape)} needs {outer * inner} "
                             f"(number of labels must match number of predictions)")
        return outer, c, inner

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        outer, c, inner = self._geometry(bottom_shapes)
        return [()] + [(c,)] * (len(self.param.top) - 1)

    def forward(self, x: Tensor, label: Tensor) -> list[Tensor]:
        outer, c, inner = self._geometry([tuple(x.shape), tuple(label.shape)])
        scores = x.detach().reshape(outer, c, inner)
        labels = _labels(label).reshape(outer, inner)
        valid = _label_mask(labels, self.ignore, c, self)
        safe = torch.where(valid, labels, torch.zeros_like(labels))
        true_score = scores.gather(1, safe.unsqueeze(1))
        at_least = (scores >= true_score).sum(dim=1)  # includes the true class itself
        correct = (at_least <= self.top_k) & valid
        n_valid = valid.sum()
        hits = correct.sum().to(torch.float32)
        acc = torch.where(n_valid > 0, hits / n_valid.clamp(min=1).to(torch.float32),
                          torch.zeros((), dtype=torch.float32, device=x.device))
        tops = [acc.to(x.dtype)]
        if len(self.param.top) > 1:
            per_total = torch.zeros(c, dtype=torch.float32, device=x.device)
            per_hits = torch.zeros(c, dtype=torch.float32, device=x.device)
            per_total.scatter_add_(0, safe[valid], torch.ones_like(safe[valid], dtype=torch.float32))
            per_hits.scatter_add_(0, safe[correct], torch.ones_like(safe[correct], dtype=torch.float32))
            per_class = torch.where(per_total > 0, per_hits / per_total.clamp(min=1.0),
                                    torch.zeros_like(per_total))
            tops.append(per_class.to(x.dtype))
        return tops
