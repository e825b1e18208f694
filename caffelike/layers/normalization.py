"""Normalization layers: BatchNorm (3 statistics blobs), LRN and MVN."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..proto import caffe_pb2
from . import bn_channels_last, running_sums
from .base import TEST, TRAIN, Delegating, Layer, Shape, register_layer
from .vision import PoolGeometry, ave_pool

NormRegion = caffe_pb2.LRNParameter


# --------------------------------------------------------------------------------------------
# BatchNorm
# --------------------------------------------------------------------------------------------
@register_layer("BatchNorm", stats_blobs=True)
class BatchNorm(Layer):
    """Caffe BatchNorm: normalise each channel (axis 1) to zero mean and unit variance.

    Blobs (statistics, never learned): sum-weighted mean (C,), sum-weighted variance (C,),
    scale factor (1,). With global stats the mean/variance used are blob/factor (factor 0
    gives 0). Otherwise the batch's mean and biased variance are used and, under autograd's
    no_grad, the blobs are updated: ``factor = maf*factor + 1``, ``mean = maf*mean +
    batch_mean``, ``var = maf*var + m/(m-1)*batch_var`` (m = count/C). No scale/shift (that
    is a separate Scale layer). Golden: ``BatchNorm__*``.
    """

    keeps_layout = True

    def writable_top(self) -> bool:
        return True

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: Sequence[Shape],
                 phase: int = TRAIN, where=None):
        super().__init__(param, bottom_shapes, phase, where)
        p = param.batch_norm_param
        self.moving_average_fraction = p.moving_average_fraction
        self.use_global_stats = p.use_global_stats if p.HasField("use_global_stats") else phase == TEST
        self.eps = p.eps
        shape = self.bottom_shapes[0]
        if len(shape) == 0:
            raise self.error("BatchNorm needs a bottom with at least one axis")
        self.channels = 1 if len(shape) == 1 else shape[1]
        for i, spec in enumerate(param.param[:3]):
            if spec.lr_mult != 0:
                raise self.error(f"param {i} has lr_mult {spec.lr_mult}: BatchNorm's blobs are "
                                 "statistics, not learnable parameters; use lr_mult: 0 or no param")
        for shape_ in ((self.channels,), (self.channels,), (1,)):
            self.add_blob(shape_, None, requires_grad=False)
        self._stats: torch.Tensor | None = None  # see _batch_stats
        self._stat_rows: tuple[torch.Tensor, ...] = ()

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        """Same shape as the bottom."""
        return [tuple(bottom_shapes[0])]

    def global_stats(self, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Caffe's global statistics: (mean, variance) = blob / scale factor, 0 if the factor is 0.

        ``dtype`` (e.g. float64 for weight folding) converts the blobs before the division.
        """
        running_sums.flush()  # a layer earlier in this pass may share the blobs
        mean, var, factor = (b.detach() if dtype is None else b.detach().to(dtype) for b in self.blobs)
        inv = torch.where(factor[0] == 0, torch.zeros_like(factor[0]), 1.0 / factor[0])
        return mean * inv, var * inv

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.dim() >= 2 and x.shape[1] != self.channels:
            raise self.error(f"bottom has {x.shape[1]} channels, the layer was built for {self.channels}")
        if x.dim() == 1:
            return [self.forward(x.reshape(-1, 1))[0].reshape(x.shape)]
        if self.use_global_stats or x.numel() // self.channels > 1:
            return [self.normalize(x)]
        dims = [d for d in range(x.dim()) if d != 1]
        mean = x.mean(dim=dims, keepdim=True)
        centred = x - mean
        var = (centred * centred).mean(dim=dims, keepdim=True)
        self._accumulate(mean.detach().reshape(-1), var.detach().reshape(-1))
        return [centred / torch.sqrt(var + self.eps)]

    def normalize(self, x: torch.Tensor, weight: torch.Tensor | None = None,
                  bias: torch.Tensor | None = None) -> torch.Tensor:
        """One ``batch_norm`` kernel: global statistics, or the batch's (then accumulated).

        ``weight``/``bias`` apply a following per-channel Scale in the same kernel (see
        :func:`caffelike.net.fold.fuse_batchnorm_scale`). Needs more than one value per channel
        in training (``forward`` handles the degenerate batch).
        """
        if self.use_global_stats:
            mean, var = self.global_stats()
            return F.batch_norm(x, mean, var, weight, bias, training=False, eps=self.eps)
        # With momentum 1 the kernel also returns the batch mean and the unbiased (m/(m-1))
        # batch variance that Caffe accumulates. Statistics in the parameters' dtype: under
        # autocast x may be bf16/fp16, which the kernel accepts only with float32 statistics
        # and affine parameters alike.
        dtype = weight.dtype if weight is not None else x.dtype
        batch_mean, batch_var, one = self._batch_stats(dtype, x.device)
        if bn_channels_last.wanted(x, weight):
            top = bn_channels_last.batch_norm_train(x, weight, bias, batch_mean, batch_var, self.eps)
        else:
            top = torch.batch_norm(x, weight, bias, batch_mean, batch_var, True, 1.0, self.eps,
                                   torch.backends.cudnn.enabled)
        self._accumulate(batch_mean, batch_var, one, buffer=self._stats)
        return top

    def _batch_stats(self, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
        """(mean, variance, 1): where the kernel leaves the batch statistics (zeroed here: with
        momentum 1 it still reads them, as ``0 * old``), and the 1 added to the scale factor."""
        stats = self._stats
        if stats is None or stats.dtype != dtype or stats.device != device:
            stats = self._stats = torch.zeros(2, self.channels, dtype=dtype, device=device)
            self._stat_rows = tuple(stats.unbind()) + (torch.ones(1, dtype=dtype, device=device),)
        else:
            running_sums.release(stats)  # this layer's last statistics may still be queued
            stats.zero_()
        return self._stat_rows

    def _accumulate(self, mean: torch.Tensor, unbiased_var: torch.Tensor,
                    one: torch.Tensor | None = None, buffer: torch.Tensor | None = None) -> None:
        """Caffe's running sums: ``factor = maf*factor + 1``, ``blob = maf*blob + batch stat``
        (each product rounded before the sum, as Caffe's axpby), at the end of the pass
        (:mod:`.running_sums`). ``mean`` and ``unbiased_var`` carry no gradient; the blobs
        never do. ``one``: a tensor holding 1 in the blobs' dtype; ``buffer``: the one
        holding ``mean`` and ``unbiased_var``."""
        blobs = self._modules["blobs"]._parameters  # not the ParameterList's slower __getitem__
        sums = [blobs["0"], blobs["1"], blobs["2"]]
        if one is None or one.dtype != sums[2].dtype:
            one = torch.ones_like(sums[2])
        running_sums.update(sums, [mean, unbiased_var, one], self.moving_average_fraction, buffer)

    def affine(self, channels: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """With global statistics, ``x * s - mean * s`` for ``s = 1/sqrt(var + eps)`` (float64)."""
        if not self.use_global_stats or self.channels != channels:
            return None
        mean, var = self.global_stats(torch.float64)
        s = 1.0 / torch.sqrt(var + float(self.eps))
        return s, -mean * s

    def fuse_in_place(self, follower: Layer) -> nn.Module | None:
        """An in-place per-channel Scale after this layer runs in the same kernel (training too)."""
        if follower.learned_channel_affine(self.channels) is None:
            return None
        return FusedBatchNormScale(self, follower)


class FusedBatchNormScale(Delegating):
    """BatchNorm followed by an in-place per-channel Scale, as one ``F.batch_norm`` with affine.

    Same values and exact gradients as the two layers (Caffe's backward of both is the exact
    one); BatchNorm's running sums are updated as the BatchNorm layer does. The Scale's
    parameters are read at each call, so sharing and loading weights are seen.
    """

    def __init__(self, batch_norm: BatchNorm, scale: Layer):
        super().__init__(batch_norm)
        object.__setattr__(self, "_scale", scale)  # not a submodule: it stays registered where it was
        # which of the Scale's blobs are gamma and beta, so that each call reads them from the
        # ParameterList's dict (its __getitem__ costs microseconds); None: ask the Scale each call
        object.__setattr__(self, "_keys", _blob_keys(scale, scale.learned_channel_affine(batch_norm.channels)))

    def writable_top(self) -> bool:
        return True

    def alone(self) -> nn.Module:  # the BatchNorm by itself: its Scale runs as its own layer
        return self.original

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        bn, scale, keys = self._modules["original"], self._scale, self._keys
        if not bn.use_global_stats and x.numel() // bn.channels <= 1:
            return scale(*bn(x))  # BatchNorm's own degenerate-batch path, then the Scale
        if keys is None:
            gamma, beta = scale.learned_channel_affine(bn.channels)
        else:  # the dicts themselves: attribute lookups through nn.Module cost microseconds
            blobs = scale._modules["blobs"]._parameters
            gamma, beta = blobs[keys[0]], (None if keys[1] is None else blobs[keys[1]])
        return [bn.normalize(x, gamma, beta)]


def _blob_keys(layer: Layer, tensors) -> tuple[str, str | None] | None:
    """The ParameterList keys of ``tensors`` (gamma, beta or None) among ``layer``'s blobs."""
    if tensors is None:
        return None
    by_id = {id(t): key for key, t in layer.blobs._parameters.items()}
    keys = tuple(None if t is None else by_id.get(id(t)) for t in tensors)
    return None if keys[0] is None or (tensors[1] is not None and keys[1] is None) else keys


# --------------------------------------------------------------------------------------------
# LRN
# --------------------------------------------------------------------------------------------
def lrn_across_channels(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """x * (k + alpha/size * sum of x^2 over ``size`` neighbouring channels)^-beta (zero-padded).

    Caffe's CrossChannelForward: the window of channel c is [c - (size-1)/2, c + (size-1)/2],
    channels outside the blob count as zero. The window sum is the squares plus their
    channel-shifted copies added in place (one pass per neighbour), several times cheaper
    than a pooling over a 5-axis view; the ONNX exporter gets the pooling form.
    """
    if torch.onnx.is_in_onnx_export():
        return _lrn_across_channels_pooled(x, size, alpha, beta, k)
    sq = x * x
    window = sq.clone()
    channels = x.shape[1]
    for d in range(1, min((size - 1) // 2, channels - 1) + 1):
        window[:, d:] += sq[:, : channels - d]
        window[:, : channels - d] += sq[:, d:]
    window.mul_(alpha / size).add_(k)
    if beta == 0.75 and not (x.requires_grad and torch.is_grad_enabled()):
        # AlexNet's and GoogLeNet's beta: t^-0.75 = rsqrt(t) * rsqrt(sqrt(t)), several times
        # cheaper than pow on the CPU and within 2 ulp of it (in place: no graph to keep)
        return window.rsqrt().mul_(window.sqrt_().rsqrt_()).mul_(x)
    return window.pow_(-beta).mul_(x)


def _lrn_across_channels_pooled(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    # The same window mean as a 3-D average pooling (padded channels counted): ONNX's form.
    pre = (size - 1) // 2
    sq = F.pad(x * x, (0, 0, 0, 0, pre, pre)).unsqueeze(1)
    means = F.avg_pool3d(sq, kernel_size=(size, 1, 1), stride=1).squeeze(1)
    scale = k + alpha * means
    return x * scale.pow(-beta)


def lrn_within_channel(x: torch.Tensor, size: int, alpha: float, beta: float) -> torch.Tensor:
    """x * (1 + alpha * avg of x^2 over a size x size window)^-beta, as Caffe's composition of
    Power (square), Pooling AVE (pad (size-1)/2, padded cells counted), Power and Eltwise PROD.
    Note: ``k`` is not used in this mode (Caffe's shift is 1)."""
    pre = (size - 1) // 2
    g = PoolGeometry((size, size), (1, 1), (pre, pre), True)
    pooled = ave_pool(x * x, g)
    return x * (1.0 + alpha * pooled).pow(-beta)


@register_layer("LRN")
class LRN(Layer):
    """Caffe local response normalisation of a 4-axis (N, C, H, W) bottom.

    ACROSS_CHANNELS: ``x * (k + alpha/size * sum_window x^2)^-beta``; WITHIN_CHANNEL:
    ``x * (1 + alpha/size^2 * sum_window x^2)^-beta`` with Caffe's AVE pooling divisor.
    Golden: ``LRN__*``.
    """

    keeps_layout = True

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: Sequence[Shape],
                 phase: int = TRAIN, where=None):
        super().__init__(param, bottom_shapes, phase, where)
        p = param.lrn_param
        if p.local_size % 2 != 1:
            raise self.error(f"lrn_param.local_size must be odd, got {p.local_size}")
        if len(self.bottom_shapes[0]) != 4:
            raise self.error(f"LRN needs a 4-axis (num, channels, height, width) bottom, "
                             f"got {self.bottom_shapes[0]}")
        self.size, self.alpha, self.beta, self.k = p.local_size, p.alpha, p.beta, p.k
        self.region = p.norm_region

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.region == NormRegion.WITHIN_CHANNEL:
            return [lrn_within_channel(x, self.size, self.alpha, self.beta)]
        return [lrn_across_channels(x, self.size, self.alpha, self.beta, self.k)]


# --------------------------------------------------------------------------------------------
# MVN
# --------------------------------------------------------------------------------------------
class _MVNFunction(torch.autograd.Function):
    """(x - mean) / (std + eps) per row of a (rows, dim) tensor, with Caffe's backward.

    Caffe's gradient is ``(dy - mean(dy) - y * mean(dy * y)) / (std + eps)``, which drops
    the factor (std + eps)/std of the exact gradient; golden ``MVN__default`` pins it.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, eps: float) -> torch.Tensor:  # type: ignore[override]
        centred = x - x.mean(dim=1, keepdim=True)
        denom = (centred * centred).mean(dim=1, keepdim=True).sqrt() + eps
        y = centred / denom
        ctx.save_for_backward(y, denom)
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):  # type: ignore[override]
        y, denom = ctx.saved_tensors
        dim = y.shape[1]
        inner = dy.sum(dim=1, keepdim=True) + y * (y * dy).sum(dim=1, keepdim=True)
        return (dy - inner / dim) / denom, None


def legacy_4d(shape: Sequence[int]) -> tuple[int, int, int, int]:
    """Caffe's num/channels/height/width of a blob with at most 4 axes (missing axes are 1)."""
    dims = tuple(shape) + (1,) * (4 - len(shape))
    return dims[0], dims[1], dims[2], dims[3]


@register_layer("MVN")
class MVN(Layer):
    """Caffe mean-variance normalisation per (sample, channel), or per sample across channels.

    Top is (num, channels, height, width) as Caffe reshapes it. Caffe semantics: eps is added
    to the standard deviation (``(x-mean)/(std+eps)``, eps default 1e-9) and the backward is
    Caffe's approximation (see :class:`_MVNFunction`). Golden: ``MVN__*``.
    """

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: Sequence[Shape],
                 phase: int = TRAIN, where=None):
        super().__init__(param, bottom_shapes, phase, where)
        p = param.mvn_param
        if not 1 <= len(self.bottom_shapes[0]) <= 4:
            raise self.error(f"MVN needs a bottom with 1 to 4 axes, got {self.bottom_shapes[0]}")
        self.normalize_variance = p.normalize_variance
        self.across_channels = p.across_channels
        self.eps = p.eps

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if not 1 <= x.dim() <= 4:
            raise self.error(f"MVN needs a bottom with 1 to 4 axes, got {tuple(x.shape)}")
        shape4 = legacy_4d(x.shape)
        rows = shape4[0] if self.across_channels else shape4[0] * shape4[1]
        x2 = x.reshape(rows, -1)
        if self.normalize_variance:
            y = _MVNFunction.apply(x2, self.eps)
        else:
            y = x2 - x2.mean(dim=1, keepdim=True)
        return [y.reshape(shape4)]
