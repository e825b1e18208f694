"""Caffe's layer-by-layer forward and backward for the pycaffe path (Net::ForwardFromTo/BackwardFromTo).

The solver trains through one whole-graph autograd pass (``Net.run`` + objective); pycaffe
users instead drive the net blob by blob: they may set any blob's ``.diff`` and call
``net.backward(start=, end=)``. :class:`Recorder` runs a forward range layer by layer, each
layer on fresh leaf copies of its bottoms, and keeps each layer's (bottom leaves, tops) so
that :func:`backward_range` can compute one layer's vector-Jacobian product at a time:
the top diffs are read from the blobs, the bottom diffs overwrite the bottom blobs' diffs and
parameter gradients accumulate in ``.grad`` (until ``clear_param_diffs``). A layer not run
by the last forward is re-run from its bottoms' stored data first, as Caffe's Backward reads
whatever the blobs hold.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch

from .graph import NetGraph
from .plan import LayerPlan

BlobTensor = Callable[[str], torch.Tensor]
Callbacks = Sequence[Callable[[int], object]]


@dataclass
class LayerRecord:
    """One layer's last forward: the leaf bottoms it ran on and its tops (with their graph)."""

    bottoms: list[torch.Tensor]
    tops: list[torch.Tensor]


def _leaves(lay: LayerPlan, values: list[torch.Tensor]) -> list[torch.Tensor]:
    flags = lay.bottom_need_backward or (False,) * len(values)
    return [t.detach().requires_grad_(bool(need) and t.is_floating_point()) for t, need in zip(values, flags)]


def run_layer(lay: LayerPlan, module: torch.nn.Module, bottoms: list[torch.Tensor]) -> LayerRecord:
    """Run one layer with autograd on leaf copies of ``bottoms``."""
    leaves = _leaves(lay, bottoms)
    with torch.enable_grad():
        tops = list(module(*leaves))
    return LayerRecord(leaves, tops)


def record_forward(graph: NetGraph, start: int, end: int, stored: BlobTensor,
                   records: dict[int, LayerRecord], before: Callbacks = (),
                   after: Callbacks = ()) -> dict[str, torch.Tensor]:
    """Run layers ``start``..``end`` one by one, recording each (see the module docstring).

    Returns every blob's final value (detached). Source layers run as in ``NetGraph.run_range``
    (an Input layer's tops are its stored blobs). ``before``/``after`` are pycaffe's
    ``before_forward``/``after_forward`` callbacks, called with each layer's index.
    """
    values: dict[str, torch.Tensor] = {}
    for i in range(start, end + 1):
        for run in before:
            run(i)
        _record_layer(graph, i, stored, records, values)
        for run in after:
            run(i)
    return values


def _record_layer(graph: NetGraph, i: int, stored: BlobTensor, records: dict[int, LayerRecord],
                  values: dict[str, torch.Tensor]) -> None:
    lay, module = graph.plan.layers[i], graph.solo(i)
    if lay.info.is_input:
        for name in lay.tops:
            values[name] = stored(name)
        records.pop(i, None)
        return
    bottoms = []
    for name in lay.bottoms:
        if name not in values:
            values[name] = stored(name)
        bottoms.append(values[name])
    if lay.need_backward:
        rec = run_layer(lay, module, bottoms)
        records[i] = rec
        tops = rec.tops
    else:
        records.pop(i, None)
        with torch.no_grad():
            tops = list(module(*bottoms))
    held = getattr(module, "held_tops", ())
    for k, (name, t) in enumerate(zip(lay.tops, tops)):
        values[name] = stored(name) if k in held else t.detach()


def backward_range(graph: NetGraph, start: int, end: int, records: Mapping[int, LayerRecord],
                   data: BlobTensor, diff: BlobTensor, store_diff: Callable[[str, torch.Tensor], None],
                   before: Callbacks = (), after: Callbacks = ()) -> None:
    """Caffe's BackwardFromTo: layers ``start`` down to ``end`` that need backward, one VJP each.

    ``data(name)``/``diff(name)`` give a blob's stored data/diff on the net's device;
    ``store_diff(name, tensor)`` overwrites a blob's diff. ``before``/``after`` are pycaffe's
    ``before_backward``/``after_backward`` callbacks, called for every layer of the range.
    """
    for i in range(start, end - 1, -1):
        for run in before:
            run(i)
        _layer_backward(graph, i, records, data, diff, store_diff)
        for run in after:
            run(i)


def _layer_backward(graph: NetGraph, i: int, records: Mapping[int, LayerRecord], data: BlobTensor,
                    diff: BlobTensor, store_diff: Callable[[str, torch.Tensor], None]) -> None:
    lay, module = graph.plan.layers[i], graph.solo(i)
    if not lay.need_backward or not lay.bottoms and not _params(module):
        return
    rec = records.get(i)
    if rec is None:
        rec = run_layer(lay, module, [data(n) for n in lay.bottoms])
    outputs, grads = [], []
    for name, top in zip(lay.tops, rec.tops):
        if top.requires_grad:
            outputs.append(top)
            grads.append(diff(name).to(top.device, top.dtype).reshape(top.shape))
    leaves = [b for b in rec.bottoms if b.requires_grad]
    for b in leaves:
        b.grad = None
    targets = leaves + _params(module)
    if outputs and targets:
        torch.autograd.backward(outputs, grads, retain_graph=True, inputs=targets)
    for name, b in zip(lay.bottoms, rec.bottoms):
        if b.requires_grad:
            store_diff(name, b.grad if b.grad is not None else torch.zeros_like(b))
            b.grad = None


def _params(module: torch.nn.Module) -> list[torch.Tensor]:
    seen: set[int] = set()
    out = []
    for p in getattr(module, "blobs", ()):
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def clear_param_diffs(graph: NetGraph) -> None:
    """Caffe's Net::ClearParamDiffs: every parameter's diff becomes zero (kept allocated)."""
    for _, module in graph.pairs():
        for p in getattr(module, "blobs", ()):
            if p.grad is not None:
                p.grad.zero_()
