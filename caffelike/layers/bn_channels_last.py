"""Training-mode batch normalisation of channels_last CPU tensors with few channels.

torch's CPU backward of ``batch_norm`` on a channels_last tensor whose channel count is not a
multiple of the vector width runs far slower than on the same tensor in NCHW (torch 2.13,
AVX-512, fwd+bwd: 96x24x24x24 5.7 ms vs 2.6 ms here, 96x12x24x24 7.3 vs 3.3, 96x8x24x24 4.4 vs
1.7; at 16, 32 or 48 channels, and from about 40 on, torch's own kernel wins). For those
tensors :func:`batch_norm_train` keeps torch's forward and computes the backward on the
``(rows, channels)`` matrix an NHWC tensor is in memory, folded into rows of k channel groups
(a multiple of 16 values where the row count allows): seen as a (rows/k, k*C, 1, 1) tensor,
torch's inference-mode kernels run on it vectorised, one per-column pass for the two sums and
one for the affine part of dx.

The gradient is the exact one of the forward (as Caffe's BatchNorm and Scale backward):
with x^ = (x - mean) * invstd over the m = N*H*W values of a channel,
``dx = w*invstd * (dy - sum(dy)/m - x^ * sum(dy*x^)/m)``, ``dw = sum(dy*x^)``, ``db = sum(dy)``.
"""
from __future__ import annotations

import functools

import torch

from .base import stored_nhwc

_ROW = 256  # values per folded row at most: a few AVX-512 vectors, whole channel groups
_LANES = 16  # float32 values per AVX-512 vector


def wanted(x: torch.Tensor, weight: torch.Tensor | None) -> bool:
    """Whether :func:`batch_norm_train` should replace ``F.batch_norm`` for ``x``: a 4-axis
    float CPU tensor stored NHWC (not also NCHW) with fewer than 32 channels, not a multiple
    of 16, whose gradient autograd will want."""
    if x.dim() != 4 or x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return False
    channels = x.shape[1]
    if channels >= 32 or channels % 16 == 0 or not stored_nhwc(x):
        return False
    if weight is not None and weight.dtype != x.dtype:
        return False
    needs_grad = x.requires_grad or (weight is not None and weight.requires_grad)
    return needs_grad and torch.is_grad_enabled()


def batch_norm_train(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                     batch_mean: torch.Tensor, batch_var: torch.Tensor, eps: float) -> torch.Tensor:
    """``F.batch_norm(x, batch_mean, batch_var, weight, bias, training=True, momentum=1, eps)``
    with the backward above: ``batch_mean``/``batch_var`` receive the batch mean and unbiased
    variance, as torch's kernel leaves them with momentum 1."""
    return _ChannelsLastBatchNorm.apply(x, weight, bias, batch_mean, batch_var, eps)


def _fold(rows: int, channels: int) -> int:
    """How many NHWC rows make one folded row: at most _ROW values, dividing ``rows``; the
    largest such count whose row is a multiple of _LANES values, else the largest."""
    counts = [k for k in range(1, max(1, _ROW // channels) + 1) if rows % k == 0]
    whole = [k for k in counts if k * channels % _LANES == 0]
    return (whole or counts)[-1]


@functools.lru_cache(maxsize=64)
def _geometry(shape: tuple[int, ...], dtype: torch.dtype) -> tuple:
    """For an NHWC tensor of ``shape``: N*H*W, the fold k, the folded (rows/k, k*C, 1, 1) shape,
    k*C ones and C copies of -N*H*W (constants of the backward, made once)."""
    n, c, h, w = shape
    rows = n * h * w
    k = _fold(rows, c)
    return (rows, k, (rows // k, k * c, 1, 1), torch.ones(k * c, dtype=dtype),
            torch.full((c,), -float(rows), dtype=dtype))


class _ChannelsLastBatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, batch_mean, batch_var, eps):
        top, mean, invstd = torch.native_batch_norm(x, weight, bias, batch_mean, batch_var, True, 1.0, eps)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.has_bias = bias is not None
        return top

    @staticmethod
    def backward(ctx, grad):
        x, weight, mean, invstd = ctx.saved_tensors
        c = x.shape[1]
        rows, k, shape, ones, minus_rows = _geometry(tuple(x.shape), x.dtype)
        grad = grad.contiguous(memory_format=torch.channels_last)
        x4, g4 = _folded(x, shape), _folded(grad, shape)
        mean_k = mean.repeat(k)
        # inference-mode backward with unit variance: per column sum(dy*(x - mean)) and sum(dy)
        _, dot, dbias = torch.ops.aten.native_batch_norm_backward(
            g4, x4, None, mean_k, ones, None, None, False, 0.0, [False, True, True])
        dbias, dot = torch.stack((dbias, dot)).view(2, k, c).sum(1)  # over a row's k groups
        dweight = dot * invstd
        dx = None
        if ctx.needs_input_grad[0]:
            gain = invstd if weight is None else weight * invstd
            # dx = a*dy + b*(x - mean) + c0 per channel: a = gain, b = -gain*invstd*dweight/m,
            # c0 = -gain*dbias/m; b*(x - mean) + c0 is an inference-mode forward (unit variance)
            coef = torch.stack((dweight * invstd, dbias, minus_rows)).mul_(gain * (-1.0 / rows))
            b, c0, a = coef.repeat(1, k)
            dx = torch.native_batch_norm(x4, b, c0, mean_k, ones, False, 0.0, 0.0)[0]
            dx.view(shape[:2]).addcmul_(g4.view(shape[:2]), a)
            dx = dx.as_strided(x.shape, x.stride())
        dweight = dweight if weight is not None and ctx.needs_input_grad[1] else None
        dbias = dbias if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, dweight, dbias, None, None, None


def _folded(t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The NHWC memory of a (N, C, H, W) tensor as a contiguous (rows/k, k*C, 1, 1) tensor."""
    return t.as_strided(shape, (shape[1], 1, 1, 1), t.storage_offset())
