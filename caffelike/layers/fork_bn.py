"""The forks' ``BN`` layer (batch normalisation with its own scale and shift), in two variants.

* SegNet/ENet (alexgkendall/caffe-segnet and TimoSaemann/caffe-enet ``bn_layer.cpp``, both
  from ChenglongChen/batch_normalization, whose V1 ``layers { type: BN }`` lim0606's
  GoogLeNet-BN nets use): 2 blobs, scale and shift of shape (1, C, 1, 1); ``bn_mode`` LEARN
  normalises with the batch's statistics, INFERENCE applies only ``scale * x + shift`` (the
  statistics are folded into the blobs beforehand by SegNet's ``compute_bn_statistics.py``).
* PSPNet (hszhao/PSPNet ``bn_layer.cpp``): 4 blobs, slope, bias, moving mean, moving variance
  (each (1, C, 1, 1)); ``frozen`` or the TEST phase use the stored statistics; TRAIN uses the
  batch's and updates the stored ones with ``momentum``.

The variant is chosen from ``bn_param``: any of PSPNet's fields (slope_filler, bias_filler,
momentum, eps, frozen, engine) selects PSPNet's; otherwise SegNet's (also without a
``bn_param``: the corpus nets that omit it are SegNet/ENet/lim0606 nets). Both kinds of field
together are an error.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..proto import caffe_pb2
from .base import TEST, TRAIN, Layer, Shape, register_layer

Tensor = torch.Tensor

PSPNET_FIELDS = ("slope_filler", "bias_filler", "momentum", "eps", "frozen", "engine")
SEGNET_FIELDS = ("scale_filler", "shift_filler", "bn_mode")
SEGNET_EPS = 1e-9  # SegNet/ENet's var_eps_ (ChenglongChen's original used 1e-10)


def _channel_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and E(x^2) - mean^2 over (N, H, W), shaped (1, C, 1, 1): the forks' batch statistics."""
    dims = [0] + list(range(2, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    return mean, (x * x).mean(dim=dims, keepdim=True) - mean * mean


@register_layer("BN", bottoms=1, tops=(1, 3))
class BN(Layer):
    """Fork batch normalisation with learned scale/shift (SegNet/ENet/lim0606 or PSPNet; see module).

    SegNet/ENet semantics: LEARN gives ``scale * (x - mean) / sqrt(var + 1e-9) + shift`` with the
    batch's mean and biased variance (E(x^2) - mean^2) per channel, whatever the phase; tops 2
    and 3 (optional) are that mean and variance (1, C, 1, 1), the variance without eps (zeros
    in INFERENCE). INFERENCE gives ``scale * x + shift``. Backward: the exact gradient of either.

    PSPNet semantics: ``slope * (x - mean) / sqrt(var + eps) + bias``; in TRAIN without
    ``frozen`` the batch mean and biased variance, each folded into its blob as
    ``blob = momentum * blob + (1 - momentum) * batch``; else the blobs. The blobs 2 and 3 get
    lr_mult and decay_mult 0, and with ``frozen`` blobs 0 and 1 too (the fork rewrites its
    param specs); a new variance blob is 1 when frozen, else 0. Backward (frozen):
    ``dy * slope / sqrt(var + eps)``; otherwise the exact gradient of the batch formula.
    Tests: tests/layers/test_fork_bn.py (fork formulas, gradcheck).
    """

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: Sequence[Shape],
                 phase: int = TEST, where=None):
        super().__init__(param, bottom_shapes, phase, where)
        p = param.bn_param
        psp = [f for f in PSPNET_FIELDS if p.HasField(f)]
        seg = [f for f in SEGNET_FIELDS if p.HasField(f)]
        if psp and seg:
            raise self.error(f"bn_param mixes SegNet/ENet fields ({', '.join(seg)}) with PSPNet "
                             f"fields ({', '.join(psp)}); a BN layer follows one fork")
        shape = self.bottom_shapes[0]
        if len(shape) < 2:
            raise self.error(f"BN needs a bottom with a channel axis, got shape {shape}")
        self.pspnet = bool(psp)
        channels = int(shape[1])
        blob = (1, channels, 1, 1)
        if self.pspnet:
            if len(param.top) > 1:
                raise self.error("PSPNet's BN has exactly one top")
            self.frozen, self.momentum = bool(p.frozen), float(np.float32(p.momentum))
            self.eps = float(np.float32(p.eps))
            self.add_blob(blob, p.slope_filler)
            self.add_blob(blob, p.bias_filler)
            self.add_blob(blob, None, requires_grad=False)
            variance = self.add_blob(blob, None, requires_grad=False)
            if self.frozen:
                variance.data.fill_(1.0)
        else:
            self.learn = p.bn_mode == caffe_pb2.BNParameter.LEARN
            self.add_blob(blob, p.scale_filler)
            self.add_blob(blob, p.shift_filler)

    def set_up_param(self, param: caffe_pb2.LayerParameter) -> None:
        """PSPNet's LayerSetUp rewrites its param specs: statistics (and, frozen, all) blobs fixed."""
        if not self.pspnet:
            return
        while len(param.param) < 4:
            param.param.add()
        for index in (0, 1, 2, 3) if self.frozen else (2, 3):
            param.param[index].lr_mult = 0.0
            param.param[index].decay_mult = 0.0

    def affine(self, channels: int) -> tuple[Tensor, Tensor] | None:
        """Per-channel ``(scale, shift)`` in float64 where this BN is an affine map (deploy
        folding): SegNet's INFERENCE (its blobs), PSPNet's stored statistics (TEST or frozen:
        ``slope / sqrt(var + eps)`` and ``bias - mean * that``); None with batch statistics or
        statistics tops."""
        if len(self.param.top) > 1 or self.blobs[0].shape[1] != channels:
            return None
        blobs = [b.detach().to(torch.float64).reshape(-1) for b in self.blobs]
        if self.pspnet:
            if not self.frozen and self.phase == TRAIN:
                return None
            slope, bias, mean, var = blobs
            scale = slope / torch.sqrt(var + self.eps)
            return scale, bias - mean * scale
        return None if self.learn else (blobs[0], blobs[1])

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        stats = (1, int(bottom_shapes[0][1]), 1, 1)
        return [tuple(bottom_shapes[0])] + [stats] * (len(self.param.top) - 1)

    def forward(self, x: Tensor) -> list[Tensor]:
        shape = (1, x.shape[1]) + (1,) * (x.dim() - 2)
        if self.pspnet:
            return [self._pspnet(x, *(b.reshape(shape) for b in self.blobs))]
        scale, shift = (b.reshape(shape) for b in self.blobs)
        if not self.learn:
            zeros = x.new_zeros(shape)
            return [x * scale + shift] + [zeros] * (len(self.param.top) - 1)
        mean, var = _channel_stats(x)
        top = (x - mean) / torch.sqrt(var + SEGNET_EPS) * scale + shift
        return [top, mean.detach(), var.detach()][:len(self.param.top)]  # no gradient from tops 2-3

    def _pspnet(self, x: Tensor, slope: Tensor, bias: Tensor, mean: Tensor, var: Tensor) -> Tensor:
        if self.frozen or self.phase != TRAIN:
            mean, var = mean.detach(), var.detach()
        else:
            dims = [0] + list(range(2, x.dim()))
            batch_mean = x.mean(dim=dims, keepdim=True)
            centred = x - batch_mean
            batch_var = (centred * centred).mean(dim=dims, keepdim=True)
            self._fold(batch_mean, batch_var)
            mean, var = batch_mean, batch_var
        return (x - mean) * torch.rsqrt(var + self.eps) * slope + bias

    @torch.no_grad()
    def _fold(self, mean: Tensor, var: Tensor) -> None:
        """PSPNet's moving averages: ``blob = momentum * blob + (1 - momentum) * batch``."""
        if mean.device.type == "meta":
            return
        for blob, stat in ((self.blobs[2], mean), (self.blobs[3], var)):
            blob.mul_(self.momentum).add_(stat.detach().reshape(blob.shape).to(blob.dtype),
                                          alpha=1.0 - self.momentum)
