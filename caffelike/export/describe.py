"""A built net as a static description of a plain torch module: inputs, one step per layer, outputs.

The description is what both the in-memory module (:mod:`.module`) and the generated
``model.py`` (:mod:`.codegen`) are made from, so the two cannot disagree. Caffe's names are
kept, sanitised into Python identifiers (layer names into attribute names, blob names into
variable names); an in-place layer rebinds its blob's variable; Caffe's inserted Split layers
and Silence disappear (a Split top is its bottom's variable).
"""
from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from typing import Iterable

from torch import nn

from ..errors import LayerError
from ..net.plan import LayerPlan
from .ops import OPS, TorchOp, Uncovered

SKIPPED = ("Split", "Silence")  # no module: Split aliases its bottom, Silence consumes it
RESERVED = {"self", "torch", "inputs", "Net", "super"}


@dataclass(frozen=True)
class Step:
    """One layer: the module attribute, Caffe's name and type, the variables read and written."""

    attr: str
    name: str
    type: str
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    op: TorchOp


@dataclass(frozen=True)
class ExportPlan:
    """The whole module: inputs (Caffe name, variable, shape), steps, outputs (Caffe name, variable)."""

    name: str
    inputs: tuple[tuple[str, str, tuple[int, ...]], ...]
    steps: tuple[Step, ...]
    outputs: tuple[tuple[str, str], ...]


def identifier(name: str) -> str:
    """``name`` as a Python identifier: other characters become '_', a leading digit gets '_'."""
    out = re.sub(r"\W", "_", name, flags=re.ASCII) or "_"
    if out[0].isdigit():
        out = "_" + out
    return out + "_" if keyword.iskeyword(out) or out in RESERVED else out


class _Names:
    """Unique identifiers: a clash (after sanitising) gets a numeric suffix."""

    def __init__(self, taken: Iterable[str] = ()):
        self.used = set(taken)

    def new(self, name: str) -> str:
        base = identifier(name)
        out, i = base, 2
        while out in self.used:
            out, i = f"{base}_{i}", i + 1
        self.used.add(out)
        return out


_MODULE_ATTRIBUTES = frozenset(dir(nn.Module()))  # class and instance names (forward, training, ...)


def _is_attribute_of_module(name: str) -> bool:
    return name in _MODULE_ATTRIBUTES or name.startswith("_")


def _check_deploy(lay: LayerPlan) -> None:
    info = lay.info
    if info.is_loss:
        raise LayerError("loss layers are not part of a deploy export; export the deploy "
                         "prototxt (Input layers in, no loss)", lay.where)
    if info.is_data or (not lay.bottoms and not info.is_input):
        raise LayerError("data layers are not part of a deploy export; export the deploy "
                         "prototxt, whose Input layers become the module's forward arguments", lay.where)


def describe(graph) -> ExportPlan:
    """The export plan of a built net's :class:`~caffelike.net.graph.NetGraph` (TEST phase)."""
    attrs = _Names()
    variables = _Names()
    var_of: dict[str, str] = {}
    inputs: list[tuple[str, str, tuple[int, ...]]] = []
    steps: list[Step] = []
    for lay, module in graph.pairs():
        layer = getattr(module, "original", module)  # folded/fused stand-ins keep the layer
        if lay.info.is_input:
            for top, shape in zip(lay.tops, layer.top_shapes()):
                var_of[top] = variables.new(top)
                inputs.append((top, var_of[top], tuple(shape)))
            continue
        _check_deploy(lay)
        if lay.type in SKIPPED:
            for top in lay.tops:
                var_of[top] = var_of[lay.bottoms[0]]
            continue
        if lay.type not in OPS:
            raise LayerError(f"the PyTorch export does not cover layer type '{lay.type}' (covered: "
                             f"{', '.join(sorted(OPS))}); a fork layer is covered by adding its "
                             "entry to caffelike/export/ops.py", lay.where)
        try:
            op = OPS.get(lay.type)(layer)
        except Uncovered as exc:
            raise LayerError(f"the PyTorch export does not cover this layer: {exc}", lay.where) from None
        bottoms = tuple(var_of[b] for b in lay.bottoms)
        tops = []
        for top, in_place in zip(lay.tops, lay.in_place):
            if not in_place:
                var_of[top] = variables.new(top)
            tops.append(var_of[top])
        attr = attrs.new(lay.name)
        while _is_attribute_of_module(attr):
            attr = attrs.new(attr + "_")
        steps.append(Step(attr, lay.name, lay.type, bottoms, tuple(tops), op))
    outputs = tuple((name, var_of[name]) for name in graph.plan.output_names)
    return ExportPlan(graph.plan.name, tuple(inputs), tuple(steps), outputs)
