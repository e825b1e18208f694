"""The in-memory plain torch module of a net (``caffelike.to_torch(net)``, ``Net.to_torch()``).

Built from real classes, never from generated code: one attribute per layer (the same names
and state_dict keys as the exported ``model.py``'s ``Net``) and a static wiring list that
``forward`` walks. It holds copies of the net's weights and shares no tensor with it.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .describe import ExportPlan, describe


class TorchNet(nn.Module):
    """A net as a plain module: ``forward(*inputs)`` in the net's input order -> dict of output blobs."""

    def __init__(self, plan: ExportPlan):
        super().__init__()
        for step in plan.steps:
            self.add_module(step.attr, step.op.build())
        self.input_names = [name for name, _, _ in plan.inputs]
        self.output_names = [name for name, _ in plan.outputs]
        self._inputs = tuple(var for _, var, _ in plan.inputs)
        self._wiring = tuple((s.attr, s.bottoms, s.tops) for s in plan.steps)
        self._outputs = tuple(plan.outputs)

    def forward(self, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        if len(inputs) != len(self._inputs):
            raise TypeError(f"forward takes {len(self._inputs)} inputs ({', '.join(self.input_names)}), "
                            f"got {len(inputs)}")
        values = dict(zip(self._inputs, inputs))
        for attr, bottoms, tops in self._wiring:
            out = getattr(self, attr)(*[values[b] for b in bottoms])
            if len(tops) == 1:
                values[tops[0]] = out
            else:
                values.update(zip(tops, out))
        return {name: values[var] for name, var in self._outputs}


class OutputTuple(nn.Module):
    """A module returning ``outputs`` of another module's dict as a tuple, in that order (ONNX)."""

    def __init__(self, plain: nn.Module, outputs: Sequence[str]):
        super().__init__()
        self.plain = plain
        self.outputs = list(outputs)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.plain(*inputs)
        return tuple(out[name] for name in self.outputs)


def to_torch(net) -> TorchNet:
    """A plain ``torch.nn.Module`` computing ``net``'s TEST forward, in eval mode (call
    ``.train()`` to fine-tune): same outputs, copies of its weights, no caffelike layer inside."""
    return TorchNet(describe(net.graph)).eval()
