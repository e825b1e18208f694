"""Folding: BatchNorm/Scale into the preceding Convolution/InnerProduct (deploy), BatchNorm+Scale fused (training).

:func:`optimize_net` is the deploy opt-in (``Net(..., optimize=True)``, ``-optimize``), what
OpenCV dnn does when it imports a Caffe net. In a TEST net, BatchNorm with global statistics
and a learned per-channel Scale are affine maps of each output channel, so they fold into the
weights and bias of the layer that feeds them:

    y * s + t  per channel (the layers' :meth:`~caffelike.layers.Layer.affine`, composed)
    W' = W * s (per output channel)       b' = b * s + t

and a following (leaky) ReLU runs fused on that one output. The head layer's module is
replaced by a :class:`FusedLayer` computing the whole chain, and each absorbed layer's module
by a :class:`PassThrough`. Every layer, blob name and parameter blob stays where it was
(``net.params``, ``save``, ``copy_from`` see the original, unfolded weights; folded weights
are recomputed when a source blob is replaced or written by torch (``copy_from``, the
``.data =`` setter); after writing into a ``.data[...]`` numpy view, which torch cannot see,
call :func:`refold`), but an intermediate blob of a folded chain holds the chain's final
value, not its own: that is why this is an explicit opt-in (pycaffe users may read any blob).
A chain is folded only where each intermediate value feeds exactly one layer.

:func:`fuse_batchnorm_scale` is safe in training and runs in every Solver by default
(``fuse=True``): a BatchNorm rewritten in place by a per-channel Scale runs as one kernel
(the layer's :meth:`~caffelike.layers.Layer.fuse_in_place`); the value between them is never
visible, so nothing a user can read changes.

Which layers qualify is each layer's own answer (``fold_head``, ``affine``,
``fused_activation``, ``fuse_in_place``); this module only finds the chains in the graph.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.base import TEST, Delegating, Layer
from ..proto import caffe_pb2
from ..glog import get_logger
from .graph import NetGraph
from .plan import NetPlan

if TYPE_CHECKING:  # pragma: no cover
    from .pycaffe import Net

log = get_logger("optimize")


@dataclass
class Chain:
    """One foldable run of layers (by index): a head, per-channel affine layers, an optional activation."""

    head: int
    affine: list[int] = field(default_factory=list)
    activation: int | None = None

    @property
    def members(self) -> list[int]:
        return [self.head, *self.affine] + ([self.activation] if self.activation is not None else [])


class PassThrough(Delegating):
    """An absorbed layer: its top is its bottom (the head already computed the chain).

    ``alone_as_written``: run by itself, the layer computes its own top (an in-place follower
    of a training fusion, whose head then runs alone too); otherwise it stays a pass-through
    (deploy folding, where the head always computes the whole chain)."""

    is_identity = True

    def __init__(self, original: nn.Module, alone_as_written: bool = False):
        super().__init__(original)
        self.alone_as_written = alone_as_written

    def forward(self, *bottoms: torch.Tensor) -> list[torch.Tensor]:
        return [bottoms[0]]

    def alone(self) -> nn.Module:
        return self.original if self.alone_as_written else self


class FusedLayer(Delegating):
    """A head layer with the following per-channel affine layers folded in and the activation fused."""

    def __init__(self, head: Layer, affine: list[Layer], slope: float | None):
        super().__init__(head)
        # A plain attribute (not submodules): these layers stay registered where they were.
        object.__setattr__(self, "_affine", list(affine))
        self.relu_slope = slope
        self._key: tuple | None = None
        self._weight: torch.Tensor | None = None
        self._bias: torch.Tensor | None = None

    def _sources(self) -> list[torch.Tensor]:
        tensors = list(self.original.blobs)
        for layer in self._affine:
            tensors += list(layer.blobs)
        return tensors

    def invalidate(self) -> None:
        """Forget the folded weights; the next forward recomputes them."""
        self._key = None

    def _folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The folded weight and bias, recomputed when any source blob changed or moved."""
        sources = self._sources()
        key = tuple((id(t), t._version, t.data_ptr(), t.stride(), t.device, t.dtype) for t in sources)
        if key != self._key:
            self._weight, self._bias = fold_weights(self.original, self._affine)
            self._key = key
        return self._weight, self._bias  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        weight, bias = self._folded()
        y = self.original.run_folded(x, weight, bias)
        if self.relu_slope is not None:
            y = torch.relu_(y) if self.relu_slope == 0.0 else F.leaky_relu_(y, self.relu_slope)
        return [y]


def fold_weights(head: Layer, affine: list[Layer]) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``head`` with the ``affine`` layers folded in (float64 math)."""
    weight, bias = head.fold_head()
    weight = weight.detach()
    channels = weight.shape[0]
    f64 = dict(dtype=torch.float64, device=weight.device)
    s = torch.ones(channels, **f64)
    t = bias.detach().to(**f64).reshape(-1) if bias is not None else torch.zeros(channels, **f64)
    for layer in affine:
        scale, shift = layer.affine(channels)
        scale, shift = scale.to(**f64), shift.to(**f64)
        s, t = s * scale, t * scale + shift
    w = weight.to(torch.float64) * s.reshape((-1,) + (1,) * (weight.dim() - 1))
    folded = torch.empty_strided(weight.shape, weight.stride(), dtype=weight.dtype, device=weight.device)
    folded.copy_(w)  # same strides as the original (keeps a channels_last layout)
    return folded, t.to(weight.dtype)


# -- finding chains ----------------------------------------------------------------------------
def value_readers(plan: NetPlan) -> tuple[list[list[tuple[str, int]]], dict[tuple[str, int], list[int]]]:
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


def _single_reader(graph: NetGraph, versions, readers, current: int) -> int | None:
    """The one layer reading ``current``'s only top, when it reads nothing else and writes one top."""
    version = (graph.plan.layers[current].tops[0], current)
    nxt = readers.get(version, [])
    if len(nxt) != 1:
        return None
    j = nxt[0]
    lay = graph.plan.layers[j]
    if isinstance(graph.module(j), Delegating) or len(lay.tops) != 1 or versions[j] != [version]:
        return None
    return j


def find_chains(graph: NetGraph, in_place: bool = False) -> list[Chain]:
    """The foldable chains of ``graph``, in layer order; ``in_place``: only layers that rewrite
    the head's top under its own name (whose values between them no blob shows)."""
    versions, readers = value_readers(graph.plan)
    chains: list[Chain] = []
    taken: set[int] = set()
    for i, (lay, module) in enumerate(graph.pairs()):
        if i in taken or isinstance(module, Delegating) or len(lay.bottoms) != 1 or len(lay.tops) != 1:
            continue
        head = module.fold_head()
        if head is None:
            continue
        channels = head[0].shape[0]
        chain = Chain(head=i)
        current = i
        while (j := _single_reader(graph, versions, readers, current)) is not None:
            if in_place and graph.plan.layers[j].tops != lay.tops:
                break
            nxt = graph.module(j)
            if nxt.affine(channels) is not None:
                chain.affine.append(j)
            elif nxt.fused_activation() is not None:
                chain.activation = j
            else:
                break
            current = j
            if chain.activation is not None:
                break
        if len(chain.members) > 1:
            chains.append(chain)
            taken.update(chain.members)
    return chains


def optimize_net(net: "Net", channels_last: bool = True) -> None:
    """Fold per-channel affine layers into the preceding Convolution/InnerProduct and fuse ReLU, in place.

    For deploy (TEST-phase) use; see the module docstring for what changes for pycaffe readers.
    ``channels_last`` also stores 4-axis convolution weights channels_last, which lets oneDNN
    skip layout reorders between layers on the CPU (values are unchanged). Calling it twice is
    harmless (already fused layers are not matched again).
    """
    graph = net.graph
    if channels_last:
        graph.to_channels_last()
    if net.phase != TEST:
        log.warning("optimize_net: net '%s' is not a TEST net; BatchNorm with batch statistics "
                    "is left as it is", net.name)
    chains = find_chains(graph)
    for chain in chains:
        slope = graph.module(chain.activation).fused_activation() if chain.activation is not None else None
        fused = FusedLayer(graph.module(chain.head), [graph.module(j) for j in chain.affine], slope)
        for j in chain.members[1:]:
            graph.replace_module(j, PassThrough(graph.module(j)))
        graph.replace_module(chain.head, fused)
    log.info("optimize_net: folded %d chains (%d layers absorbed)", len(chains),
             sum(len(c.members) - 1 for c in chains))


def refold(net: "Net") -> None:
    """Recompute every folded weight on the next forward (after writes through numpy views)."""
    for _, module in net.graph.pairs():
        if isinstance(module, FusedLayer):
            module.invalidate()


# -- training-safe fusion: a layer and the layer that rewrites its top in place ---------------------
def fuse_batchnorm_scale(graph: NetGraph) -> int:
    """Fuse each layer whose only reader rewrites its top in place and accepts the fusion
    (BatchNorm + per-channel Scale); returns the count.

    Safe in training and for pycaffe: the two layers write the same blob name, so the value
    between them is never visible (Caffe's own in-place idiom); everything else — blobs,
    params, loss, gradients — is unchanged within float tolerance.
    """
    swaps = in_place_fusions(graph)
    for index, module in swaps.items():
        graph.replace_module(index, module)
    return len(swaps) // 2


def in_place_fusions(graph: NetGraph) -> dict[int, nn.Module]:
    """The modules :func:`fuse_batchnorm_scale` would put in place (layer index -> module),
    without changing ``graph``: the fused layer, and a PassThrough for its in-place follower."""
    versions, readers = value_readers(graph.plan)
    swaps: dict[int, nn.Module] = {}
    for i, (lay, module) in enumerate(graph.pairs()):
        if i in swaps or isinstance(module, Delegating) or len(lay.tops) != 1:
            continue
        nxt = readers.get((lay.tops[0], i), [])
        if len(nxt) != 1:
            continue
        j = nxt[0]
        follower = graph.module(j)
        flay = graph.plan.layers[j]
        if isinstance(follower, Delegating) or flay.tops != lay.tops or flay.bottoms != lay.tops:
            continue
        combined = module.fuse_in_place(follower)
        if combined is None:
            continue
        swaps[i] = combined
        swaps[j] = PassThrough(follower, alone_as_written=True)
    return swaps


# -- whole forward passes: MAX pooling of a ReLU's output needs no floor -----------------------------
class FloorlessMaxPool(Delegating):
    """A MAX Pooling whose bottom, in a whole forward pass, is made by a ReLU (slope 0), or by
    Concat, Split, Pooling and Dropout layers of such values only: nothing in it is below
    -FLT_MAX, so the pooled values are not read again for Caffe's floor (see
    :func:`~caffelike.layers.vision.max_pool`). Only for whole passes: a partial forward may
    start from a blob a script wrote."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.original.forward(x, floor=False)


_KEEPS_SIGN = {"Concat", "Split", "Pooling", "Dropout"}  # non-negative bottoms: non-negative tops


def floorless_max_pools(graph: NetGraph, swaps: Mapping[int, nn.Module] | None = None
                        ) -> dict[int, nn.Module]:
    """Layer index -> :class:`FloorlessMaxPool` for each MAX Pooling (one top) whose bottom is
    non-negative or NaN in a whole pass, as its producers say; layers in ``swaps`` are left."""
    swaps = swaps or {}
    versions, _ = value_readers(graph.plan)
    known: dict[int, bool] = {}

    def non_negative(producer: int) -> bool:
        if producer < 0:  # an input or a stored blob: anything
            return False
        if producer not in known:
            lay, layer = graph.plan.layers[producer], graph.layers[producer]
            if layer is None:
                known[producer] = False
            elif lay.type == "ReLU":
                known[producer] = layer.fused_activation() == 0.0
            else:
                known[producer] = lay.type in _KEEPS_SIGN and bool(versions[producer]) and all(
                    non_negative(p) for _, p in versions[producer])
        return known[producer]

    found: dict[int, nn.Module] = {}
    for i, lay in enumerate(graph.plan.layers):
        module = graph.module(i)
        if (i in swaps or lay.type != "Pooling" or module is None or isinstance(module, Delegating)
                or len(lay.tops) != 1 or module.pool != caffe_pb2.PoolingParameter.MAX):
            continue
        if non_negative(versions[i][0][1]):
            found[i] = FloorlessMaxPool(module)
    return found


# -- training-safe too: a ReLU that rewrites a fresh value in place, run in place ----------------
class InPlaceActivation(Delegating):
    """A (leaky) ReLU rewriting its blob in place, run in place on the value before it: that
    value has no other reader, and the layer that made it neither reads it in its backward nor
    shares it (:meth:`~caffelike.layers.Layer.writable_top`), so no new tensor is needed. The
    gradient is the same (torch's ReLU backward reads the output either way)."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.is_leaf and x.requires_grad:  # pycaffe's layer-by-layer backward feeds a leaf per layer
            return self.original(x)
        slope = self.original.fused_activation()
        return [x.relu_() if slope == 0.0 else F.leaky_relu_(x, slope)]

    def alone(self) -> nn.Module:  # by itself its bottom is a stored blob: out of place
        return self.original


def in_place_activations(graph: NetGraph, swaps: Mapping[int, nn.Module] | None = None
                         ) -> dict[int, nn.Module]:
    """Layer index -> :class:`InPlaceActivation` for each (leaky) ReLU that may run in place:
    it rewrites its one blob in place, is the only reader of the value before it, and that
    value's producer (its module in ``swaps``, else the graph's) has a writable top."""
    swaps = swaps or {}
    versions, readers = value_readers(graph.plan)
    found: dict[int, nn.Module] = {}
    for i, (lay, module) in enumerate(graph.pairs()):
        if i in swaps or isinstance(module, Delegating) or module.fused_activation() is None:
            continue
        if len(lay.bottoms) != 1 or list(lay.tops) != list(lay.bottoms):
            continue
        version, reader = versions[i][0], i
        while True:  # through absorbed layers (PassThrough hands its bottom on) to the maker
            producer = version[1]
            if producer < 0 or readers.get(version) != [reader]:
                producer = -1
                break
            made_by = swaps.get(producer, graph.module(producer))
            if not isinstance(made_by, PassThrough):
                break
            version, reader = versions[producer][0], producer
        if producer >= 0 and made_by.writable_top():
            found[i] = InPlaceActivation(module)
    return found


def run_activations_in_place(graph: NetGraph) -> int:
    """Put :func:`in_place_activations` into ``graph`` (the solver's nets); returns the count."""
    swaps = in_place_activations(graph)
    for index, module in swaps.items():
        graph.replace_module(index, module)
    return len(swaps)

