"""Folding BatchNorm/Scale, in two strengths.

* :func:`fuse_batchnorm_scale` runs a BatchNorm and the in-place Scale after it as one module.
  Nothing visible changes (the value between them is never a blob of its own), so every
  Solver applies it to its train and test nets (``fuse=True``, the default).
* :func:`optimize_net` (deploy nets, opt-in) folds BatchNorm/Scale into the preceding
  Convolution/InnerProduct and fuses a following ReLU, as described below.

The deploy folding is what OpenCV dnn does when it imports a Caffe net. In a TEST net,
BatchNorm with global statistics and a learned per-channel Scale are affine maps of each
output channel, so they fold into the weights and bias of the layer that feeds them:

    s  = gamma / sqrt(var + eps)          (gamma = 1 without Scale; mean = var = 0 without BatchNorm)
    W' = W * s (per output channel)       b' = (b - mean) * s + beta

and a following ReLU runs in place on that one output. :func:`optimize_net` rewrites a built
:class:`caffelike.Net` in place: the head layer's module is replaced by a :class:`FusedLayer`
computing the whole chain, and each absorbed layer's module by a :class:`PassThrough`. Every
layer, blob name and parameter blob stays where it was (``net.params``, ``save``,
``copy_from`` see the original, unfolded weights; folded weights are recomputed when a source
blob is replaced or written by torch (``copy_from``, the ``.data =`` setter); after writing into
a ``.data[...]`` numpy view, which torch cannot see, call :func:`refold`), but an intermediate
blob of a folded chain holds the chain's final value, not its own: that is why this folding is
an explicit opt-in for deploy use (pycaffe users may read any blob).
A chain is folded only where each intermediate value feeds exactly one layer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers.base import TEST, canonical_axis
from .log import get_logger

log = get_logger("optimize")

_HEADS = ("Convolution", "InnerProduct")


@dataclass
class Chain:
    """One foldable run of layers: a head, then optionally BatchNorm, Scale and ReLU (by index)."""

    head: int
    batch_norm: int | None = None
    scale: int | None = None
    relu: int | None = None
    members: list[int] = field(default_factory=list)


class _Delegating(nn.Module):
    """A stand-in for a layer module that answers every other question as the original does."""

    def __init__(self, original: nn.Module):
        super().__init__()
        self.original = original

    @property
    def blobs(self) -> nn.ParameterList:  # Caffe's parameter blobs stay the original's
        return self.original.blobs

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["original"], name)

    def top_shapes(self, bottom_shapes: Sequence[tuple[int, ...]]) -> list[tuple[int, ...]]:
        return self.original.top_shapes(bottom_shapes)

    def reshape(self, bottom_shapes: Sequence[tuple[int, ...]]) -> None:
        self.original.reshape(bottom_shapes)


class PassThrough(_Delegating):
    """An absorbed layer: its top is its bottom (the head already computed the chain)."""

    def forward(self, *bottoms: torch.Tensor) -> list[torch.Tensor]:
        return [bottoms[0]]


class FusedLayer(_Delegating):
    """A Convolution or InnerProduct with the following BatchNorm/Scale folded in and ReLU fused."""

    def __init__(self, head: nn.Module, batch_norm: nn.Module | None, scale: nn.Module | None,
                 relu_slope: float | None):
        super().__init__(head)
        # Plain attributes (not submodules): these layers stay registered where they were.
        object.__setattr__(self, "_bn", batch_norm)
        object.__setattr__(self, "_scale", scale)
        self.relu_slope = relu_slope
        self._key: tuple | None = None
        self._weight: torch.Tensor | None = None
        self._bias: torch.Tensor | None = None

    def _sources(self) -> list[torch.Tensor]:
        tensors = list(self.original.blobs)
        for extra in (self._bn, self._scale):
            if extra is not None:
                tensors += list(extra.blobs)
        return tensors

    def invalidate(self) -> None:
        """Forget the folded weights; the next forward recomputes them."""
        self._key = None

    def _folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The folded weight and bias, recomputed when any source blob changed or moved."""
        sources = self._sources()
        key = tuple((id(t), t._version, t.data_ptr(), t.stride(), t.device, t.dtype) for t in sources)
        if key != self._key:
            self._weight, self._bias = fold_weights(self.original, self._bn, self._scale)
            self._key = key
        return self._weight, self._bias  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        weight, bias = self._folded()
        head = self.original
        if head.caffe_type == "Convolution":
            y = _conv(head, x, weight, bias)
        else:
            y = _linear(head, x, weight, bias)
        if self.relu_slope is not None:
            y = torch.relu_(y) if self.relu_slope == 0.0 else F.leaky_relu_(y, self.relu_slope)
        return [y]


def _conv(head: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    g = head.geom
    outer = tuple(x.shape[:g.axis])
    x2 = x.reshape((-1,) + tuple(x.shape[g.axis:]))
    y = head._fn(x2, weight, bias=bias, stride=g.stride, padding=g.pad, dilation=g.dilation,
                 groups=head.group)
    return y.reshape(outer + tuple(y.shape[1:]))


def _linear(head: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    flat = x.reshape(x.shape[0], -1)  # foldable InnerProducts have axis 1
    return F.linear(flat, weight, bias)


def _channel_affine(batch_norm: nn.Module | None, scale: nn.Module | None, channels: int,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean, s, beta) in float64 such that the chain after the head is ``(y - mean) * s + beta``."""
    f64 = dict(dtype=torch.float64, device=device)
    mean = torch.zeros(channels, **f64)
    s = torch.ones(channels, **f64)
    beta = torch.zeros(channels, **f64)
    if batch_norm is not None:
        mean, var = batch_norm.global_stats(torch.float64)
        s = 1.0 / torch.sqrt(var + float(batch_norm.eps))
    if scale is not None:
        gamma = scale.blobs[0].detach().to(**f64).reshape(-1)
        s = s * gamma
        if scale.param.scale_param.bias_term:
            beta = scale.blobs[1].detach().to(**f64).reshape(-1)
    return mean, s, beta


def fold_weights(head: nn.Module, batch_norm: nn.Module | None, scale: nn.Module | None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``head`` with ``batch_norm`` and ``scale`` folded in (float64 math)."""
    weight = head.blobs[0].detach()
    if head.caffe_type == "InnerProduct" and head.param.inner_product_param.transpose:
        weight = weight.t()
    channels = weight.shape[0]
    has_bias = len(head.blobs) > 1
    bias = head.blobs[1].detach().to(torch.float64) if has_bias else torch.zeros(
        channels, dtype=torch.float64, device=weight.device)
    mean, s, beta = _channel_affine(batch_norm, scale, channels, weight.device)
    w = weight.to(torch.float64) * s.reshape((-1,) + (1,) * (weight.dim() - 1))
    b = (bias - mean) * s + beta
    folded = torch.empty_strided(weight.shape, weight.stride(), dtype=weight.dtype, device=weight.device)
    folded.copy_(w)  # same strides as the original (keeps a channels_last layout)
    return folded, b.to(weight.dtype)


# -- finding chains ----------------------------------------------------------------------------
def _consumers(plan) -> tuple[list[list[tuple[str, int]]], dict[tuple[str, int], list[int]]]:
    """Per layer, the (name, producer) version of each bottom; and each version's readers."""
    producer: dict[str, int] = {}
    versions: list[list[tuple[str, int]]] = []
    readers: dict[tuple[str, int], list[int]] = {}
    for i, lay in enumerate(plan.layers):
        mine = [(name, producer.get(name, -1)) for name in lay.bottoms]
        versions.append(mine)
        for v in mine:
            readers.setdefault(v, []).append(i)
        for name in lay.tops:
            producer[name] = i
    return versions, readers


def _foldable_head(lay, module: nn.Module) -> bool:
    if lay.type not in _HEADS or len(lay.bottoms) != 1 or len(lay.tops) != 1:
        return False
    if lay.type == "Convolution":
        return getattr(module.geom, "axis", 1) == 1
    return lay.param.inner_product_param.axis == 1


def _foldable_bn(module: nn.Module, channels: int) -> bool:
    return bool(module.use_global_stats) and module.channels == channels


def _foldable_scale(lay, module: nn.Module, channels: int) -> bool:
    """A learned per-channel scale on axis 1 (negative axes count from the bottom's end)."""
    if len(lay.bottoms) != 1:
        return False
    axis = canonical_axis(lay.param.scale_param.axis, len(module.bottom_shapes[0]), module)
    return axis == 1 and tuple(module.blobs[0].shape) == (channels,)


def find_chains(net) -> list[Chain]:
    """The foldable chains of ``net`` (TEST-phase BatchNorm only), in layer order."""
    plan, modules = net.plan, net.layer_modules
    versions, readers = _consumers(plan)
    chains: list[Chain] = []
    taken: set[int] = set()
    for i, lay in enumerate(plan.layers):
        if i in taken or isinstance(modules[i], _Delegating) or not _foldable_head(lay, modules[i]):
            continue
        channels = modules[i].blobs[0].shape[1 if (lay.type == "InnerProduct"
                                                   and lay.param.inner_product_param.transpose) else 0]
        chain = Chain(head=i, members=[i])
        current = i
        for kind in ("BatchNorm", "Scale", "ReLU"):
            version = (plan.layers[current].tops[0], current)
            nxt = readers.get(version, [])
            if len(nxt) != 1:
                break
            j = nxt[0]
            nlay, nmod = plan.layers[j], modules[j]
            if isinstance(nmod, _Delegating):
                break
            if nlay.type != kind or len(nlay.tops) != 1 or versions[j][0] != version:
                continue
            if kind == "BatchNorm" and not _foldable_bn(nmod, channels):
                break
            if kind == "Scale" and not _foldable_scale(nlay, nmod, channels):
                break
            setattr(chain, {"BatchNorm": "batch_norm", "Scale": "scale", "ReLU": "relu"}[kind], j)
            chain.members.append(j)
            current = j
        if len(chain.members) > 1:
            chains.append(chain)
            taken.update(chain.members)
    return chains


def optimize_net(net, channels_last: bool = True) -> None:
    """Fold BatchNorm/Scale into the preceding Convolution/InnerProduct and fuse ReLU, in place.

    For deploy (TEST-phase) use; see the module docstring for what changes for pycaffe readers.
    ``channels_last`` also stores 4-axis convolution weights channels_last, which lets oneDNN
    skip layout reorders between layers on the CPU (values are unchanged). Calling it twice is
    harmless (already fused layers are not matched again).
    """
    if channels_last:
        from .accel import use_channels_last

        use_channels_last(net)
    if net.phase != TEST:
        log.warning("optimize_net: net '%s' is not a TEST net; BatchNorm with batch statistics "
                    "is left as it is", net.name)
    modules = net.layer_modules
    chains = find_chains(net)
    for chain in chains:
        bn = modules[chain.batch_norm] if chain.batch_norm is not None else None
        scale = modules[chain.scale] if chain.scale is not None else None
        slope = (float(modules[chain.relu].negative_slope) if chain.relu is not None else None)
        fused = FusedLayer(modules[chain.head], bn, scale, slope)
        for j in chain.members[1:]:
            modules[j] = PassThrough(modules[j])
        modules[chain.head] = fused
    log.info("optimize_net: folded %d chains (%d layers absorbed)", len(chains),
             sum(len(c.members) - 1 for c in chains))


def refold(net) -> None:
    """Recompute every folded weight on the next forward (after writes through numpy views)."""
    for module in net.layer_modules:
        if isinstance(module, FusedLayer):
            module.invalidate()


# -- training-safe fusion: BatchNorm + in-place Scale ----------------------------------------------
class FusedBatchNormScale(_Delegating):
    """BatchNorm followed by an in-place per-channel Scale, as one ``F.batch_norm`` with affine.

    Same values and exact gradients as the two layers (Caffe's backward of both is the exact
    one); BatchNorm's running sums are updated as the BatchNorm layer does. The Scale's
    parameters are read at each call, so sharing and loading weights are seen.
    """

    def __init__(self, batch_norm: nn.Module, scale: nn.Module):
        super().__init__(batch_norm)
        object.__setattr__(self, "_scale", scale)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        bn, scale = self.original, self._scale
        if not bn.use_global_stats and x.numel() // bn.channels <= 1:
            return scale(*bn(x))  # BatchNorm's own degenerate-batch path, then the Scale
        beta = scale.blobs[1] if scale.param.scale_param.bias_term else None
        return [bn.normalize(x, scale.blobs[0], beta)]


def fuse_batchnorm_scale(net) -> int:
    """Fuse each BatchNorm whose only reader is an in-place per-channel Scale; returns the count.

    Safe in training and for pycaffe: BatchNorm and Scale write the same blob name, so the
    value between them is never visible (Caffe's own in-place idiom); everything else —
    blobs, params, loss, gradients — is unchanged within float tolerance.
    """
    plan, modules = net.plan, net.layer_modules
    _, readers = _consumers(plan)
    fused = 0
    for i, lay in enumerate(plan.layers):
        if lay.type != "BatchNorm" or isinstance(modules[i], _Delegating) or len(lay.tops) != 1:
            continue
        nxt = readers.get((lay.tops[0], i), [])
        if len(nxt) != 1:
            continue
        j = nxt[0]
        slay, smod = plan.layers[j], modules[j]
        if (slay.type != "Scale" or isinstance(smod, _Delegating) or slay.tops != [lay.tops[0]]
                or slay.bottoms != [lay.tops[0]] or len(smod.bottom_shapes[0]) < 2
                or not _foldable_scale(slay, smod, modules[i].channels)):
            continue
        modules[i] = FusedBatchNormScale(modules[i], smod)
        modules[j] = PassThrough(smod)
        fused += 1
    return fused
