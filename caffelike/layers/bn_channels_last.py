"""Training-mode batch normalisation of channels_last CPU tensors with few channels.

torch's CPU backward of ``batch_norm`` on a channels_last tensor whose channel count is not a
multiple of the vector width runs far slower than on the same tensor in NCHW (torch 2.13,
AVX-512, fwd+bwd: 96x24x24x24 5.7 ms vs 2.6 ms here, 96x12x24x24 7.3 vs 3.3, 96x8x24x24 4.4 vs
1.7; at 16, 32 or 48 channels, and from about 40 on, torch's own kernel wins). For those
tensors :func:`batch_norm_train` keeps torch's forward and computes the backward from
column sums over the ``(rows, channels)`` matrix an NHWC tensor is in memory, folded into
rows of a few hundred values so that each sum and product runs vectorised.

The gradient is the exact one of the forward (as Caffe's BatchNorm and Scale backward):
with x^ = (x - mean) * invstd over the m = N*H*W values of a channel,
``dx = w*invstd * (dy - sum(dy)/m - x^ * sum(dy*x^)/m)``, ``dw = sum(dy*x^)``, ``db = sum(dy)``.
"""
from __future__ import annotations

import torch

from .base import stored_nhwc

_ROW = 256  # values per folded row: a few AVX-512 vectors, whole channel groups


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
    """How many NHWC rows make one folded row: at most _ROW values, dividing ``rows``."""
    k = max(1, _ROW // channels)
    while rows % k:
        k -= 1
    return k


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
        n, c, h, w = x.shape
        rows = n * h * w
        k = _fold(rows, c)
        shape = (rows // k, k * c)
        grad = grad.contiguous(memory_format=torch.channels_last)
        x2, g2 = _folded(x, shape), _folded(grad, shape)
        centred = x2 - _tiled(mean, k)
        work = g2 * centred  # then dx, in the same memory
        # column sums of dy and dy*(x - mean), then over the k channel groups of a folded row
        dbias, dot = torch.stack((g2.sum(0), work.sum(0))).view(2, k, c).sum(1).unbind()
        dweight = dot * invstd
        dx = None
        if ctx.needs_input_grad[0]:
            gain = invstd if weight is None else weight * invstd
            scale = gain * (-1.0 / rows)
            # dx = gain*dy - gain*invstd^2*dot/m * (x - mean) - gain*dbias/m, per channel
            a, b, c0 = _tiled(torch.stack((gain, dweight * invstd * scale, dbias * scale)), k).unbind()
            dx = torch.addcmul(c0, g2, a, out=work).addcmul_(centred, b)
            dx = dx.as_strided(x.shape, x.stride())
        dweight = dweight if weight is not None and ctx.needs_input_grad[1] else None
        dbias = dbias if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, dweight, dbias, None, None, None


def _tiled(t: torch.Tensor, k: int) -> torch.Tensor:
    """``t``'s last axis (channels) repeated ``k`` times, as the folded rows hold them."""
    *lead, c = t.shape
    return t.unsqueeze(-2).expand(*lead, k, c).reshape(*lead, k * c)


def _folded(t: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The NHWC memory of a (N, C, H, W) tensor as a contiguous (rows, k*C) matrix."""
    return t.as_strided(shape, (shape[1], 1), t.storage_offset())
