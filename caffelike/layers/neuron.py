"""Neuron layers: element-wise functions of one bottom, top shaped like the bottom.

AbsVal, BNLL, Clip, Dropout, ELU, Exp, Log, Power, PReLU, ReLU, Sigmoid, Swish, TanH and
Threshold. Each forward follows the arithmetic of Caffe's ``Forward_cpu`` and each backward
is Caffe's ``Backward_cpu`` formula (not always the exact derivative: kinks at 0 use Caffe's
choice, Sigmoid/TanH/ELU/Exp differentiate through their output), written as a
:class:`_Pointwise` autograd function. Golden cases ``<Type>__*`` pin every layer.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from ..proto import caffe_pb2
from .base import TRAIN, Layer, Shape, register_layer

Tensor = torch.Tensor
# A backward rule: (bottom, top, top_diff) -> bottom_diff.
BackwardRule = Callable[[Tensor, Tensor, Tensor], Tensor]


class _Pointwise(torch.autograd.Function):
    """y = forward(x) with Caffe's backward rule ``rule(x, y, dy)``."""

    @staticmethod
    def forward(ctx, x: Tensor, fn: Callable[[Tensor], Tensor], rule: BackwardRule) -> Tensor:
        y = fn(x)
        ctx.save_for_backward(x, y)
        ctx.rule = rule
        return y

    @staticmethod
    def backward(ctx, dy: Tensor):
        x, y = ctx.saved_tensors
        return ctx.rule(x, y, dy), None, None


def pointwise(x: Tensor, fn: Callable[[Tensor], Tensor], rule: BackwardRule) -> Tensor:
    """Apply ``fn`` element-wise, differentiated by Caffe's ``rule``."""
    return _Pointwise.apply(x, fn, rule)


def caffe_sigmoid(x: Tensor) -> Tensor:
    """Caffe's sigmoid_layer.cpp form, 0.5*tanh(0.5x)+0.5 (saturates like Caffe's).

    Caffe evaluates it in double (its constants are double) and rounds once; on the CPU so do
    we, which reproduces Caffe's float32 bits. Elsewhere float32 (within 1 ulp).
    """
    if x.device.type == "cpu" and x.dtype == torch.float32:
        return (0.5 * torch.tanh(0.5 * x.double()) + 0.5).to(x.dtype)
    return 0.5 * torch.tanh(0.5 * x) + 0.5


def sigmoid_backward(y: Tensor, dy: Tensor) -> Tensor:
    """dy * y * (1 - y), rounded as Caffe's float/double mix is on the CPU."""
    if dy.device.type == "cpu" and dy.dtype == torch.float32:
        return ((dy * y).double() * (1.0 - y.double())).to(dy.dtype)
    return dy * y * (1.0 - y)


def _positive(x: Tensor) -> Tensor:
    return (x > 0).to(x.dtype)


def _non_positive(x: Tensor) -> Tensor:
    return (x <= 0).to(x.dtype)


class _NeuronLayer(Layer):
    """A one-bottom, one-top element-wise layer defined by ``fn`` and ``rule``."""

    keeps_layout = True

    def fn(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def rule(self, x: Tensor, y: Tensor, dy: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: Tensor) -> list[Tensor]:
        return [pointwise(x, self.fn, self.rule)]

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        """Element-wise: the top is shaped like the bottom."""
        return [tuple(bottom_shapes[0])]


@register_layer("AbsVal")
class AbsVal(_NeuronLayer):
    """|x|. Caffe semantics: gradient sign(x)*dy with sign(0) = 0; no in-place use
    (golden ``AbsVal__basic``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.param.top and self.param.bottom and self.param.top[0] == self.param.bottom[0]:
            raise self.error("AbsVal Layer does not allow in-place computation; "
                             "give the top a name different from the bottom")

    def fn(self, x: Tensor) -> Tensor:
        return torch.abs(x)

    def rule(self, x: Tensor, y: Tensor, dy: Tensor) -> Tensor:
        return torch.sign(x) * dy


@register_layer("ReLU")
class ReLU(_NeuronLayer):
    """max(x, 0) + negative_slope * min(x, 0).

    Caffe semantics: the gradient at exactly 0 is the negative slope (``x > 0`` test).
    Golden ``ReLU__slope0``, ``ReLU__slope0.1``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.negative_slope = float(self.param.relu_param.negative_slope)

    def fn(self, x: Tensor) -> Tensor:
        if self.negative_slope == 0.0:
            return torch.relu(x)
        return torch.nn.functional.leaky_relu(x, self.negative_slope)

    def forward(self, x: Tensor) -> list[Tensor]:
        # torch's own backward of relu/leaky_relu is Caffe's rule: dy where x > 0, else
        # negative_slope * dy (0 included); it runs in one kernel and saves no extra tensor.
        return [self.fn(x)]

    def fused_activation(self) -> float | None:
        return self.negative_slope


@register_layer("Sigmoid")
class Sigmoid(_NeuronLayer):
    """Logistic sigmoid as 0.5*tanh(0.5x)+0.5; gradient y(1-y)dy (golden ``Sigmoid__basic``)."""

    def fn(self, x: Tensor) -> Tensor:
        return caffe_sigmoid(x)

    def rule(self, x: Tensor, y: Tensor, dy: Tensor) -> Tensor:
        return sigmoid_backward(y, dy)


@register_layer("TanH")
class TanH(_NeuronLayer):
    """tanh(x); gradient (1-y^2)dy (golden ``TanH__basic``)."""

    def fn(self, x: Tensor) -> Tensor:
        return torch.tanh(x)

    def rule(self, x: Tensor, y: Tensor, dy: Tensor) -> Tensor:
        return dy * (1.0 - y * y)


# Above this input BNLL's backward stops growing exp(x) (kBNLL_THRESHOLD in bnll_layer.cpp).
_BNLL_THRESHOLD = 50.0


@register_layer("BNLL")
class BNLL(_NeuronLayer):
    """log(1 + exp(x)), evaluated stably in double as Caffe does (golden ``BNLL__basic``)."""

    # bnll_layer.cpp: exp of the float input, the rest in double, one rounding at the end.
    def fn(self, x: Tensor) -> Tensor:
        pos = x.double() + torch.log(1.0 + torch.exp(-x).double())
        neg = torch.log(1.0 + torch.exp(x).double())
        return torch.where(x > 0, pos, neg).to(x.dtype)

    def rule(self, x: Tensor, y: Tensor, dy: Tensor) -> Tensor:
        e = torch.exp(torch.clamp(x, max=_BNLL_THRESHOLD))
        return ((dy * e).double() / (e.double() + 1.0)).to(x.dtype)


@register_layer("ELU")
class ELU(_NeuronLayer):
    """max(x,0) + alpha*(exp(min(x,0)) - 1); gradient for x <= 0 is (alpha + y)dy.

    Golden ``ELU__alpha1``, ``ELU__alpha0.5``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.alpha = float(self.param.elu_param.alpha)

    def fn(self, x: Tensor) -> Tensor:
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        return torch.maximum(x, zero) + self.alpha * (torch.exp(torch.minimum(x, zero)) - 1.0)

    def rule(self, x: Tensor, y: Tensor, dy: Tensor) -> Tensor:
        return dy * (_positive(x) + (self.alpha + y) * _non_positive(x))


@register_layer("Clip")
class Clip(_NeuronLayer):
    """max(min, min(x, max)); the gradient passes where min <= x <= max (golden ``Clip__*``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        cp = self.param.clip_param
        self.lo = float(cp.min)
        self.hi = float(cp.max)

    def fn(self, x: Tensor) -> Tensor:
        return torch.clamp(x, min=self.lo, max=self.hi)

    def rule(self, x: Tensor, y: Tensor, dy: Tensor) -> Tensor:
        return dy * ((x >= self.lo) & (x <= self.hi)).to(dy.dtype)


@register_layer("Threshold")
class Threshold(Layer):
    """1 where x > threshold, else 0. Caffe has no backward for it (NOT_IMPLEMENTED)."""

    def forward(self, x: Tensor) -> list[Tensor]:
        t = float(self.param.threshold_param.threshold)
        return [(x.detach() > t).to(x.dtype)]


def _log_of_base(layer: Layer, base: float) -> float:
    """ln(base) with Caffe's convention that base -1 means e; base must be > 0 otherwise."""
    if base == -1.0:
        return 1.0
    if not base > 0:
        raise layer.error(f"base must be strictly positive (or -1 for e), got {base:g}")
    value = math.log(base)
    if value == 0.0:
        raise layer.error(f"log(base) = 0 for base {base:g}; expected a base other than 1")
    return value


def _scale_shift(x: Tensor, scale: float, shift: float) -> Tensor:
    """scale*x + shift, skipping the identity steps as Caffe does (same rounding)."""
    if scale != 1.0:
        x = x * scale
    if shift != 0.0:
        x = x + shift
    return x


def _f32(value: float) -> float:
    """Round a Python float to float32, as Caffe's Dtype members are stored."""
    return float(torch.tensor(value, dtype=torch.float32))


@register_layer("Exp")
class Exp(_NeuronLayer):
    """base^(shift + scale*x), computed as exp(ln(base)*scale*x) * base^shift.

    Base -1 means e. Gradient y * ln(base)*scale * dy. Golden ``Exp__default``,
    ``Exp__base2_s0.5_sh0.3``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        p = self.param.exp_param
        base, scale, shift = float(p.base), float(p.scale), float(p.shift)
        log_base = _f32(_log_of_base(self, base))
        self.inner_scale = _f32(log_base * _f32(scale))
        if shift == 0.0:
            self.outer_scale = 1.0
        else:
            self.outer_scale = _f32(math.exp(shift) if base == -1.0 else base ** shift)

    def fn(self, x: Tensor) -> Tensor:
        y = torch.exp(x if self.inner_scale == 1.0 else x * self.inner_scale)
        return y if self.outer_scale == 1.0 else y * self.outer_scale

    def rule(self, x: Tensor, y: Tensor, dy: Tensor) -> Tensor:
        g = y * dy
        return g if self.inner_scale == 1.0 else g * self.inner_scale


@register_layer("Log")
class Log(_NeuronLayer):
    """log_base(shift + scale*x) (base -1 = e); gradient scale/ln(base) / (shift + scale*x) * dy.

    Golden ``Log__default``, ``Log__base2_s0.5_sh1``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        p = self.param.log_param
        log_base = _f32(_log_of_base(self, float(p.base)))
        self.base_scale = _f32(1.0 / log_base)
        self.scale = float(p.scale)
        self.shift = float(p.shift)
        self.backward_scale = _f32(_f32(self.scale) / log_base)

    def _affine(self, x: Tensor) -> Tensor:
        return _scale_shift(x, self.scale, self.shift)

    def fn(self, x: Tensor) -> Tensor:
        y = torch.log(self._affine(x))
        return y if self.base_scale == 1.0 else y * self.base_scale

    def rule(self, x: Tensor, y: Tensor, dy: Tensor) -> Tensor:
        g = torch.reciprocal(self._affine(x))
        if self.backward_scale != 1.0:
            g = g * self.backward_scale
        return dy * g


@register_layer("Power")
class Power(_NeuronLayer):
    """(shift + scale*x)^power with Caffe's special cases in forward and backward.

    Caffe semantics: power or scale 0 gives a constant top and gradient power*scale (0);
    power 1 gives the constant gradient scale; power 2 uses 2*scale*(shift + scale*x);
    shift 0 uses power*y/x. Golden ``Power__p0.5``, ``Power__p1_s2_sh-1``, ``Power__p2_s0.5_sh1``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        p = self.param.power_param
        self.power = _f32(p.power)
        self.scale = _f32(p.scale)
        self.shift = _f32(p.shift)
        self.diff_scale = _f32(self.power * self.scale)

    def _affine(self, x: Tensor) -> Tensor:
        return _scale_shift(x, self.scale, self.shift)

    def fn(self, x: Tensor) -> Tensor:
        if self.diff_scale == 0.0:
            value = 1.0 if self.power == 0.0 else float(
                torch.pow(torch.tensor(self.shift, dtype=torch.float32), self.power))
            return torch.full_like(x, value)
        y = self._affine(x)
        if self.power != 1.0:
            y = torch.pow(y, self.power)
        return y if y is not x else x.clone()

    def rule(self, x: Tensor, y: Tensor, dy: Tensor) -> Tensor:
        if self.diff_scale == 0.0 or self.power == 1.0:
            g = torch.full_like(x, self.diff_scale)
            return g if self.diff_scale == 0.0 else dy * g
        if self.power == 2.0:
            g = x * _f32(self.diff_scale * self.scale)
            if self.shift != 0.0:
                g = g + _f32(self.diff_scale * self.shift)
        elif self.shift == 0.0:
            g = (y / x) * self.power
        else:
            g = y / self._affine(x)
            if self.diff_scale != 1.0:
                g = g * self.diff_scale
        return dy * g


@register_layer("Swish")
class Swish(Layer):
    """x * sigmoid(beta*x) (Caffe's tanh-form sigmoid); gradient beta*y + s*(1 - beta*y).

    Golden ``Swish__beta1``, ``Swish__beta0.5``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.beta = float(self.param.swish_param.beta)

    def forward(self, x: Tensor) -> list[Tensor]:
        return [_SwishFn.apply(x, self.beta)]


class _SwishFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, beta: float) -> Tensor:
        s = caffe_sigmoid(x * beta)
        y = x * s
        ctx.save_for_backward(s, y)
        ctx.beta = beta
        return y

    @staticmethod
    def backward(ctx, dy: Tensor):
        s, y = ctx.saved_tensors
        by = ctx.beta * y
        if dy.device.type == "cpu" and dy.dtype == torch.float32:  # Caffe's double constants
            inner = by.double() + s.double() * (1.0 - by.double())
            return (dy.double() * inner).to(dy.dtype), None
        return dy * (by + s * (1.0 - by)), None


@register_layer("Dropout")
class Dropout(Layer):
    """TRAIN: x * Bernoulli(1 - ratio) * 1/(1 - ratio); TEST: identity.

    Caffe semantics: the phase fixed at construction decides, not ``nn.Module.training``.
    Golden ``Dropout__test_r0.5``. ``scale_train: false`` (rbgirshick/caffe-fast-rcnn's
    dropout_layer.cpp) moves the scaling to TEST: TRAIN x * Bernoulli, TEST x * (1 - ratio).
    SegNet's ``sample_weights_test`` (alexgkendall/caffe-segnet, Bayesian SegNet) drops in
    TEST as in TRAIN.
    """

    keeps_layout = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        ratio = float(self.param.dropout_param.dropout_ratio)
        if not 0.0 <= ratio < 1.0:
            raise self.error(f"dropout_ratio {ratio:g} out of range; expected 0 <= ratio < 1")
        self.ratio = _f32(ratio)
        self.scale = _f32(1.0 / (1.0 - self.ratio))
        self.scale_train = bool(self.param.dropout_param.scale_train)
        self.drops = self.phase == TRAIN or self.param.dropout_param.sample_weights_test

    def forward(self, x: Tensor) -> list[Tensor]:
        if not self.drops:
            return [x.view_as(x) if self.scale_train else x * _f32(1.0 / self.scale)]
        if x.device.type == "meta":
            return [torch.empty_like(x)]
        keep = torch.rand(x.shape, device=x.device) >= self.ratio
        return [x * (keep.to(x.dtype) * self.scale if self.scale_train else keep.to(x.dtype))]


@register_layer("PReLU")
class PReLU(Layer):
    """max(x,0) + a_c * min(x,0) with a learned slope per channel (axis 1) or one shared.

    Blob: slopes ``(C,)``, or a 0-axis scalar with ``channel_shared``; filler default
    constant 0.25. Caffe semantics: gradients use ``x <= 0`` for the slope side.
    Golden ``PReLU__channelwise``, ``PReLU__channel_shared``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        p = self.param.prelu_param
        shape = self.bottom_shapes[0]
        if len(shape) < 2:
            raise self.error(f"bottom has shape {shape}; PReLU needs at least 2 axes")
        self.channel_shared = bool(p.channel_shared)
        filler = p.filler if p.HasField("filler") else caffe_pb2.FillerParameter(type="constant", value=0.25)
        self.add_blob(() if self.channel_shared else (shape[1],), filler)

    def forward(self, x: Tensor) -> list[Tensor]:
        if x.dim() < 2:
            raise self.error(f"bottom has shape {tuple(x.shape)}; PReLU needs at least 2 axes")
        return [_PReLUFn.apply(x, self.blobs[0])]

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        """The top is shaped like the bottom (no meta run: the base one cannot swap blobs)."""
        return [tuple(bottom_shapes[0])]


class _PReLUFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, slope: Tensor) -> Tensor:
        a = slope.reshape((1, -1) + (1,) * (x.dim() - 2)) if slope.dim() else slope
        ctx.save_for_backward(x, a)
        ctx.shared = slope.dim() == 0
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        return torch.maximum(x, zero) + a * torch.minimum(x, zero)

    @staticmethod
    def backward(ctx, dy: Tensor):
        x, a = ctx.saved_tensors
        neg = _non_positive(x)
        dx = dy * (_positive(x) + a * neg) if ctx.needs_input_grad[0] else None
        da = None
        if ctx.needs_input_grad[1]:
            per = dy * x * neg
            if ctx.shared:
                da = per.sum()
            else:
                dims = [0] + list(range(2, x.dim()))
                da = per.sum(dim=dims)
        return dx, da
