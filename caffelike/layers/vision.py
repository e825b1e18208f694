"""Vision layers: Convolution, Deconvolution, Im2col, Pooling and SPP.

Convolutions call torch's functional ops with keyword arguments; pooling is written out
because Caffe's window arithmetic differs from torch's (see :func:`pooled_size`,
:func:`max_pool`, :func:`ave_pool`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..fillers import fill
from ..proto import caffe_pb2
from .base import TRAIN, Layer, Shape, canonical_axis, register_layer
from .hole import fork_dilation
from .pool_bins import bin_geometry, has_bins

FLT_MAX = float(np.finfo(np.float32).max)

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_DECONV = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}

PoolMethod = caffe_pb2.PoolingParameter


# --------------------------------------------------------------------------------------------
# Convolution geometry (shared by Convolution, Deconvolution and Im2col)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConvGeometry:
    """Channel axis and per-spatial-axis kernel/stride/pad/dilation of a convolution_param."""

    axis: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    pad: tuple[int, ...]
    dilation: tuple[int, ...]

    @property
    def num_spatial(self) -> int:
        return len(self.kernel)

    def extent(self, i: int) -> int:
        return self.dilation[i] * (self.kernel[i] - 1) + 1

    def conv_out(self, in_dims: Sequence[int]) -> tuple[int, ...]:
        """Caffe's convolution output size per spatial axis (C integer division)."""
        return tuple(_c_div(d + 2 * self.pad[i] - self.extent(i), self.stride[i]) + 1
                     for i, d in enumerate(in_dims))

    def deconv_out(self, in_dims: Sequence[int]) -> tuple[int, ...]:
        """Caffe's deconvolution output size: stride*(in-1) + extent - 2*pad."""
        return tuple(self.stride[i] * (d - 1) + self.extent(i) - 2 * self.pad[i]
                     for i, d in enumerate(in_dims))


def _c_div(a: int, b: int) -> int:
    """Integer division truncating toward zero, as C's ``/``."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def _per_axis(layer: Layer, name: str, values: Sequence[int], n: int, default: int | None) -> tuple[int, ...]:
    """Caffe's 'once, or once per spatial axis' rule for a repeated field."""
    values = list(values)
    if not values:
        if default is None:
            raise layer.error(f"convolution_param needs {name} (or {name[:6]}_h and {name[:6]}_w)")
        return (default,) * n
    if len(values) == 1:
        return (values[0],) * n
    if len(values) != n:
        raise layer.error(f"{name} must be given once or once per spatial axis "
                          f"({len(values)} values for {n} spatial axes)")
    return tuple(values)


def _hw_or_repeated(layer: Layer, p: caffe_pb2.ConvolutionParameter, base: str, n: int,
                    default: int | None) -> tuple[int, ...]:
    """Read ``<base>_h/_w`` when set (2-D only), else the repeated ``<base>`` field."""
    field = "kernel_size" if base == "kernel" else base
    if p.HasField(f"{base}_h") or p.HasField(f"{base}_w"):
        if n != 2:
            raise layer.error(f"{base}_h and {base}_w can only be used for 2-D convolution "
                              f"({n} spatial axes here)")
        if len(getattr(p, field)):
            raise layer.error(f"give either {field} or {base}_h/{base}_w, not both")
        return (getattr(p, f"{base}_h"), getattr(p, f"{base}_w"))
    return _per_axis(layer, field, getattr(p, field), n, default)


def conv_geometry(layer: Layer, p: caffe_pb2.ConvolutionParameter, bottom_shape: Shape,
                  min_spatial: int = 0) -> ConvGeometry:
    """Parse a convolution_param against the first bottom's shape, with Caffe's checks."""
    axis = canonical_axis(p.axis, len(bottom_shape), layer)
    n = len(bottom_shape) - axis - 1
    if n < min_spatial:
        raise layer.error(f"needs at least {min_spatial} spatial axis after the channel axis "
                          f"{axis}; bottom shape is {tuple(bottom_shape)}")
    kernel = _hw_or_repeated(layer, p, "kernel", n, None)
    if any(k <= 0 for k in kernel):
        raise layer.error(f"kernel size must be > 0 on every spatial axis, got {kernel}")
    stride = _hw_or_repeated(layer, p, "stride", n, 1)
    if any(s <= 0 for s in stride):
        raise layer.error(f"stride must be > 0 on every spatial axis, got {stride}")
    pad = _hw_or_repeated(layer, p, "pad", n, 0)
    dilation = fork_dilation(layer, p, n) or _per_axis(layer, "dilation", p.dilation, n, 1)
    if any(d <= 0 for d in dilation):
        raise layer.error(f"dilation must be > 0 on every spatial axis, got {dilation}")
    return ConvGeometry(axis, kernel, stride, pad, dilation)


def _split_batch(x: torch.Tensor, axis: int) -> tuple[tuple[int, ...], torch.Tensor]:
    """View (outer..., C, spatial...) as (prod(outer), C, spatial...)."""
    outer = tuple(x.shape[:axis])
    return outer, x.reshape((math.prod(outer),) + tuple(x.shape[axis:]))


def _conv_im2col(x: torch.Tensor, weight: torch.Tensor, *, bias: torch.Tensor | None,
                 stride: tuple[int, ...], padding: tuple[int, ...], dilation: tuple[int, ...],
                 groups: int) -> torch.Tensor:
    """Convolution with any number of spatial axes: im2col, then one matmul per group."""
    g = ConvGeometry(1, tuple(weight.shape[2:]), stride, padding, dilation)
    cols = im2col(x, g)  # (N, C*K, out...)
    n, out_dims = cols.shape[0], tuple(cols.shape[2:])
    cols = cols.reshape(n, groups, -1, math.prod(out_dims))
    w = weight.reshape(groups, weight.shape[0] // groups, -1)
    y = torch.einsum("gok,ngkl->ngol", w, cols).reshape((n, weight.shape[0]) + out_dims)
    if bias is not None:
        y = y + bias.reshape((1, -1) + (1,) * len(out_dims))
    return y


class _ConvBase(Layer):
    """Common setup of Convolution and Deconvolution: geometry, groups, weight and bias blobs."""

    transposed = False

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: Sequence[Shape],
                 phase: int = TRAIN, where=None):
        super().__init__(param, bottom_shapes, phase, where)
        p = param.convolution_param
        self.geom = conv_geometry(self, p, self.bottom_shapes[0])
        n = self.geom.num_spatial
        if self.transposed and n not in _DECONV:
            raise self.error(f"{n}-D Deconvolution is not implemented (supported: 1 to 3 spatial "
                             f"axes after axis {self.geom.axis}); bottom shape {self.bottom_shapes[0]}")
        # torch has 1-3 spatial axes; other counts (0, or 4+) go through im2col like Caffe's N-D path.
        self._fn: Callable[..., torch.Tensor] = (_DECONV if self.transposed else _CONV).get(n, _conv_im2col)
        self.channels = self.bottom_shapes[0][self.geom.axis]
        self.num_output = p.num_output
        self.group = p.group
        if self.num_output <= 0:
            raise self.error("convolution_param.num_output must be > 0")
        if self.group <= 0 or self.channels % self.group:
            raise self.error(f"input channels ({self.channels}) must be a multiple of group ({self.group})")
        if self.num_output % self.group:
            raise self.error(f"num_output ({self.num_output}) must be a multiple of group ({self.group})")
        for i, s in enumerate(self.bottom_shapes[1:], 1):
            if tuple(s) != tuple(self.bottom_shapes[0]):
                raise self.error(f"all bottoms must have the same shape: bottom 0 is "
                                 f"{self.bottom_shapes[0]}, bottom {i} is {tuple(s)}")
        if self.transposed:
            wshape = (self.channels, self.num_output // self.group) + self.geom.kernel
        else:
            wshape = (self.num_output, self.channels // self.group) + self.geom.kernel
        self.bias_term = p.bias_term
        self._plain_2d = n == 2 and self.geom.axis == 1 and len(self.bottom_shapes[0]) == 4
        self._filled_blob(wshape, p.weight_filler)
        if self.bias_term:
            self._filled_blob((self.num_output,), p.bias_filler)

    def _filled_blob(self, shape: Shape, filler: caffe_pb2.FillerParameter) -> None:
        blob = self.add_blob(shape, None)
        fill(filler, blob.data, where=self.where)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        g = self.geom
        if self._plain_2d and x.dim() == 4 and x.shape[1] == self.channels:
            # The common case, without the generic path's reshapes; the blobs are read from the
            # ParameterList's dict (its __getitem__ costs microseconds, per layer and iteration).
            blobs = self.blobs._parameters
            return self._fn(x, blobs["0"], bias=blobs["1"] if self.bias_term else None,
                            stride=g.stride, padding=g.pad, dilation=g.dilation, groups=self.group)
        if x.dim() != len(self.bottom_shapes[0]) or x.shape[g.axis] != self.channels:
            raise self.error(f"input shape {tuple(x.shape)} does not fit the layer "
                             f"({self.channels} channels on axis {g.axis})")
        outer, x2 = _split_batch(x, g.axis)
        bias = self.blobs[1] if self.bias_term else None
        y = self._fn(x2, self.blobs[0], bias=bias, stride=g.stride, padding=g.pad,
                     dilation=g.dilation, groups=self.group)
        return y.reshape(outer + tuple(y.shape[1:]))

    def forward(self, *bottoms: torch.Tensor) -> list[torch.Tensor]:
        return [self._run(x) for x in bottoms]

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        """Caffe's output shapes, from the geometry alone (no forward needed)."""
        out = []
        for shape in bottom_shapes:
            a = self.geom.axis
            spatial = tuple(shape[a + 1:])
            dims = self.geom.deconv_out(spatial) if self.transposed else self.geom.conv_out(spatial)
            if len(spatial) != self.geom.num_spatial or shape[a] != self.channels or min(dims, default=1) <= 0:
                raise self.error(f"input shape {tuple(shape)} does not fit the layer ({self.channels} "
                                 f"channels on axis {a}, kernel {self.geom.kernel}, pad {self.geom.pad})")
            out.append(tuple(shape[:a]) + (self.num_output,) + dims)
        return out


@register_layer("Convolution", bottoms=(1, None), tops=(1, None))
class Convolution(_ConvBase):
    """Caffe Convolution: weight (out, in/group, k...), optional bias (out,); one top per bottom.

    Caffe semantics: output size ``(in + 2*pad - dilation*(k-1) - 1) / stride + 1`` (C
    division); ``axis`` picks the channel axis. Golden: ``Convolution__*``.
    """

    keeps_layout = True

    prefers_channels_last = True

    def fold_head(self) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        if self.geom.axis != 1:
            return None
        return self.blobs[0], (self.blobs[1] if self.bias_term else None)

    def run_folded(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        g = self.geom
        outer, x2 = _split_batch(x, g.axis)
        y = self._fn(x2, weight, bias=bias, stride=g.stride, padding=g.pad, dilation=g.dilation,
                     groups=self.group)
        return y.reshape(outer + tuple(y.shape[1:]))

    def writable_top(self) -> bool:
        return len(self.param.top) == 1

    def to_channels_last(self) -> bool:
        if not len(self.blobs) or self.blobs[0].dim() != 4:
            return False
        weight = self.blobs[0]
        weight.data = weight.data.contiguous(memory_format=torch.channels_last)
        return True


@register_layer("Deconvolution", bottoms=(1, None), tops=(1, None))
class Deconvolution(_ConvBase):
    """Caffe Deconvolution (transposed convolution): weight (in, out/group, k...).

    Caffe semantics: output ``stride*(in-1) + dilation*(k-1) + 1 - 2*pad``, i.e. torch's
    conv_transpose with no output padding. Golden: ``Deconvolution__*``.
    """

    transposed = True


def im2col(x: torch.Tensor, g: ConvGeometry) -> torch.Tensor:
    """Caffe's im2col for a (N, C, spatial...) tensor: (N, C*prod(k), out...).

    The column channel index is ``c*prod(k) + flat kernel offset`` (row-major over the kernel),
    zero padding included; differentiable (the backward is Caffe's col2im).
    """
    n = g.num_spatial
    pads: list[int] = []
    for p in reversed(g.pad):
        pads += [p, p]
    x = F.pad(x, pads) if any(g.pad) else x
    for i in range(n):
        x = x.unfold(2 + i, g.extent(i), g.stride[i])
        if g.dilation[i] != 1:
            x = x[..., :: g.dilation[i]]
    # x: (N, C, out_1..out_n, k_1..k_n) -> (N, C, k_1..k_n, out_1..out_n)
    perm = [0, 1] + [2 + n + i for i in range(n)] + [2 + i for i in range(n)]
    x = x.permute(perm)
    out_dims = tuple(x.shape[2 + n:])
    return x.reshape((x.shape[0], x.shape[1] * math.prod(g.kernel)) + out_dims)


@register_layer("Im2col")
class Im2col(Layer):
    """Caffe Im2col: the columns a convolution would multiply, as a blob.

    Shape (..., C*prod(kernel), out...). Caffe semantics: same geometry fields and output
    size as Convolution. Golden: ``Im2col__k3_p1``.
    """

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: Sequence[Shape],
                 phase: int = TRAIN, where=None):
        super().__init__(param, bottom_shapes, phase, where)
        self.geom = conv_geometry(self, param.convolution_param, self.bottom_shapes[0], min_spatial=1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outer, x2 = _split_batch(x, self.geom.axis)
        y = im2col(x2, self.geom)
        return [y.reshape(outer + tuple(y.shape[1:]))]


# --------------------------------------------------------------------------------------------
# Pooling
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PoolGeometry:
    """Kernel, stride and pad (each (h, w)) and rounding of one 2-D pooling."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int]
    ceil: bool = True

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        # Caffe drops a last window starting in the padding on both axes when ANY pad is set.
        drop = any(self.pad)
        return (pooled_size(h, self.kernel[0], self.stride[0], self.pad[0], self.ceil, drop),
                pooled_size(w, self.kernel[1], self.stride[1], self.pad[1], self.ceil, drop))


def pooled_size(size: int, kernel: int, stride: int, pad: int, ceil: bool = True,
                drop_padded_start: bool | None = None) -> int:
    """Caffe's pooled output length along one axis.

    ``ceil`` (CEIL round mode) or floor of ``(size + 2*pad - kernel)/stride``, plus one; then,
    when the layer has any padding, one less if the last window would start at or beyond
    ``size + pad``. Without padding no window is dropped, so an empty last window can exist.
    """
    span = size + 2 * pad - kernel
    out = (-(-span // stride) if ceil else span // stride) + 1
    if drop_padded_start is None:
        drop_padded_start = pad > 0
    if drop_padded_start and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _padded_input(x: torch.Tensor, g: PoolGeometry, out: tuple[int, int], value: float) -> torch.Tensor:
    """Pad so that every window [o*s - p, o*s - p + k) lies inside the tensor."""
    h, w = x.shape[-2:]
    right_h = max(0, (out[0] - 1) * g.stride[0] + g.kernel[0] - g.pad[0] - h)
    right_w = max(0, (out[1] - 1) * g.stride[1] + g.kernel[1] - g.pad[1] - w)
    if not (g.pad[0] or g.pad[1] or right_h or right_w):
        return x
    return F.pad(x, (g.pad[1], right_w, g.pad[0], right_h), value=value)


def _torch_windows_match(g: PoolGeometry, h: int, w: int, out: tuple[int, int]) -> bool:
    """Whether torch's ceil-mode pooling has exactly Caffe's windows (then it is used directly).

    torch drops a last window starting at or past ``size + pad`` even without padding, where
    Caffe keeps it (empty); otherwise the windows agree. torch also needs pad <= kernel/2.
    """
    if not g.ceil or 2 * g.pad[0] > g.kernel[0] or 2 * g.pad[1] > g.kernel[1]:
        return False
    for size, k, s, p, o in ((h, g.kernel[0], g.stride[0], g.pad[0], out[0]),
                             (w, g.kernel[1], g.stride[1], g.pad[1], out[1])):
        theirs = -(-(size + 2 * p - k) // s) + 1
        if (theirs - 1) * s >= size + p:
            theirs -= 1
        if theirs != o:
            return False
    return True


# Below this many channels NCHW pooling is as fast (measured with torch 2.13 on the CPU).
_CL_MIN_CHANNELS = 8


def _pooled_in_channels_last(pool: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``pool(x)``, run on a channels_last copy of ``x`` where that pays, the result back in NCHW.

    torch's CPU max/avg pooling kernels are several times faster on channels_last (they
    vectorise over channels) than on NCHW, more than the two layout copies cost; the values
    are the same. Only for inference (no autograd through the pooling) on the CPU, not while
    tracing (an ONNX export keeps the plain graph). An input already channels_last (after a
    convolution with channels_last weights, ``optimize=True``) is pooled and left so.
    """
    if x.device.type != "cpu" or x.dim() != 4 or x.shape[1] < _CL_MIN_CHANNELS or \
            (x.requires_grad and torch.is_grad_enabled()) or torch.jit.is_tracing() or \
            x.is_contiguous(memory_format=torch.channels_last):
        return pool(x)
    return pool(x.contiguous(memory_format=torch.channels_last)).contiguous()


def _floor_at_minus_flt_max(vals: torch.Tensor) -> torch.Tensor:
    """Caffe's max starts at -FLT_MAX: a window of -inf (or empty) gives -FLT_MAX. On the CPU
    a read-only check skips the two extra passes (and their backward) when nothing is below
    (NaN, which Caffe's strict ``>`` never picks, still takes the full path)."""
    if vals.device.type == "cpu" and vals.numel() and bool(vals.detach().amin() >= -FLT_MAX):
        return vals
    return torch.where(vals > -FLT_MAX, vals, -FLT_MAX)


def max_pool(x: torch.Tensor, g: PoolGeometry, with_mask: bool = True, floor: bool = True
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Caffe MAX pooling of (N, C, H, W): (values, argmax as a float flat index h*W+w).

    Windows are clipped to the image (padding never wins); the first maximum in row-major
    order is taken (strict ``>``), and the gradient goes only to it. A window with nothing
    above -FLT_MAX (e.g. an empty last window) gives -FLT_MAX and index -1. The index
    arithmetic costs as much as the pooling itself, so it runs only when ``with_mask``
    (otherwise the mask is None). ``floor=False``: the caller knows no value of ``x`` is
    below -FLT_MAX (a ReLU's output), so where torch's windows are Caffe's (none empty) the
    values are not read again for the floor (a NaN then stays NaN).
    """
    h, w = x.shape[-2:]
    out = g.out_size(h, w)
    if not with_mask and _torch_windows_match(g, h, w, out):
        vals = _pooled_in_channels_last(lambda t: F.max_pool2d(t, kernel_size=g.kernel, stride=g.stride,
                                                               padding=g.pad, ceil_mode=True), x)
        return (_floor_at_minus_flt_max(vals) if floor else vals), None
    xp = _padded_input(x, g, out, float("-inf"))
    if not with_mask:
        vals = _pooled_in_channels_last(lambda t: F.max_pool2d(t, kernel_size=g.kernel, stride=g.stride), xp)
        return _floor_at_minus_flt_max(vals[..., : out[0], : out[1]]), None
    vals, idx = F.max_pool2d(xp, kernel_size=g.kernel, stride=g.stride, return_indices=True)
    vals = vals[..., : out[0], : out[1]]
    idx = idx[..., : out[0], : out[1]]
    wp = xp.shape[-1]
    flat = (idx // wp - g.pad[0]) * w + (idx % wp - g.pad[1])
    found = vals > -FLT_MAX
    vals = torch.where(found, vals, -FLT_MAX)
    mask = torch.where(found, flat, -1).to(x.dtype)
    return vals, mask


def ave_divisor(size: int, kernel: int, stride: int, pad: int, out: int) -> list[int]:
    """Caffe's AVE window length per output: clipped to [-pad, size+pad), padding counted."""
    sizes = []
    for o in range(out):
        start = o * stride - pad
        end = min(start + kernel, size + pad)
        sizes.append(end - start)
    return sizes


def ave_pool(x: torch.Tensor, g: PoolGeometry) -> torch.Tensor:
    """Caffe AVE pooling of (N, C, H, W): window sum over the image / Caffe's divisor.

    The divisor counts padded cells but not cells past the padding; an empty window (pad 0,
    kernel < stride) divides 0 by 0 and gives NaN, as in Caffe.
    """
    h, w = x.shape[-2:]
    out = g.out_size(h, w)
    if g.kernel == (h, w) and not any(g.pad):  # global: a plain mean, fastest in NCHW
        return F.avg_pool2d(x, kernel_size=g.kernel, stride=g.stride, ceil_mode=True)
    if _torch_windows_match(g, h, w, out):
        # torch's ceil-mode divisor also counts padded cells and clips at size + pad: Caffe's.
        return _pooled_in_channels_last(lambda t: F.avg_pool2d(t, kernel_size=g.kernel, stride=g.stride,
                                                               padding=g.pad, ceil_mode=True,
                                                               count_include_pad=True), x)
    xp = _padded_input(x, g, out, 0.0)
    sums = F.avg_pool2d(xp, kernel_size=g.kernel, stride=g.stride, divisor_override=1)
    sums = sums[..., : out[0], : out[1]]
    dh = ave_divisor(h, g.kernel[0], g.stride[0], g.pad[0], out[0])
    dw = ave_divisor(w, g.kernel[1], g.stride[1], g.pad[1], out[1])
    div = torch.tensor(np.outer(dh, dw).astype(np.float32), device=x.device)
    return sums / div


def _pool_geometry(layer: Layer, p: caffe_pb2.PoolingParameter, shape: Shape) -> PoolGeometry:
    """Parse pooling_param with Caffe's checks (kernel_size XOR kernel_h+kernel_w, ...)."""
    has = p.HasField
    if p.global_pooling:
        if has("kernel_size") or has("kernel_h") or has("kernel_w"):
            raise layer.error("global_pooling: true takes no kernel size")
        kernel = (shape[2], shape[3])
    else:
        if has("kernel_size") == (has("kernel_h") and has("kernel_w")) or \
                (not has("kernel_size") and not (has("kernel_h") and has("kernel_w"))):
            raise layer.error("pooling_param needs kernel_size, or both kernel_h and kernel_w (not both forms)")
        kernel = (p.kernel_size,) * 2 if has("kernel_size") else (p.kernel_h, p.kernel_w)
    if not ((not has("pad") and has("pad_h") and has("pad_w")) or (not has("pad_h") and not has("pad_w"))):
        raise layer.error("pooling_param needs pad, or both pad_h and pad_w")
    if not ((not has("stride") and has("stride_h") and has("stride_w"))
            or (not has("stride_h") and not has("stride_w"))):
        raise layer.error("pooling_param needs stride, or both stride_h and stride_w")
    pad = (p.pad_h, p.pad_w) if has("pad_h") else (p.pad, p.pad)
    stride = (p.stride_h, p.stride_w) if has("stride_h") else (p.stride, p.stride)
    if min(kernel) <= 0:
        raise layer.error(f"pooling kernel must be > 0, got {kernel}")
    if min(stride) <= 0:
        raise layer.error(f"pooling stride must be > 0, got {stride}")
    if p.global_pooling and (any(pad) or stride != (1, 1)):
        raise layer.error("global_pooling: true allows only pad 0 and stride 1")
    if any(pad):
        if p.pool not in (PoolMethod.MAX, PoolMethod.AVE):
            raise layer.error("padding is implemented only for MAX and AVE pooling")
        if pad[0] >= kernel[0] or pad[1] >= kernel[1]:
            raise layer.error(f"pad {pad} must be smaller than the kernel {kernel}")
    # BVLC's round_mode and the forks' ceil_mode (false = floor) both choose the rounding;
    # either one asking for floor gives floor (a net sets at most one of them in practice).
    return PoolGeometry(kernel, stride, pad, p.round_mode == PoolMethod.CEIL and p.ceil_mode)


def check_pool_windows(layer: Layer, g: PoolGeometry, h: int, w: int) -> None:
    """Caffe's Reshape checks: at least one window, and with padding the last window must
    start inside the image or its leading pad (CHECK_LT after the decrement)."""
    oh, ow = g.out_size(h, w)
    if oh <= 0 or ow <= 0:
        raise layer.error(f"pooling a {h}x{w} input with kernel {g.kernel}, pad {g.pad} gives "
                          f"no output ({oh}x{ow}); the kernel must fit the padded input")
    if any(g.pad) and ((oh - 1) * g.stride[0] >= h + g.pad[0] or (ow - 1) * g.stride[1] >= w + g.pad[1]):
        raise layer.error(f"pooling a {h}x{w} input with kernel {g.kernel}, stride {g.stride}, "
                          f"pad {g.pad}: the last window starts in the padding (Caffe refuses this)")


def stochastic_pool(x: torch.Tensor, g: PoolGeometry, train: bool) -> torch.Tensor:
    """Caffe's (GPU-only) STOCHASTIC pooling: TRAIN samples a cell with probability
    proportional to its (non-negative) value; TEST outputs sum(x^2)/sum(x) per window."""
    h, w = x.shape[-2:]
    out = g.out_size(h, w)
    xp = _padded_input(x, g, out, 0.0)
    win = xp.unfold(2, g.kernel[0], g.stride[0]).unfold(3, g.kernel[1], g.stride[1])
    win = win[:, :, : out[0], : out[1]].flatten(-2)
    total = win.sum(-1)
    if not train:
        return torch.where(total > 0, (win * win).sum(-1) / total, torch.zeros_like(total))
    probs = (win / total.unsqueeze(-1)).detach().clamp_min(0).flatten(0, -2)
    pick = torch.multinomial(probs + (probs.sum(-1, keepdim=True) == 0), 1)
    return win.flatten(0, -2).gather(-1, pick).reshape(total.shape)


@register_layer("Pooling", tops=(1, 2))
class Pooling(Layer):
    """Caffe Pooling (MAX, AVE, STOCHASTIC) of a 4-axis (N, C, H, W) bottom.

    Caffe semantics: CEIL output size with the padded-last-window rule (:func:`pooled_size`),
    MAX picks the first maximum, AVE divides by the padded-clipped window size; an optional
    second top (MAX only) is the argmax mask. Golden: ``Pooling__*``. ParseNet's
    ``bin_size``/``bin_h``/``bin_w`` (:mod:`.pool_bins`) derive kernel, stride and pad from the bottom.
    """

    keeps_layout = True

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: Sequence[Shape],
                 phase: int = TRAIN, where=None):
        super().__init__(param, bottom_shapes, phase, where)
        p = param.pooling_param
        shape = self.bottom_shapes[0]
        if len(shape) != 4:
            raise self.error(f"Pooling needs a 4-axis (num, channels, height, width) bottom, got {shape}")
        self.pool = p.pool
        self.global_pooling = p.global_pooling
        self.bins = has_bins(p)
        self.geom = self._bin_geometry(shape) if self.bins else _pool_geometry(self, p, shape)
        if len(param.top) > 1 and self.pool != PoolMethod.MAX:
            raise self.error("only MAX pooling has a second (mask) top")
        check_pool_windows(self, self.geom, shape[2], shape[3])

    def _geometry(self, shape: Shape) -> PoolGeometry:
        if len(shape) != 4:
            raise self.error(f"Pooling needs a 4-axis bottom, got shape {tuple(shape)}")
        g = self.geom
        if self.bins:
            g = self._bin_geometry(shape)
        elif self.global_pooling:
            g = PoolGeometry((shape[2], shape[3]), g.stride, g.pad, g.ceil)
        return g

    def _bin_geometry(self, shape: Shape) -> PoolGeometry:
        p = self.param.pooling_param
        kernel, stride, pad = bin_geometry(self, p, shape[2], shape[3])
        return PoolGeometry(kernel, stride, pad, p.round_mode == PoolMethod.CEIL and p.ceil_mode)

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        """(N, C, pooled H, pooled W) for the top (and the MAX mask top, if any)."""
        shape = tuple(bottom_shapes[0])
        out = shape[:2] + self._geometry(shape).out_size(shape[2], shape[3])
        return [out] * max(1, len(self.param.top))

    def forward(self, x: torch.Tensor, floor: bool = True) -> list[torch.Tensor]:
        """``floor=False``: no value of ``x`` is below -FLT_MAX (see :func:`max_pool`)."""
        g = self._geometry(tuple(x.shape))
        if self.pool == PoolMethod.MAX:
            vals, mask = max_pool(x, g, with_mask=len(self.param.top) > 1, floor=floor)
            return [vals] if mask is None else [vals, mask.detach()]
        if self.pool == PoolMethod.AVE:
            return [ave_pool(x, g)]
        return [stochastic_pool(x, g, self.phase == TRAIN)]


# --------------------------------------------------------------------------------------------
# SPP
# --------------------------------------------------------------------------------------------
def spp_level_geometry(level: int, h: int, w: int) -> PoolGeometry:
    """Caffe's SPP pooling for pyramid level ``level``: 2^level bins per axis.

    kernel = ceil(size / bins), pad = (kernel*bins - size + 1) / 2 (integer), stride = kernel.
    """
    bins = 2 ** level
    kh, kw = -(-h // bins), -(-w // bins)
    ph, pw = (kh * bins - h + 1) // 2, (kw * bins - w + 1) // 2
    return PoolGeometry((kh, kw), (kh, kw), (ph, pw), True)


@register_layer("SPP")
class SPP(Layer):
    """Caffe spatial pyramid pooling: pool at 1, 2, 4, ... bins per axis, flatten, concat.

    Top (N, C * sum(4^l)); with pyramid_height 1 the single pooling output (N, C, 1, 1) is
    the top, as in Caffe. Golden: ``SPP__*``.
    """

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: Sequence[Shape],
                 phase: int = TRAIN, where=None):
        super().__init__(param, bottom_shapes, phase, where)
        p = param.spp_param
        shape = self.bottom_shapes[0]
        if len(shape) != 4:
            raise self.error(f"SPP needs a 4-axis (num, channels, height, width) bottom, got {shape}")
        if p.pyramid_height < 1:
            raise self.error("spp_param.pyramid_height must be >= 1")
        self.height = p.pyramid_height
        self.pool = {caffe_pb2.SPPParameter.MAX: PoolMethod.MAX,
                     caffe_pb2.SPPParameter.AVE: PoolMethod.AVE,
                     caffe_pb2.SPPParameter.STOCHASTIC: PoolMethod.STOCHASTIC}[p.pool]
        self._check_levels(shape[2], shape[3])

    def _check_levels(self, h: int, w: int) -> None:
        if h <= 0 or w <= 0:
            raise self.error(f"SPP input height and width must be > 0, got {h}x{w}")
        for level in range(self.height):
            g = spp_level_geometry(level, h, w)
            if g.pad[0] >= g.kernel[0] or g.pad[1] >= g.kernel[1]:
                raise self.error(f"pyramid level {level} needs pad {g.pad} >= kernel {g.kernel} "
                                 f"for a {h}x{w} input (Caffe refuses this); lower pyramid_height")
            check_pool_windows(self, g, h, w)

    def _pool(self, x: torch.Tensor, g: PoolGeometry) -> torch.Tensor:
        if self.pool == PoolMethod.MAX:
            return max_pool(x, g, with_mask=False)[0]
        if self.pool == PoolMethod.AVE:
            return ave_pool(x, g)
        return stochastic_pool(x, g, self.phase == TRAIN)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, w = x.shape[2], x.shape[3]
        if (h, w) != tuple(self.bottom_shapes[0][2:]):
            self._check_levels(h, w)
        pooled = [self._pool(x, spp_level_geometry(level, h, w)) for level in range(self.height)]
        if self.height == 1:
            return [pooled[0]]
        return [torch.cat([t.flatten(1) for t in pooled], dim=1)]
