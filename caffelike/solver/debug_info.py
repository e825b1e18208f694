"""``debug_info: true``: Caffe's per-layer ``[Forward]``/``[Backward]``/``[Update]`` log lines.

Caffe's Net (src/caffe/net.cpp, ForwardDebugInfo, BackwardDebugInfo, UpdateDebugInfo) logs
the mean absolute value of every top, bottom diff and parameter blob. We hook the layer
modules of a caffelike Net: forward lines as each layer runs, backward lines (in Caffe's
reverse layer order) once autograd is done, update lines from the solver. Hooks cost one
flag test per layer call while disabled.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..glog import get_logger
from .messages import num

log = get_logger("solver")


def _mean_abs(t: torch.Tensor) -> float:
    return float(t.detach().abs().sum().item()) / max(1, t.numel())


def _param_name(layer_param, index: int) -> str:
    if index < len(layer_param.param) and layer_param.param[index].name:
        return layer_param.param[index].name
    return str(index)


class DebugInfo:
    """Logs Caffe's debug lines for one net while :attr:`enabled`."""

    def __init__(self, net) -> None:
        self.net = net
        self.enabled = False
        self._bottom_diffs: dict[int, list[tuple[str, float]]] = {}
        self._handles = [m.register_forward_hook(self._forward_hook(i))
                         for i, (_, m) in enumerate(net.graph.pairs())]

    def _forward_hook(self, index: int):
        def hook(module, inputs, outputs) -> None:
            if not self.enabled:
                return
            lay = self.net.plan.layers[index]
            tops = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            for name, top in zip(lay.tops, tops):
                log.info("    [Forward] Layer %s, top blob %s data: %s", lay.name, name, num(_mean_abs(top)))
            for j, blob in enumerate(module.blobs):
                log.info("    [Forward] Layer %s, param blob %s data: %s", lay.name,
                         _param_name(lay.param, j), num(_mean_abs(blob)))
            if torch.is_grad_enabled():
                for name, bottom in zip(lay.bottoms, inputs):
                    if isinstance(bottom, torch.Tensor) and bottom.requires_grad:
                        bottom.register_hook(self._bottom_hook(index, name))
        return hook

    def _bottom_hook(self, index: int, name: str):
        def hook(grad: torch.Tensor) -> None:
            self._bottom_diffs.setdefault(index, []).append((name, _mean_abs(grad)))
        return hook

    def after_backward(self, params: Sequence) -> None:
        """Backward lines per layer (last to first), then the all-params norms line."""
        if not self.enabled:
            return
        for index in range(len(self.net.plan.layers) - 1, -1, -1):
            lay = self.net.plan.layers[index]
            for name, value in self._bottom_diffs.get(index, []):
                log.info("    [Backward] Layer %s, bottom blob %s diff: %s", lay.name, name, num(value))
            for j, blob in enumerate(self.net.graph.module(index).blobs):
                if blob.requires_grad and blob.grad is not None:
                    log.info("    [Backward] Layer %s, param blob %d diff: %s", lay.name, j,
                             num(_mean_abs(blob.grad)))
        self._bottom_diffs.clear()
        asum_data = asum_diff = sumsq_data = sumsq_diff = 0.0
        for info in params:
            data, grad = info.tensor.detach(), info.tensor.grad
            asum_data += float(data.abs().sum())
            sumsq_data += float((data * data).sum())
            if grad is not None:
                asum_diff += float(grad.abs().sum())
                sumsq_diff += float((grad * grad).sum())
        log.error("    [Backward] All net params (data, diff): L1 norm = (%s, %s); L2 norm = (%s, %s)",
                  num(asum_data), num(asum_diff), num(math.sqrt(sumsq_data)), num(math.sqrt(sumsq_diff)))

    def update_lines(self, params: Sequence, diffs: Sequence[torch.Tensor]) -> None:
        """``[Update]`` lines: each learnable blob's data before the update and its update value."""
        if not self.enabled:
            return
        for info, diff in zip(params, diffs):
            before = info.tensor.detach() + diff
            layer = next(l for l in self.net.plan.layers if l.name == info.layer)
            log.info("    [Update] Layer %s, param %s data: %s; diff: %s", info.layer,
                     _param_name(layer.param, info.index), num(_mean_abs(before)), num(_mean_abs(diff)))
