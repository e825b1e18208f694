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



# -- fork layers (issue 16's types; each docstring names the fork it follows) --------------------
class Axpy(torch.nn.Module):
    """SENet's Axpy (hujie-frank/SENet axpy_layer.cpp): a * x + y, ``a`` one scale per sample
    and channel, shaped (N, C) or (N, C, 1, 1)."""

    def forward(self, a: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(y, a.reshape(tuple(a.shape[:2]) + (1,) * (x.dim() - 2)), x)


class ShuffleChannel(torch.nn.Module):
    """ShuffleNet's ShuffleChannel (farmingyard/ShuffleNet shuffle_channel_layer.cpp): channel
    ``i * (C/group) + j`` becomes channel ``j * group + i``; the top is 4-D."""

    def __init__(self, group: int):
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[0], x.shape[1]
        h = x.shape[2] if x.dim() > 2 else 1
        w = x.shape[3] if x.dim() > 3 else 1
        grid = x.reshape(n, self.group, c // self.group, h * w)
        return grid.transpose(1, 2).reshape(n, c, h, w)


class ReLU6(torch.nn.Module):
    """Caffe_Long's ReLU6 with a negative slope: min(max(x, 0) + slope * min(x, 0), 6)."""

    def __init__(self, negative_slope: float):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.clamp(x, min=0) + self.negative_slope * torch.clamp(x, max=0)
        return torch.clamp(y, max=6.0)


class Permute(torch.nn.Module):
    """SSD's Permute (weiliu89/caffe ssd permute_layer.cpp): top axis i is input axis order[i]."""

    def __init__(self, order: tuple):
        super().__init__()
        self.order = tuple(order)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(self.order).contiguous()


class Normalize(torch.nn.Module):
    """SSD's Normalize (weiliu89/caffe ssd normalize_layer.cpp): x / sqrt(sum x^2 + eps) over
    each sample (``across_spatial``) or over the channels of each position, times a learned
    scale (one shared value, shape (), or one per channel)."""

    def __init__(self, channels: int, across_spatial: bool, channel_shared: bool, eps: float):
        super().__init__()
        self.across_spatial, self.channel_shared, self.eps = across_spatial, channel_shared, eps
        self.weight = torch.nn.Parameter(torch.ones(() if channel_shared else (channels,)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], x.shape[1], -1)
        dims = (1, 2) if self.across_spatial else (1,)
        norm = torch.sqrt((flat * flat).sum(dim=dims, keepdim=True) + self.eps)
        scale = self.weight.reshape(1, 1, 1) if self.channel_shared else self.weight.reshape(1, -1, 1)
        return (flat / norm * scale).reshape(x.shape)


def _interp_axis(size_in: int, size_out: int, dtype: torch.dtype, device: torch.device) -> tuple:
    """PSPNet's sampling of one axis (interp.cpp), in float32: indices i0, i1 and weights l0, l1."""
    if size_out > 1:
        ratio = torch.tensor(float(size_in - 1), dtype=torch.float32) / \
            torch.tensor(float(size_out - 1), dtype=torch.float32)
    else:
        ratio = torch.tensor(0.0, dtype=torch.float32)
    pos = ratio * torch.arange(size_out, dtype=torch.float32)
    i0 = pos.to(torch.int64)
    i1 = i0 + (i0 < size_in - 1).to(torch.int64)
    l1 = (pos - i0.to(torch.float32)).to(dtype)
    return i0.to(device), i1.to(device), (1 - l1).to(device), l1.to(device)


class Interp(torch.nn.Module):
    """PSPNet's Interp (hszhao/PSPNet interp_layer.cpp): crop by pad_beg/pad_end (<= 0), then
    bilinear resizing with aligned corners to ``height`` x ``width``, or to the size that
    shrink (first) and zoom give (None: unset)."""

    def __init__(self, pad_beg: int = 0, pad_end: int = 0, shrink: int | None = None,
                 zoom: int | None = None, height: int | None = None, width: int | None = None):
        super().__init__()
        self.pad_beg, self.pad_end, self.shrink, self.zoom = pad_beg, pad_end, shrink, zoom
        self.height, self.width = height, width

    def _out(self, h: int, w: int) -> tuple[int, int]:
        if self.height is not None:
            return self.height, self.width
        if self.shrink is not None:
            h, w = (h - 1) // self.shrink + 1, (w - 1) // self.shrink + 1
        if self.zoom is not None:
            h, w = h + (h - 1) * (self.zoom - 1), w + (w - 1) * (self.zoom - 1)
        return h, w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2], x.shape[3]
        x = x[:, :, -self.pad_beg:h + self.pad_end, -self.pad_beg:w + self.pad_end]
        h_in, w_in = x.shape[2], x.shape[3]
        h_out, w_out = self._out(h_in, w_in)
        if (h_in, w_in) == (h_out, w_out):
            return x
        hi0, hi1, h0, h1 = _interp_axis(h_in, h_out, x.dtype, x.device)
        wi0, wi1, w0, w1 = _interp_axis(w_in, w_out, x.dtype, x.device)
        top, bottom = x.index_select(2, hi0), x.index_select(2, hi1)
        h0, h1 = h0[:, None], h1[:, None]
        return h0 * (w0 * top.index_select(3, wi0) + w1 * top.index_select(3, wi1)) + \
            h1 * (w0 * bottom.index_select(3, wi0) + w1 * bottom.index_select(3, wi1))


class UpsampleNearest(torch.nn.Module):
    """The YOLO forks' one-bottom Upsample: each value repeated in a scale x scale block."""

    def __init__(self, scale: int):
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(self.scale, dim=2).repeat_interleave(self.scale, dim=3)


class Reorg(torch.nn.Module):
    """YOLOv2's Reorg (darknet reorg_cpu, as in the MobileNet-YOLO fork): the input's memory is
    read through darknet's index walk of the input's (C, H, W) grid; (N, C*s*s, H/s, W/s), or
    the inverse mapping with ``reverse`` (N, C/(s*s), H*s, W*s)."""

    def __init__(self, stride: int, reverse: bool = False):
        super().__init__()
        self.stride, self.reverse = stride, reverse

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        s = self.stride
        out_c = c // (s * s)
        k = torch.arange(c, device=x.device).view(-1, 1, 1)
        j = torch.arange(h, device=x.device).view(1, -1, 1)
        i = torch.arange(w, device=x.device).view(1, 1, -1)
        offset = k // out_c
        t = (i * s + offset % s + w * s * (j * s + offset // s + h * s * (k % out_c))).reshape(-1)
        index = torch.argsort(t) if self.reverse else t
        top = (out_c, h * s, w * s) if self.reverse else (c * s * s, h // s, w // s)
        return x.reshape(n, -1)[:, index].reshape((n,) + top)


class PriorBox(torch.nn.Module):
    """SSD's PriorBox (weiliu89/caffe ssd prior_box_layer.cpp): the default boxes of the first
    input's H x W grid, (1, 2, H*W*len(sizes)*4): boxes, then variances. ``sizes`` are the
    (width, height) of the boxes of one cell in the fork's order; centres ``(i + offset) * step``
    (step: image size / grid size unless given), the image size from the second input unless
    given; float32 centres, float64 corners rounded to float32, as the fork."""

    def __init__(self, sizes: tuple, variances: tuple, offset: float, step: tuple = (0.0, 0.0),
                 img_size: tuple = (0, 0), clip: bool = False):
        super().__init__()
        self.sizes, self.variances, self.offset = tuple(sizes), tuple(variances), offset
        self.step, self.img_size, self.clip = tuple(step), tuple(img_size), clip

    def forward(self, feature: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        f32, f64 = torch.float32, torch.float64
        layer_h, layer_w = feature.shape[2], feature.shape[3]
        img_h, img_w = self.img_size if self.img_size[0] and self.img_size[1] else image.shape[2:4]
        if self.step[0] and self.step[1]:
            step_h, step_w = (torch.tensor(v, dtype=f32) for v in self.step)
        else:
            step_h = torch.tensor(float(img_h), dtype=f32) / torch.tensor(float(layer_h), dtype=f32)
            step_w = torch.tensor(float(img_w), dtype=f32) / torch.tensor(float(layer_w), dtype=f32)
        offset = torch.tensor(self.offset, dtype=f32)
        x = ((torch.arange(layer_w, dtype=f32) + offset) * step_w).to(f64)[None, :, None]
        y = ((torch.arange(layer_h, dtype=f32) + offset) * step_h).to(f64)[:, None, None]
        bw = torch.tensor([s[0] for s in self.sizes], dtype=f64) / 2.0
        bh = torch.tensor([s[1] for s in self.sizes], dtype=f64) / 2.0
        shape = (layer_h, layer_w, len(self.sizes))
        boxes = torch.stack([((x - bw) / img_w).expand(shape), ((y - bh) / img_h).expand(shape),
                             ((x + bw) / img_w).expand(shape), ((y + bh) / img_h).expand(shape)], dim=-1)
        boxes = boxes.to(f32).reshape(-1)
        if self.clip:
            boxes = boxes.clamp(0.0, 1.0)
        variances = torch.tensor(self.variances, dtype=f32).repeat(boxes.numel() // len(self.variances))
        return torch.stack([boxes, variances])[None].to(device=feature.device, dtype=feature.dtype)


# What a helper's source needs besides itself (copied before it into model.py).
SUPPORT: dict[type[torch.nn.Module], tuple] = {Scale: (_line_up,), Bias: (_line_up,), Interp: (_interp_axis,)}
