"""Caffe's weight fillers (include/caffe/filler.hpp), as a registry of small functions.

``fill(filler_param, tensor)`` fills a float32 tensor in place the way Caffe's ``GetFiller``
would. Caffe's fan definitions are used throughout: ``fan_in = count / shape[0]`` and
``fan_out = count / shape[1]`` (``count`` for a 1-axis blob). Random draws come from torch
(the global generator unless one is passed): Caffe's boost mt19937 stream cannot be
reproduced, only its distributions.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from .errors import LayerError, Where
from .proto import caffe_pb2
from .registry import Registry

FillerFn = Callable[[caffe_pb2.FillerParameter, torch.Tensor, "torch.Generator | None"], None]

FILLERS: Registry[FillerFn] = Registry("filler type", LayerError)

_VarianceNorm = caffe_pb2.FillerParameter


class _FillerError(Exception):
    """Internal: a filler's precondition failed; turned into a located LayerError by fill()."""


def fan_in_out(shape: tuple[int, ...]) -> tuple[int, int]:
    """Caffe's (fan_in, fan_out) of a blob shape: count/shape[0], count/shape[1]."""
    count = math.prod(shape)
    fan_in = count // shape[0]
    fan_out = count // shape[1] if len(shape) > 1 else count
    return fan_in, fan_out


def _fan(param: caffe_pb2.FillerParameter, shape: tuple[int, ...]) -> float:
    """The ``n`` of xavier/msra: fan_in, fan_out or their mean, by ``variance_norm``."""
    fan_in, fan_out = fan_in_out(shape)
    if param.variance_norm == _VarianceNorm.AVERAGE:
        return (fan_in + fan_out) / 2.0
    if param.variance_norm == _VarianceNorm.FAN_OUT:
        return float(fan_out)
    return float(fan_in)


def _no_sparse(param: caffe_pb2.FillerParameter) -> None:
    if param.sparse != -1:
        raise _FillerError(f"filler '{param.type}' does not support sparse (got sparse: {param.sparse}); "
                           "only gaussian does")


def _uniform(t: torch.Tensor, low: float, high: float, gen: torch.Generator | None) -> None:
    if low > high:
        raise _FillerError(f"uniform filler needs min <= max, got min {low} > max {high}")
    t.uniform_(low, high, generator=gen)


def _gaussian_draw(t: torch.Tensor, mean: float, std: float, gen: torch.Generator | None) -> None:
    if not std > 0:
        raise _FillerError(f"gaussian filler needs std > 0, got {std}")
    t.normal_(mean, std, generator=gen)


@FILLERS.decorator("constant")
def constant(param: caffe_pb2.FillerParameter, t: torch.Tensor, gen: torch.Generator | None) -> None:
    """Every element = ``value`` (default 0)."""
    t.fill_(param.value)
    _no_sparse(param)


@FILLERS.decorator("uniform")
def uniform(param: caffe_pb2.FillerParameter, t: torch.Tensor, gen: torch.Generator | None) -> None:
    """U(min, max)."""
    _uniform(t, param.min, param.max, gen)
    _no_sparse(param)


@FILLERS.decorator("gaussian")
def gaussian(param: caffe_pb2.FillerParameter, t: torch.Tensor, gen: torch.Generator | None) -> None:
    """N(mean, std); with ``sparse >= 0`` each weight is kept with probability sparse/shape[0]."""
    _gaussian_draw(t, param.mean, param.std, gen)
    if param.sparse < -1:
        raise _FillerError(f"gaussian filler needs sparse >= -1, got {param.sparse}")
    if param.sparse >= 0:
        if t.dim() < 1:
            raise _FillerError("sparse gaussian filler needs a blob with at least one axis")
        p = float(np.float32(param.sparse) / np.float32(t.shape[0]))
        if p > 1:
            raise _FillerError(f"sparse gaussian filler: sparse {param.sparse} exceeds "
                               f"num_output {t.shape[0]} (keep probability must be <= 1)")
        keep = torch.empty_like(t).bernoulli_(p, generator=gen)
        t.mul_(keep)


@FILLERS.decorator("positive_unitball")
def positive_unitball(param: caffe_pb2.FillerParameter, t: torch.Tensor,
                      gen: torch.Generator | None) -> None:
    """U(0, 1), then each shape[0] row divided by its sum (rows sum to 1)."""
    t.uniform_(0.0, 1.0, generator=gen)
    rows = t.view(t.shape[0], -1)
    if rows.shape[1] == 0:
        raise _FillerError("positive_unitball filler needs count/shape[0] > 0")
    rows.div_(rows.sum(dim=1, keepdim=True))
    _no_sparse(param)


@FILLERS.decorator("xavier")
def xavier(param: caffe_pb2.FillerParameter, t: torch.Tensor, gen: torch.Generator | None) -> None:
    """U(-a, a) with a = sqrt(3/n), n from ``variance_norm`` (Glorot & Bengio)."""
    scale = float(np.sqrt(np.float32(3.0) / np.float32(_fan(param, tuple(t.shape)))))
    _uniform(t, -scale, scale, gen)
    _no_sparse(param)


@FILLERS.decorator("msra")
def msra(param: caffe_pb2.FillerParameter, t: torch.Tensor, gen: torch.Generator | None) -> None:
    """N(0, 2/n), n from ``variance_norm`` (He et al.)."""
    std = float(np.sqrt(np.float32(2.0) / np.float32(_fan(param, tuple(t.shape)))))
    _gaussian_draw(t, 0.0, std, gen)
    _no_sparse(param)


def bilinear_kernel(shape: tuple[int, ...], fork_centre: bool = False) -> np.ndarray:
    """Caffe's bilinear upsampling weights for a 4-axis blob with square kernels (float32).

    With K the kernel width, f = ceil(K/2) and c = (K-1)/(2f), the weight at (y, x) is
    (1-|x/f-c|)(1-|y/f-c|), the same for every (out, in) pair; computed in float32 like Caffe.
    ``fork_centre``: the earlier c = (2f - 1 - f % 2)/(2f) of ParseNet's ``bilinear_upsampling``
    (weiliu89/caffe branch fcn), which differs only for K % 4 == 3 (K = 3: c = 3/4, not 1/2).
    """
    if len(shape) != 4:
        raise _FillerError(f"bilinear filler needs a 4-axis blob, got shape {tuple(shape)}")
    k_h, k_w = shape[2], shape[3]
    if k_h != k_w:
        raise _FillerError(f"bilinear filler needs a square kernel, got {k_h}x{k_w}")
    f = math.ceil(k_w / 2.0)
    c = np.float32(((2 * f - 1 - f % 2) if fork_centre else (k_w - 1)) / (2.0 * f))
    pos = np.arange(k_w, dtype=np.float32)
    w1 = np.float32(1) - np.abs(pos / np.float32(f) - c)
    kernel = (w1[:, None] * w1[None, :]).astype(np.float32)
    return np.broadcast_to(kernel, tuple(shape)).copy()


@FILLERS.decorator("bilinear")
def bilinear(param: caffe_pb2.FillerParameter, t: torch.Tensor, gen: torch.Generator | None) -> None:
    """Deterministic bilinear interpolation kernel (for Deconvolution upsampling)."""
    t.copy_(torch.from_numpy(bilinear_kernel(tuple(t.shape))))
    _no_sparse(param)


@FILLERS.decorator("bilinear_upsampling")
def bilinear_upsampling(param: caffe_pb2.FillerParameter, t: torch.Tensor, gen: torch.Generator | None) -> None:
    """weiliu89/caffe branch fcn (ParseNet, ``filler.hpp``): BVLC's earlier bilinear kernel,
    centred at c = (2f - 1 - f % 2) / (2f) (see :func:`bilinear_kernel`)."""
    t.copy_(torch.from_numpy(bilinear_kernel(tuple(t.shape), fork_centre=True)))
    _no_sparse(param)


def fill(filler: caffe_pb2.FillerParameter | None, tensor: torch.Tensor,
         generator: torch.Generator | None = None, *, where: Where | None = None) -> torch.Tensor:
    """Fill ``tensor`` in place as Caffe's filler ``filler`` would (None = constant 0)."""
    param = filler if filler is not None else caffe_pb2.FillerParameter()
    fn = FILLERS.get(param.type, where)
    if tensor.numel() == 0:
        raise LayerError(f"filler '{param.type}' cannot fill an empty blob of shape "
                         f"{tuple(tensor.shape)}", where)
    try:
        with torch.no_grad():
            fn(param, tensor, generator)
    except _FillerError as exc:
        raise LayerError(str(exc), where) from None
    return tensor
