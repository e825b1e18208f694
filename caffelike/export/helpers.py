"""Helper modules for the Caffe semantics plain torch lacks (the exported ``model.py`` copies them).

Each class here is written to stand alone: it imports torch only and uses no other name of
this package, because :mod:`caffelike.export.codegen` copies its source text into the
generated ``model.py`` and :func:`caffelike.export.to_torch` builds the very same class in
memory. Semantics follow BVLC Caffe (``src/caffe/layers/*.cpp``) as caffelike's layers do.
"""
from __future__ import annotations

import torch


class Pool2d(torch.nn.Module):
    """Caffe pooling (MAX or AVE) where torch's window rule differs from Caffe's.

    Caffe's output size is ceil (or floor) of (size + 2*pad - kernel) / stride, plus one, less
    one when any pad is set and the last window would start in the padding; windows are
    clipped to the image, MAX ignores the padding, AVE divides by the window clipped to
    size + pad.
    """

    def __init__(self, method: str, kernel_size: tuple, stride: tuple, padding: tuple, ceil_mode: bool = True):
        super().__init__()
        self.method, self.kernel_size, self.stride = method, tuple(kernel_size), tuple(stride)
        self.padding, self.ceil_mode = tuple(padding), ceil_mode

    def _out(self, size: int, axis: int) -> int:
        k, s, p = self.kernel_size[axis], self.stride[axis], self.padding[axis]
        span = size + 2 * p - k
        out = (-(-span // s) if self.ceil_mode else span // s) + 1
        if any(self.padding) and (out - 1) * s >= size + p:
            out -= 1
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        oh, ow = self._out(h, 0), self._out(w, 1)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        right_h = max(0, (oh - 1) * sh + kh - ph - h)
        right_w = max(0, (ow - 1) * sw + kw - pw - w)
        fill = float("-inf") if self.method == "MAX" else 0.0
        xp = torch.nn.functional.pad(x, (pw, right_w, ph, right_h), value=fill)
        if self.method == "MAX":
            return torch.nn.functional.max_pool2d(xp, self.kernel_size, self.stride)[..., :oh, :ow]
        sums = torch.nn.functional.avg_pool2d(xp, self.kernel_size, self.stride, divisor_override=1)
        rows = [min(o * sh - ph + kh, h + ph) - (o * sh - ph) for o in range(oh)]
        cols = [min(o * sw - pw + kw, w + pw) - (o * sw - pw) for o in range(ow)]
        div = torch.tensor(rows, dtype=x.dtype, device=x.device)[:, None] * \
            torch.tensor(cols, dtype=x.dtype, device=x.device)[None, :]
        return sums[..., :oh, :ow] / div


class LRNWithinChannel(torch.nn.Module):
    """Caffe LRN with norm_region WITHIN_CHANNEL: x * (1 + alpha/size^2 * window sum of x^2)^-beta,
    the window sum divided as Caffe's AVE pooling does (padded cells counted, clipped at size + pad)."""

    def __init__(self, size: int, alpha: float, beta: float):
        super().__init__()
        self.size, self.alpha, self.beta = size, alpha, beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean_sq = torch.nn.functional.avg_pool2d(x * x, self.size, 1, (self.size - 1) // 2, ceil_mode=True,
                                                 count_include_pad=True)
        return x * (1 + self.alpha * mean_sq).pow(-self.beta)


class Eltwise(torch.nn.Module):
    """Caffe Eltwise: SUM (one coefficient per input), PROD, or MAX (a tie between inputs 0 and 1
    goes to input 1; later inputs must be strictly larger)."""

    def __init__(self, operation: str, coeffs: tuple = ()):
        super().__init__()
        self.operation, self.coeffs = operation, tuple(coeffs)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if self.operation == "PROD":
            top = xs[0] * xs[1]
            for x in xs[2:]:
                top = top * x
            return top
        if self.operation == "MAX":
            top = torch.where(xs[0] > xs[1], xs[0], xs[1])
            for x in xs[2:]:
                top = torch.where(x > top, x, top)
            return top
        coeffs = self.coeffs or (1.0,) * len(xs)
        top = xs[0] * coeffs[0] if coeffs[0] != 1.0 else xs[0]
        for c, x in zip(coeffs[1:], xs[1:]):
            top = top + (x * c if c != 1.0 else x)
        return top


def _line_up(x: torch.Tensor, operand: torch.Tensor, axis: int) -> torch.Tensor:
    """``operand`` viewed to broadcast against ``x`` from ``axis`` on (Caffe's Scale/Bias rule)."""
    if operand.dim() == 0:
        return operand
    return operand.reshape((1,) * axis + tuple(operand.shape) + (1,) * (x.dim() - axis - operand.dim()))


class Scale(torch.nn.Module):
    """Caffe Scale: x * weight (+ bias), the parameters covering axes axis .. axis+len(shape)-1.

    With ``shape=None`` the scale is the second input (Caffe's two-bottom form); ``bias_shape``
    gives the learned bias (None: no bias).
    """

    def __init__(self, axis: int, shape: tuple | None, bias_shape: tuple | None = None):
        super().__init__()
        self.axis = axis
        self.weight = torch.nn.Parameter(torch.ones(shape)) if shape is not None else None
        self.bias = torch.nn.Parameter(torch.zeros(bias_shape)) if bias_shape is not None else None

    def forward(self, x: torch.Tensor, *scale: torch.Tensor) -> torch.Tensor:
        y = x * _line_up(x, scale[0] if scale else self.weight, self.axis)
        return y + _line_up(x, self.bias, self.axis) if self.bias is not None else y


class Bias(torch.nn.Module):
    """Caffe Bias: x + bias, the bias covering axes axis .. axis+len(shape)-1 (``shape=None``:
    the bias is the second input)."""

    def __init__(self, axis: int, shape: tuple | None):
        super().__init__()
        self.axis = axis
        self.bias = torch.nn.Parameter(torch.zeros(shape)) if shape is not None else None

    def forward(self, x: torch.Tensor, *bias: torch.Tensor) -> torch.Tensor:
        return x + _line_up(x, bias[0] if bias else self.bias, self.axis)


class FlattenLinear(torch.nn.Linear):
    """Caffe InnerProduct: the axes from ``axis`` on are flattened, then a Linear map."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, axis: int = 1):
        super().__init__(in_features, out_features, bias)
        self.axis = axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flatten(self.axis))


class Reshape(torch.nn.Module):
    """Caffe Reshape: axes start .. end-1 become ``shape`` (0 copies the input's dim, -1 is inferred)."""

    def __init__(self, shape: tuple, start: int, end: int | None):
        super().__init__()
        self.shape, self.start, self.end = tuple(shape), start, end

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        end = x.dim() if self.end is None else self.end
        dims = [x.shape[self.start + i] if d == 0 else d for i, d in enumerate(self.shape)]
        return x.reshape(*x.shape[:self.start], *dims, *x.shape[end:])


class Concat(torch.nn.Module):
    """Caffe Concat along ``axis``."""

    def __init__(self, axis: int):
        super().__init__()
        self.axis = axis

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=self.axis)


class Slice(torch.nn.Module):
    """Caffe Slice along ``axis``: at the slice points, or into ``parts`` equal pieces."""

    def __init__(self, axis: int, points: tuple = (), parts: int = 2):
        super().__init__()
        self.axis, self.points, self.parts = axis, tuple(points), parts

    def forward(self, x: torch.Tensor) -> tuple:
        return x.tensor_split(list(self.points) if self.points else self.parts, dim=self.axis)


class Crop(torch.nn.Module):
    """Caffe Crop: the first input cut to the second's size on every axis from ``axis`` on,
    starting at ``offsets`` (one per cropped axis)."""

    def __init__(self, axis: int, offsets: tuple):
        super().__init__()
        self.axis, self.offsets = axis, tuple(offsets)

    def forward(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        for i, offset in enumerate(self.offsets):
            x = x.narrow(self.axis + i, offset, reference.shape[self.axis + i])
        return x


class Power(torch.nn.Module):
    """Caffe Power: (shift + scale * x) ^ power."""

    def __init__(self, power: float, scale: float, shift: float):
        super().__init__()
        self.power, self.scale, self.shift = power, scale, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * self.scale + self.shift if (self.scale, self.shift) != (1.0, 0.0) else x
        return y.pow(self.power) if self.power != 1.0 else y


class Swish(torch.nn.Module):
    """Caffe Swish: x * sigmoid(beta * x)."""

    def __init__(self, beta: float):
        super().__init__()
        self.beta = beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.beta * x)


class AbsVal(torch.nn.Module):
    """Caffe AbsVal: |x|."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.abs()


# What a helper's source needs besides itself (copied before it into model.py).
SUPPORT: dict[type[torch.nn.Module], tuple] = {Scale: (_line_up,), Bias: (_line_up,)}
