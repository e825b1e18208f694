"""``model.py``: the export plan as readable, self-contained PyTorch source (imports torch only).

``class Net(torch.nn.Module)``: ``__init__`` declares one module per layer in prototxt order
(Caffe's name, when sanitising changed it, in a comment), ``forward`` takes the input blobs
in the net's input order and has one line per layer (an in-place layer reassigns its blob's
variable), returning a dict of the output blobs. The helper classes used are copied from
:mod:`.helpers`, so the file and :func:`caffelike.to_torch` run the same code.
"""
from __future__ import annotations

import inspect
import math
from typing import Any

from torch import nn

from .describe import ExportPlan
from .helpers import SUPPORT

HEADER = '''"""{name}: a Caffe net exported to plain PyTorch by caffelike (``caffelike export -format pytorch``).

Imports torch only. Use:

    net = Net()
    net.load_state_dict(torch.load("weights.pth", weights_only=True))
    net.eval()
    outputs = net({inputs})  # {outputs_doc}

Layers in prototxt order; where Caffe's semantics differ from torch's a short helper module
below implements Caffe's. Inputs: {input_shapes}.
"""
import torch
'''


def _literal(value: Any) -> str:
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else f"float({str(value)!r})"
    if isinstance(value, tuple):
        inner = ", ".join(_literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    return repr(value)


def _class_name(cls: type[nn.Module]) -> str:
    return f"torch.nn.{cls.__name__}" if getattr(nn, cls.__name__, None) is cls else cls.__name__


def _call(cls: type[nn.Module], args: tuple, kwargs: dict) -> str:
    parts = [_literal(a) for a in args] + [f"{k}={_literal(v)}" for k, v in kwargs.items()]
    return f"{_class_name(cls)}({', '.join(parts)})"


def _helper_sources(plan: ExportPlan) -> list[str]:
    """Source of every helper class the plan uses (and what it needs), first use first."""
    seen: list[Any] = []
    for step in plan.steps:
        cls = step.op.cls
        if getattr(nn, cls.__name__, None) is cls:
            continue
        for obj in (*SUPPORT.get(cls, ()), cls):
            if obj not in seen:
                seen.append(obj)
    return [inspect.getsource(obj) for obj in seen]


def _tuple_target(names: tuple[str, ...]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names)


def generate(plan: ExportPlan) -> str:
    """The text of ``model.py`` for ``plan``."""
    args = ", ".join(var for _, var, _ in plan.inputs)
    outputs = ", ".join(f"{name!r}: {var}" for name, var in plan.outputs)
    shapes = ", ".join(f"{name} {'x'.join(map(str, shape))}" for name, _, shape in plan.inputs)
    header = HEADER.format(name=plan.name or "net", inputs=args,
                           outputs_doc="{" + ", ".join(f"{n!r}: ..." for n, _ in plan.outputs) + "}",
                           input_shapes=shapes or "none")
    lines = [header.rstrip("\n"), ""]
    for source in _helper_sources(plan):
        lines += ["", source.rstrip("\n"), ""]
    lines += ["", "class Net(torch.nn.Module):",
              f'    """{plan.name or "The net"}: forward({args}) -> {{{", ".join(repr(n) for n, _ in plan.outputs)}}}."""',
              "", "    def __init__(self):", "        super().__init__()"]
    for step in plan.steps:
        line = f"        self.{step.attr} = {_call(step.op.cls, step.op.args, dict(step.op.kwargs))}"
        if step.attr != step.name:
            line += f"  # {step.name}"
        lines.append(line)
    lines += ["", f"    def forward(self, {args}):"]
    for step in plan.steps:
        lines.append(f"        {_tuple_target(step.tops)} = self.{step.attr}({', '.join(step.bottoms)})")
    lines += [f"        return {{{outputs}}}", ""]
    return "\n".join(lines)
