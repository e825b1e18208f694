"""Common computing layers: InnerProduct, Scale, Bias, Eltwise, Softmax, Reduction, ArgMax, Embed.

Each computes a simple function of its bottoms; the backward is autograd wherever it equals
Caffe's Backward_cpu, and a ``torch.autograd.Function`` where Caffe's differs (Eltwise PROD
without ``stable_prod_grad``). Source layers without bottoms (Input, DummyData, Parameter)
live in :mod:`.inputs`; pure data movement in :mod:`.shape`.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..errors import Where
from ..proto import caffe_pb2
from .base import TEST, Layer, Shape, canonical_axis, register_layer, stored_nhwc


def _constant_filler(value: float) -> caffe_pb2.FillerParameter:
    return caffe_pb2.FillerParameter(type="constant", value=value)


# -- InnerProduct -----------------------------------------------------------------------------
class _FlattenChannelsLast(torch.autograd.Function):
    """(N, C, H, W) stored channels_last -> (N, C*H*W) in Caffe's C, H, W order, whose gradient
    comes back channels_last (a plain reshape's would be NCHW, and every layer below would then
    mix layouts in its backward, which is slow)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.shape = x.shape
        return x.reshape(x.shape[0], -1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.reshape(ctx.shape).contiguous(memory_format=torch.channels_last)


@register_layer("InnerProduct")
class InnerProduct(Layer):
    """Fully connected: axes from ``axis`` on are flattened to K and mapped to ``num_output`` N.

    Blobs: weight ``(N, K)`` (``(K, N)`` with ``transpose``), bias ``(N,)`` if ``bias_term``.
    Top shape: ``bottom.shape[:axis] + (N,)``. Pinned by golden ``InnerProduct__*``.
    """

    def writable_top(self) -> bool:
        return True

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: Sequence[Shape],
                 phase: int = TEST, where: Where | None = None):
        super().__init__(param, bottom_shapes, phase, where)
        ip = param.inner_product_param
        if ip.num_output <= 0:
            raise self.error(f"num_output must be positive, got {ip.num_output}")
        shape = self.bottom_shapes[0]
        axis = canonical_axis(ip.axis, len(shape), self)
        self.num_output = ip.num_output
        self.k = math.prod(shape[axis:])
        self._transpose, self._bias_term = bool(ip.transpose), bool(ip.bias_term)
        self._seen_shape: torch.Size | None = None  # the last bottom shape and its axis
        self._seen_axis = axis
        n = self.num_output
        self.add_blob((self.k, n) if ip.transpose else (n, self.k), ip.weight_filler)
        if ip.bias_term:
            self.add_blob((n,), ip.bias_filler)

    def _axis(self, shape: Shape) -> int:
        axis = canonical_axis(self.param.inner_product_param.axis, len(shape), self)
        k = math.prod(shape[axis:])
        if k != self.k:
            raise self.error(f"input size {k} (bottom shape {tuple(shape)} from axis {axis}) "
                             f"does not match the weights' {self.k}")
        return axis

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        """``bottom.shape[:axis] + (num_output,)``."""
        shape = tuple(bottom_shapes[0])
        return [shape[:self._axis(shape)] + (self.num_output,)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        shape = x.shape
        if shape != self._seen_shape:  # the axis check once per bottom shape
            self._seen_axis = self._axis(tuple(shape))
            self._seen_shape = shape
        axis = self._seen_axis
        if axis == x.dim() - 1:  # (N, K): nothing to flatten
            flat = x
        elif (axis == 1 and x.requires_grad and stored_nhwc(x) and torch.is_grad_enabled()
              and not torch.jit.is_tracing()):
            flat = _FlattenChannelsLast.apply(x)
        else:
            flat = x.reshape(math.prod(shape[:axis]), self.k)
        blobs = self.blobs._parameters  # not the ParameterList's slower __getitem__
        weight = blobs["0"]
        out = F.linear(flat, weight.t() if self._transpose else weight,
                       blobs["1"] if self._bias_term else None)
        return [out if axis == 1 else out.reshape(*shape[:axis], self.num_output)]

    def fold_head(self) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        ip = self.param.inner_product_param
        if ip.axis != 1:
            return None
        weight = self.blobs[0]
        return (weight.t() if ip.transpose else weight), (self.blobs[1] if ip.bias_term else None)

    def run_folded(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return F.linear(x.reshape(x.shape[0], -1), weight, bias)


# -- Scale and Bias ---------------------------------------------------------------------------
def _operand_shape(layer: Layer, shape: Shape, axis_param: int, num_axes: int) -> Shape:
    """Caffe's learned Scale/Bias blob shape: ``shape[axis:axis+num_axes]`` (-1 = to the end)."""
    axis = canonical_axis(axis_param, len(shape), layer)
    if num_axes < -1:
        raise layer.error(f"num_axes must be >= 0, or -1 for all remaining axes; got {num_axes}")
    if num_axes >= 0 and axis + num_axes > len(shape):
        raise layer.error(f"axis {axis} + num_axes {num_axes} extends past the bottom's "
                          f"{len(shape)} axes")
    return tuple(shape[axis:] if num_axes == -1 else shape[axis:axis + num_axes])


def _operand_axis(layer: Layer, shape: Shape, operand: Shape, axis_param: int, what: str) -> int:
    """The axis where ``operand`` lines up with ``shape``; an error naming both if it does not."""
    axis = canonical_axis(axis_param, len(shape), layer)
    if axis + len(operand) > len(shape) or tuple(shape[axis:axis + len(operand)]) != tuple(operand):
        raise layer.error(f"{what} shape {tuple(operand)} does not match bottom shape "
                          f"{tuple(shape)} from axis {axis}")
    return axis


def _broadcastable(layer: Layer, x: torch.Tensor, operand: torch.Tensor, axis_param: int,
                   what: str) -> torch.Tensor:
    """View ``operand`` to line up with ``x`` from ``axis`` on (a 0-axis operand is a scalar)."""
    if operand.dim() == 0:
        return operand
    axis = _operand_axis(layer, tuple(x.shape), tuple(operand.shape), axis_param, what)
    trailing = x.dim() - axis - operand.dim()
    return operand.reshape((1,) * axis + tuple(operand.shape) + (1,) * trailing)


@register_layer("Bias", bottoms=(1, 2))
class Bias(Layer):
    """Adds a bias broadcast from ``axis``: a learned blob (one bottom) or bottom 1.

    Caffe semantics: blob shape ``bottom.shape[axis:axis+num_axes]`` (num_axes -1 = all the
    rest, 0 = a scalar), default filler constant 0. Pinned by golden ``Bias__*``.
    """

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: Sequence[Shape],
                 phase: int = TEST, where: Where | None = None):
        super().__init__(param, bottom_shapes, phase, where)
        bp = param.bias_param
        if len(self.bottom_shapes) == 1:
            shape = _operand_shape(self, self.bottom_shapes[0], bp.axis, bp.num_axes)
            self.add_blob(shape, bp.filler)

    def forward(self, x: torch.Tensor, *bias: torch.Tensor) -> list[torch.Tensor]:
        b = bias[0] if bias else self.blobs[0]
        return [x + _broadcastable(self, x, b, self.param.bias_param.axis, "bias")]


@register_layer("Scale", bottoms=(1, 2))
class Scale(Layer):
    """Multiplies by a scale broadcast from ``axis`` (learned blob or bottom 1), plus a bias.

    Caffe semantics: scale blob default filler constant 1; ``bias_term`` adds a bias blob
    (filler ``bias_filler``, default 0) of the scale's shape (with two bottoms: of bottom 1's
    number of axes). Blob order: scale, bias. Pinned by golden ``Scale__*``.
    """

    keeps_layout = True

    def writable_top(self) -> bool:
        return True

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: Sequence[Shape],
                 phase: int = TEST, where: Where | None = None):
        super().__init__(param, bottom_shapes, phase, where)
        sp = param.scale_param
        data = self.bottom_shapes[0]
        if len(self.bottom_shapes) == 1:
            shape = _operand_shape(self, data, sp.axis, sp.num_axes)
            filler = sp.filler if sp.HasField("filler") else _constant_filler(1.0)
            self.add_blob(shape, filler)
        if sp.bias_term:
            n_axes = len(self.bottom_shapes[1]) if len(self.bottom_shapes) > 1 else sp.num_axes
            self.add_blob(_operand_shape(self, data, sp.axis, n_axes), sp.bias_filler)

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        """The bottom's shape (after checking the scale and bias line up with it)."""
        sp = self.param.scale_param
        shape = tuple(bottom_shapes[0])
        scale = tuple(bottom_shapes[1]) if len(bottom_shapes) > 1 else tuple(self.blobs[0].shape)
        operands = [("scale", scale)] + ([("bias", tuple(self.blobs[-1].shape))] if sp.bias_term else [])
        for what, operand in operands:
            if operand:
                _operand_axis(self, shape, operand, sp.axis, what)
        return [shape]

    def forward(self, x: torch.Tensor, *scale: torch.Tensor) -> list[torch.Tensor]:
        sp = self.param.scale_param
        s = scale[0] if scale else self.blobs[0]
        s = _broadcastable(self, x, s, sp.axis, "scale")
        if sp.bias_term:  # one fused kernel for x*s + b
            return [torch.addcmul(_broadcastable(self, x, self.blobs[-1], sp.axis, "bias"), x, s)]
        return [x * s]

    def learned_channel_affine(self, channels: int) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        sp = self.param.scale_param
        if len(self.bottom_shapes) != 1 or len(self.bottom_shapes[0]) < 2:
            return None
        axis = canonical_axis(sp.axis, len(self.bottom_shapes[0]), self)
        if axis != 1 or tuple(self.blobs[0].shape) != (channels,):
            return None
        return self.blobs[0], (self.blobs[1] if sp.bias_term else None)

    def affine(self, channels: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        params = self.learned_channel_affine(channels)
        if params is None:
            return None
        gamma, beta = params
        gamma = gamma.detach().to(torch.float64).reshape(-1)
        shift = beta.detach().to(torch.float64).reshape(-1) if beta is not None else torch.zeros_like(gamma)
        return gamma, shift


# -- Eltwise ----------------------------------------------------------------------------------
class _EltwiseProd(torch.autograd.Function):
    """Product of the bottoms with Caffe's backward.

    With ``stable_prod_grad`` (the default) the gradient of bottom i is the product of the
    other bottoms; without it, top / bottom i (inf/NaN where bottom i is 0, as in Caffe).
    """

    @staticmethod
    def forward(ctx, stable: bool, *xs: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        top = xs[0] * xs[1]
        for x in xs[2:]:
            top = top * x
        ctx.stable = stable
        ctx.save_for_backward(top, *xs)
        return top

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        top, *xs = ctx.saved_tensors
        grads: list[torch.Tensor | None] = []
        for i, x in enumerate(xs):
            if not ctx.needs_input_grad[i + 1]:
                grads.append(None)
                continue
            if ctx.stable:
                others = [y for j, y in enumerate(xs) if j != i]
                factor = others[0]
                for y in others[1:]:
                    factor = factor * y
            else:
                factor = top / x
            grads.append(factor * grad)
        return (None, *grads)


def _eltwise_max(xs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Caffe's running max: bottom 1 wins a tie with bottom 0, later bottoms need to be larger.

    Built from ``torch.where`` so autograd routes each gradient to the winner only.
    """
    top = torch.where(xs[0] > xs[1], xs[0], xs[1])
    for x in xs[2:]:
        top = torch.where(x > top, x, top)
    return top


@register_layer("Eltwise", bottoms=(2, None))
class Eltwise(Layer):
    """Element-wise PROD, SUM (with one ``coeff`` per bottom) or MAX of same-shape bottoms.

    Caffe semantics: MAX ties between bottoms 0 and 1 go to bottom 1, later bottoms must be
    strictly larger; PROD's gradient is the product of the other bottoms (``stable_prod_grad``)
    or top/bottom. Pinned by golden ``Eltwise__max3``, ``Eltwise__prod``, ``Eltwise__sum_coeffs``.
    """

    keeps_layout = True

    def writable_top(self) -> bool:
        return self.param.eltwise_param.operation == caffe_pb2.EltwiseParameter.SUM

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: Sequence[Shape],
                 phase: int = TEST, where: Where | None = None):
        super().__init__(param, bottom_shapes, phase, where)
        ep = param.eltwise_param
        n = len(param.bottom) or len(self.bottom_shapes)
        if len(ep.coeff) not in (0, n):
            raise self.error(f"{len(ep.coeff)} coeff values for {n} bottoms; give one per bottom")
        if ep.coeff and ep.operation != caffe_pb2.EltwiseParameter.SUM:
            raise self.error("coeff is only allowed with operation: SUM")
        self.op: Callable[[Sequence[torch.Tensor]], torch.Tensor] = {
            caffe_pb2.EltwiseParameter.PROD: self._prod,
            caffe_pb2.EltwiseParameter.SUM: self._sum,
            caffe_pb2.EltwiseParameter.MAX: _eltwise_max,
        }[ep.operation]

    def _prod(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        return _EltwiseProd.apply(self.param.eltwise_param.stable_prod_grad, *xs)

    def _sum(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        coeffs = list(self.param.eltwise_param.coeff) or [1.0] * len(xs)
        top = xs[0] * coeffs[0] if coeffs[0] != 1.0 else xs[0]
        for c, x in zip(coeffs[1:], xs[1:]):
            top = top + (x * c if c != 1.0 else x)
        return top

    def _check(self, shapes: Sequence[Shape]) -> None:
        for i, shape in enumerate(shapes[1:], start=1):
            if tuple(shape) != tuple(shapes[0]):
                raise self.error(f"bottom {i} has shape {tuple(shape)}, bottom 0 has "
                                 f"{tuple(shapes[0])}; Eltwise needs equal shapes")

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        """The bottoms' common shape."""
        self._check(bottom_shapes)
        return [tuple(bottom_shapes[0])]

    def forward(self, *xs: torch.Tensor) -> list[torch.Tensor]:
        self._check([x.shape for x in xs])
        return [self.op(xs)]


# -- Softmax ----------------------------------------------------------------------------------
@register_layer("Softmax")
class Softmax(Layer):
    """Softmax over ``axis`` (default 1). Pinned by golden ``Softmax__axis1`` and ``__axis2``."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        axis = canonical_axis(self.param.softmax_param.axis, x.dim(), self)
        return [torch.softmax(x, dim=axis)]


# -- Reduction --------------------------------------------------------------------------------
_REDUCTIONS: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {
    caffe_pb2.ReductionParameter.SUM: lambda x: x.sum(-1),
    caffe_pb2.ReductionParameter.MEAN: lambda x: x.sum(-1),
    caffe_pb2.ReductionParameter.ASUM: lambda x: x.abs().sum(-1),
    caffe_pb2.ReductionParameter.SUMSQ: lambda x: (x * x).sum(-1),
}


@register_layer("Reduction")
class Reduction(Layer):
    """SUM, ASUM, SUMSQ or MEAN over all axes from ``axis`` on, times ``coeff``.

    Top shape: ``bottom.shape[:axis]`` (a scalar for axis 0). MEAN multiplies by
    ``coeff / count`` (reduction_layer.cpp). Pinned by golden ``Reduction__*``.
    """

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        rp = self.param.reduction_param
        axis = canonical_axis(rp.axis, x.dim(), self)
        dim = math.prod(x.shape[axis:])
        out = _REDUCTIONS[rp.operation](x.reshape(*x.shape[:axis], dim))
        coeff = rp.coeff / dim if rp.operation == caffe_pb2.ReductionParameter.MEAN else rp.coeff
        coeff = float(torch.tensor(coeff, dtype=torch.float32))  # Caffe keeps coeff as Dtype
        return [out * coeff if coeff != 1.0 else out]


# -- ArgMax -----------------------------------------------------------------------------------
@register_layer("ArgMax")
class ArgMax(Layer):
    """Indices (and optionally values) of the ``top_k`` largest entries; no backward.

    Without ``axis``: per item over all other axes, top shape ``(N, 1|2, top_k)`` padded with
    1s to the bottom's number of axes (values after the indices with ``out_max_val``). With
    ``axis``: the axis is replaced by ``top_k`` and holds values if ``out_max_val``, else
    indices. Caffe semantics: among equal values the larger index comes first. Pinned by
    golden ``ArgMax__*``.
    """

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: Sequence[Shape],
                 phase: int = TEST, where: Where | None = None):
        super().__init__(param, bottom_shapes, phase, where)
        if param.argmax_param.top_k < 1:
            raise self.error(f"top_k must be at least 1, got {param.argmax_param.top_k}")
        if self.bottom_shapes:
            self._span(self.bottom_shapes[0])

    def _span(self, shape: Shape) -> int:
        """Size of the searched dimension, checked against top_k."""
        ap = self.param.argmax_param
        if ap.HasField("axis"):
            size = shape[canonical_axis(ap.axis, len(shape), self)]
        else:
            size = math.prod(shape[1:])
        if ap.top_k > size:
            raise self.error(f"top_k {ap.top_k} is larger than the {size} values searched")
        return size

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        ap = self.param.argmax_param
        size = self._span(tuple(x.shape))
        k = ap.top_k
        data = x.detach()
        if ap.HasField("axis"):
            axis = canonical_axis(ap.axis, x.dim(), self)
            data = data.movedim(axis, -1)
        else:
            data = data.reshape(x.shape[0], size)
        # Sorting the reversed row stably puts the larger original index first among ties.
        values, order = torch.sort(data.flip(-1), dim=-1, descending=True, stable=True)
        values = values[..., :k]
        index = (size - 1 - order[..., :k]).to(x.dtype)
        if ap.HasField("axis"):
            return [(values if ap.out_max_val else index).movedim(-1, axis)]
        shape = [1] * max(x.dim(), 3)
        shape[0], shape[2] = x.shape[0], k
        if ap.out_max_val:
            shape[1] = 2
            return [torch.cat([index, values], dim=1).reshape(shape)]
        return [index.reshape(shape)]


# -- Embed ------------------------------------------------------------------------------------
@register_layer("Embed")
class Embed(Layer):
    """Looks up row ``index`` of a ``(input_dim, num_output)`` table for every bottom element.

    Top shape: ``bottom.shape + (num_output,)``; bias ``(num_output,)`` if ``bias_term``.
    Caffe semantics: indices are floats truncated to int; no gradient into the bottom.
    Pinned by golden ``Embed__k10_n4_bias`` (layer-level backward, params only).
    """

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: Sequence[Shape],
                 phase: int = TEST, where: Where | None = None):
        super().__init__(param, bottom_shapes, phase, where)
        ep = param.embed_param
        if ep.num_output <= 0 or ep.input_dim <= 0:
            raise self.error(f"num_output ({ep.num_output}) and input_dim ({ep.input_dim}) "
                             f"must be positive")
        self.add_blob((ep.input_dim, ep.num_output), ep.weight_filler)
        if ep.bias_term:
            self.add_blob((ep.num_output,), ep.bias_filler)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        ep = self.param.embed_param
        index = x.detach().to(torch.int64)
        if index.device.type != "meta" and index.numel():
            lo, hi = int(index.min()), int(index.max())
            if lo < 0 or hi >= ep.input_dim:
                raise self.error(f"index {lo if lo < 0 else hi} out of range [0, {ep.input_dim})")
        out = F.embedding(index, self.blobs[0])
        if ep.bias_term:
            out = out + self.blobs[1]
        return [out]
