"""Packed convolutions for pycaffe's whole inference pass on the CPU.

oneDNN runs a 2-D convolution several times faster when its input is channels_last and its
weights are reordered once into the kernel's own blocked layout ("prepacked") instead of on
every call; it can also apply a ReLU on the way out. :func:`packed_swaps` gives the modules
that do so for a net's whole-pass steps (see :meth:`~caffelike.net.pycaffe.Net.forward`):

- every plain 2-D Convolution runs as a :class:`PackedConv`, whose output stays channels_last
  (the next convolution, pooling, ReLU, Eltwise and Concat take it as it is; any other layer
  gets a contiguous copy, :class:`ContiguousInputs`);
- a Convolution whose top is rewritten in place (same blob name) by per-channel affine layers
  (BatchNorm with global statistics, Scale) and a (leaky) ReLU runs the whole chain as one
  kernel, the affine layers folded into its weights. Since every layer of the chain writes the
  same blob, the values between them are never visible (Caffe's own in-place idiom), so every
  blob a script reads holds what Caffe computes, within float tolerance;
- a (leaky) ReLU that rewrites, in place, a new tensor that nothing else reads (an Eltwise's
  sum, an InnerProduct's output) runs in place on it (:class:`~.fold.InPlaceActivation`).

The packed weights are recomputed when a source parameter changes: when torch writes it
(its version counter), when it is replaced or moved, when the input shape changes, and when a
script takes a numpy view of it (``net.params[...][i].data``,
:func:`~caffelike.blob.param_view_state`). While such a view is alive the script may write
through it at any time, which no counter sees, so the layer then runs unpacked, as written.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from ..blob import params_state
from ..layers.base import Delegating, Layer
from .fold import Chain, FusedLayer, PassThrough, find_chains, fold_weights, in_place_activations
from .graph import NetGraph

_CL = torch.channels_last


def packing_available() -> bool:
    """Whether this torch has oneDNN's packed convolution (CPU builds with mkldnn)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        torch.ops.mkldnn._convolution_pointwise  # noqa: B018 - resolves the op or raises
        torch.ops.mkldnn._reorder_convolution_weight  # noqa: B018
    except (AttributeError, RuntimeError):
        return False
    return True


class PackedConv(Delegating):
    """A Convolution (with per-channel affine layers folded in and an activation fused) run by
    oneDNN with prepacked weights on a channels_last input; see the module docstring.

    ``unpacked`` are the modules that compute the same top as written, run in turn when the
    packed weights cannot be trusted (a live numpy view) or the input is not a CPU float32 one.
    """

    def __init__(self, head: Layer, affine: Sequence[Layer], slope: float | None,
                 unpacked: Sequence[nn.Module]):
        super().__init__(head)
        # Plain attributes (not submodules): these layers stay registered where they were.
        object.__setattr__(self, "_affine", list(affine))
        object.__setattr__(self, "_unpacked_modules", list(unpacked))
        self.slope = slope
        g = head.geom
        self._geometry = (list(g.pad), list(g.stride), list(g.dilation), int(head.group))
        if slope is None:
            self._attr: tuple[str, list] = ("none", [])
        elif slope == 0.0:
            self._attr = ("relu", [])
        else:
            self._attr = ("leaky_relu", [slope])
        self._key: tuple | None = None
        self._weight: torch.Tensor | None = None
        self._bias: torch.Tensor | None = None
        self._broken = False  # oneDNN refused this layer once: run it as written from then on
        # the ParameterLists' dicts (a replaced blob is replaced in them), read each call without
        # the ParameterList's __getitem__/__iter__, which cost microseconds per blob
        self._blob_dicts = [layer.blobs._parameters for layer in (head, *affine)]

    def _sources(self) -> list[torch.Tensor]:
        return [t for blobs in self._blob_dicts for t in blobs.values()]

    def _unpacked(self, x: torch.Tensor) -> list[torch.Tensor]:
        for module in self._unpacked_modules:
            x = module(x)[0]
        return [x]

    def _pack(self, x: torch.Tensor) -> None:
        if self._affine:
            weight, bias = fold_weights(self.original, self._affine)
        else:
            weight, bias = self.original.fold_head()
        pad, stride, dilation, groups = self._geometry
        self._weight = torch.ops.mkldnn._reorder_convolution_weight(
            weight.detach().contiguous(), pad, stride, dilation, groups, list(x.shape))
        self._bias = bias.detach().contiguous() if bias is not None else None

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if (self._broken or not x.is_cpu or x.dtype != torch.float32 or x.dim() != 4
                or torch.is_grad_enabled()):
            return self._unpacked(x)
        # What the packed weights depend on. A source moved or converted has another data
        # pointer (and then fails to pack, which makes the layer run unpacked).
        state = params_state(self._sources())
        if state is None:
            return self._unpacked(x)
        key = (x.shape, state)
        pad, stride, dilation, groups = self._geometry
        try:
            if key != self._key:
                self._pack(x)
                self._key = key
            y = torch.ops.mkldnn._convolution_pointwise(
                x.contiguous(memory_format=_CL), self._weight, self._bias, pad, stride, dilation,
                groups, self._attr[0], self._attr[1], "")
        except RuntimeError:
            self._broken, self._key, self._weight = True, None, None
            return self._unpacked(x)
        return [y]

    def writable_top(self) -> bool:
        return True


class ContiguousInputs(Delegating):
    """A layer that is not known to take channels_last tensors gets contiguous bottoms."""

    def forward(self, *bottoms):
        return self.original(*[b.contiguous() if isinstance(b, torch.Tensor) else b for b in bottoms])


def _packable(graph: NetGraph, index: int) -> bool:
    lay = graph.plan.layers[index]
    module = graph.module(index)
    if isinstance(module, FusedLayer):  # optimize=True folded this chain already
        module = module.original
    elif isinstance(module, Delegating):
        return False
    return (getattr(module, "caffe_type", "") == "Convolution" and getattr(module, "_plain_2d", False)
            and len(lay.bottoms) == 1 and len(lay.tops) == 1 and module.fold_head() is not None)


def packed_swaps(graph: NetGraph, fused: Mapping[int, nn.Module] | None = None) -> dict[int, nn.Module]:
    """Layer index -> module for a CPU inference pass: packed convolutions with their in-place
    chains (absorbed layers as PassThrough), ``fused`` (e.g. :func:`~.fold.in_place_fusions`)
    where no chain took the layer, and contiguous inputs for layers that need them."""
    chains = {chain.head: chain for chain in find_chains(graph, in_place=True)}
    swaps: dict[int, nn.Module] = {}
    for i in range(len(graph)):
        if i in swaps or not _packable(graph, i):
            continue
        module = graph.module(i)
        if isinstance(module, FusedLayer):
            swaps[i] = PackedConv(module.original, module._affine, module.relu_slope, [module])
            continue
        chain = chains.get(i, Chain(head=i))
        absorbed = chain.members[1:]
        slope = graph.module(chain.activation).fused_activation() if chain.activation is not None else None
        swaps[i] = PackedConv(module, [graph.module(j) for j in chain.affine], slope,
                              [module] + [graph.module(j) for j in absorbed])
        for j in absorbed:
            swaps[j] = PassThrough(graph.module(j))
    for i, module in (fused or {}).items():
        if i not in swaps:
            swaps[i] = module
    swaps.update(in_place_activations(graph, swaps))
    for i, (_, module) in enumerate(graph.pairs()):
        module = swaps.get(i, module)
        if not isinstance(module, (PassThrough, PackedConv)) and not getattr(module, "keeps_layout", False):
            swaps[i] = ContiguousInputs(module)
    return swaps
