"""The numerical guard: a cheap loss check every iteration, a per-layer diagnosis on failure.

Training calls :func:`loss_is_finite` on the scalar loss it already has (no per-layer cost).
When that fails, :func:`diagnose` re-runs the same batch layer by layer (the data layers' tops
are taken from the failed pass, so no new batch is read) and names the first layer whose
output, parameter or gradient is NaN/Inf; :func:`raise_nonfinite` turns that into a
:class:`~caffelike.errors.NumericalError` with the layer's file and line.

Hook in the solver loop (``Solver.step``, after each of the ``iter_size`` forward/backward
passes, so the batch re-run is the one that failed, and before ``apply_update``)::

    if self.nan_guard and not guard.loss_is_finite(sub_loss):
        guard.raise_nonfinite(self.net, blobs, self.iter, float(sub_loss))
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

import torch

from .errors import NumericalError, Where
from .glog import get_logger

if TYPE_CHECKING:  # pragma: no cover
    from .net import Net

log = get_logger("guard")


@dataclass(frozen=True)
class NonFinite:
    """Where a NaN/Inf first appeared: the layer, the pass, and which of its tensors."""

    layer: str
    type: str
    where: Where
    stage: str  # "forward" or "backward"
    what: str  # e.g. "top 'ip1'", "param 0", "gradient of bottom 'conv1'"
    value: str  # "NaN", "Inf" or "NaN and Inf"


def loss_is_finite(loss: float | torch.Tensor) -> bool:
    """The per-iteration scalar check: is the loss neither NaN nor Inf?"""
    if isinstance(loss, torch.Tensor):
        loss = float(loss.detach())
    return math.isfinite(float(loss))


def _bad(t: torch.Tensor | None) -> str | None:
    """'NaN', 'Inf', 'NaN and Inf' for a tensor holding them, else None."""
    if t is None or not t.is_floating_point():
        return None
    t = t.detach()
    if bool(torch.isfinite(t).all()):
        return None
    has_nan, has_inf = bool(torch.isnan(t).any()), bool(torch.isinf(t).any())
    return "NaN and Inf" if has_nan and has_inf else ("NaN" if has_nan else "Inf")


def source_inputs(net: "Net", blobs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tops of the bottomless layers (data, Input) taken from a finished pass's blobs.

    A name that a later layer rebinds in place holds the rebound value in ``blobs``; such a
    net is re-run from that value (a warning says so).
    """
    rebound = {t for lay in net.plan.layers if lay.bottoms for t, ip in zip(lay.tops, lay.in_place) if ip}
    inputs: dict[str, torch.Tensor] = {}
    for lay in net.plan.layers:
        if lay.bottoms:
            continue
        for name in lay.tops:
            if name in blobs:
                if name in rebound:
                    log.warning("guard: blob '%s' is rewritten in place later in the net; the re-run "
                                "starts from its final value", name)
                inputs[name] = blobs[name].detach().clone()
    return inputs


def _param_tensors(module: torch.nn.Module) -> list[torch.Tensor]:
    """A layer's parameter blobs in Caffe's order (``Layer.blobs``), else its torch parameters."""
    blobs = getattr(module, "blobs", None)
    return list(blobs) if blobs is not None else list(module.parameters())


def diagnose(net: "Net", inputs: Mapping[str, torch.Tensor]) -> NonFinite | None:
    """Re-run one batch layer by layer; the first layer whose output or gradient is non-finite.

    Forward first (in layer order: its parameters, then its tops), then, if the forward and
    the objective are finite, backward (in reverse layer order: a layer is blamed when the
    gradients reaching its tops are finite but those it sends to its bottoms or parameters
    are not). None when everything is finite (e.g. a non-deterministic layer changed its
    mind on the re-run). Parameters and buffers are restored afterwards.
    """
    state = [*net.parameters(), *net.buffers()]
    saved = [s.detach().clone() for s in state]  # forward passes move BatchNorm's running stats
    try:
        return _diagnose(net, inputs)
    finally:
        with torch.no_grad():
            for s, copy in zip(state, saved):
                s.copy_(copy)


def _diagnose(net: "Net", inputs: Mapping[str, torch.Tensor]) -> NonFinite | None:
    plan = net.plan
    values: dict[str, torch.Tensor] = dict(inputs)
    record: list[tuple[int, list[torch.Tensor], list[torch.Tensor]]] = []
    with torch.enable_grad():
        for i, lay in enumerate(plan.layers):
            module = net.graph.module(i)
            for k, p in enumerate(_param_tensors(module)):
                if (value := _bad(p)) is not None:
                    return NonFinite(lay.name, lay.type, lay.where, "forward", f"param {k}", value)
            bottoms = [values[b] for b in lay.bottoms if b in values]
            net.graph.run_range(i, i, values)
            tops = [values[t] for t in lay.tops]
            for name, t in zip(lay.tops, tops):
                if (value := _bad(t)) is not None:
                    return NonFinite(lay.name, lay.type, lay.where, "forward", f"top '{name}'", value)
            record.append((i, bottoms, tops))
        objective = net.objective(values)
        if (value := _bad(objective)) is not None:  # finite tops, weighted sum overflowed
            lay = _last_loss_layer(net)
            return NonFinite(lay.name, lay.type, lay.where, "forward", "weighted loss sum", value)
        if not objective.requires_grad:
            return None
        return _diagnose_backward(net, objective, record)


def _last_loss_layer(net: "Net"):
    weighted = set(net.loss_weights)
    for lay in reversed(net.plan.layers):
        if weighted.intersection(lay.tops):
            return lay
    return net.plan.layers[-1]


def _grads(outputs: Sequence[torch.Tensor], inputs: Sequence[torch.Tensor],
           grad_outputs: Sequence[torch.Tensor] | None = None) -> list[torch.Tensor | None]:
    pairs = [(k, t) for k, t in enumerate(inputs) if t.requires_grad]
    outs = [(o, g) for o, g in zip(outputs, grad_outputs or [None] * len(outputs))
            if o.requires_grad and o.grad_fn is not None]
    result: list[torch.Tensor | None] = [None] * len(inputs)
    if not pairs or not outs:
        return result
    got = torch.autograd.grad([o for o, _ in outs], [t for _, t in pairs],
                              grad_outputs=[g for _, g in outs] if grad_outputs is not None else None,
                              retain_graph=True, allow_unused=True)
    for (k, _), g in zip(pairs, got):
        result[k] = g
    return result


def _diagnose_backward(net: "Net", objective: torch.Tensor,
                       record: list[tuple[int, list[torch.Tensor], list[torch.Tensor]]]) -> NonFinite | None:
    all_tops = [t for _, _, tops in record for t in tops]
    top_grads = _grads([objective], all_tops)
    grad_of = {id(t): g for t, g in zip(all_tops, top_grads)}
    for i, bottoms, tops in reversed(record):
        lay = net.plan.layers[i]
        pairs = [(t, grad_of.get(id(t))) for t in tops]
        pairs = [(t, g) for t, g in pairs if g is not None and t.grad_fn is not None]
        if not pairs or any(_bad(g) for _, g in pairs):
            continue  # nothing reaches it, or the fault is downstream (already checked)
        params = _param_tensors(net.graph.module(i))
        local = _grads([t for t, _ in pairs], [*bottoms, *params], [g for _, g in pairs])
        for k, g in enumerate(local):
            if (value := _bad(g)) is not None:
                what = (f"gradient of bottom '{lay.bottoms[k]}'" if k < len(bottoms)
                        else f"gradient of param {k - len(bottoms)}")
                return NonFinite(lay.name, lay.type, lay.where, "backward", what, value)
    return None


def describe(found: NonFinite | None, iteration: int, loss: float | None = None) -> str:
    """The one-line message of a NumericalError (without the location prefix)."""
    head = f"iteration {iteration}: loss is {loss}" if loss is not None else f"iteration {iteration}"
    if found is None:
        return (f"{head}; a per-layer re-run of the batch found no NaN/Inf (a random layer such as "
                "Dropout may differ); lower base_lr or add clip_gradients, or pass --no-nan-guard "
                "to carry on as Caffe does")
    return (f"{head}; first non-finite value ({found.value}) in the {found.stage} pass: {found.what}; "
            "lower base_lr, add clip_gradients, check the data, or pass --no-nan-guard to carry on "
            "as Caffe does")


def raise_nonfinite(net: "Net", blobs: Mapping[str, torch.Tensor], iteration: int,
                    loss: float | None = None) -> None:
    """Diagnose the batch behind ``blobs`` and raise a NumericalError naming the layer."""
    found = diagnose(net, source_inputs(net, blobs))
    where = found.where.with_layer(found.layer, found.type) if found is not None else None
    raise NumericalError(describe(found, iteration, loss), where)
