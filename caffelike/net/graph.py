"""NetGraph: the built net as other modules see it (the solver, folding, guard, weights, tools).

A plan (:class:`~caffelike.net.plan.NetPlan`, with need-backward flags) and one module per
layer, run as a plain ordered list over a dict of tensors: an in-place top simply rebinds its
name. The public API is small: iterate ``(layer plan, module)`` pairs, run a range of layers,
replace a layer's module, find the owner of a shared parameter, the learnable parameters and
the objective.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Mapping

import torch
from torch import nn
from torch.nn.modules.module import (_global_backward_hooks, _global_backward_pre_hooks, _global_forward_hooks,
                                     _global_forward_pre_hooks)

from ..layers import running_sums
from ..layers.base import Delegating, Layer
from .build import ParamTable, replace_parameter
from .plan import LayerPlan, NetPlan

StoredFn = Callable[[str], torch.Tensor]
# One layer of the run loop: its plan, the module to run (None: nothing to run, the layer
# leaves its in-place top as it is), which bottoms to detach, is a source.
Step = tuple[LayerPlan, "nn.Module | None", tuple[bool, ...], bool]


@dataclass(frozen=True)
class ParamInfo:
    """One entry of Caffe's ``learnable_params_``: the tensor and its solver multipliers."""

    tensor: nn.Parameter
    lr_mult: float
    decay_mult: float
    layer: str
    index: int


def _run_source(lay: LayerPlan, module: nn.Module, values: dict[str, torch.Tensor],
                stored: StoredFn) -> None:
    """Put the tops of source layer ``lay`` in ``values``. An Input layer's, and those of one
    whose tops are all in ``values`` already, are not computed: the missing ones are read from
    the stored blobs. Otherwise ``module`` runs; its held tops (:attr:`Layer.held_tops`) are
    then read from the stored blobs too (unless ``values`` has them)."""
    if lay.info.is_input or (lay.tops and all(t in values for t in lay.tops)):
        for name in lay.tops:
            if name not in values:
                values[name] = stored(name)
        return
    held = getattr(module, "held_tops", ())
    for i, (name, t) in enumerate(zip(lay.tops, module())):
        if i not in held:
            values[name] = t
        elif name not in values:
            values[name] = stored(name)


def _hooked(module: nn.Module) -> bool:
    """Whether a torch hook is set on ``module``: then it is called, not its ``forward`` (the
    run loops skip nn.Module's ``__call__``, which only adds the hook dispatch)."""
    return bool(module._forward_hooks or module._forward_pre_hooks
                or module._backward_hooks or module._backward_pre_hooks)


def leaves_top(lay: LayerPlan, module: nn.Module) -> bool:
    """Whether layer ``lay`` run by ``module`` has nothing to do: an in-place layer whose
    module is an identity stand-in (a Scale absorbed into its BatchNorm's kernel)."""
    return isinstance(module, Delegating) and module.is_identity and lay.tops == lay.bottoms


def _no_stored(name: str) -> torch.Tensor:
    raise KeyError(f"blob '{name}' was not computed in this run and the graph has no stored blobs")


class NetGraph(nn.Module):
    """The layers of a net with their plan; see the module docstring for the API."""

    def __init__(self, plan: NetPlan, modules: list[Layer], params: ParamTable,
                 stored: StoredFn | None = None):
        super().__init__()
        self.plan = plan
        self.layers = nn.ModuleList(modules)
        self.params_table = params
        self.loss_weights: dict[str, float] = plan.loss_weights()
        # Whether a forward must record autograd's graph (some layer runs backward).
        self.records_graph = any(lay.need_backward for lay in plan.layers)
        self._stored = stored or _no_stored
        self._steps: list[Step] = []
        self.version = 0  # counts module replacements (for step lists derived from this graph)
        self._make_steps()

    def _make_steps(self) -> None:
        # Flattened once (and after each replacement): the run loop does no lookups per layer.
        self._steps = [(lay, None, *rest) if leaves_top(lay, module) else (lay, module, *rest)
                       for lay, module, *rest in self.steps_with({})]
        self._solo_steps = self.steps_with({i: self.solo(i) for i in range(len(self.layers))})
        self.version += 1

    def solo(self, index: int) -> nn.Module:
        """The module that runs layer ``index`` by itself (:meth:`Delegating.alone`): what
        pycaffe's layer-by-layer paths and partial forwards run."""
        module = self.layers[index]
        return module.alone() if isinstance(module, Delegating) else module

    def solo_steps(self) -> list[Step]:
        """:meth:`steps_with` of the :meth:`solo` modules, for :meth:`run_range`'s ``steps``."""
        return self._solo_steps

    def steps_with(self, swaps: Mapping[int, nn.Module]) -> list[Step]:
        """The run loop's steps, with the modules of ``swaps`` (layer index -> module) run in
        place of the graph's own, for :meth:`run_range`'s ``steps`` (the graph is unchanged)."""
        return [(lay, swaps.get(i, module), tuple(not b for b in lay.bottom_need_backward),
                 lay.info.is_input or not lay.bottoms)
                for i, (lay, module) in enumerate(zip(self.plan.layers, self.layers))]

    # -- structure --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.plan.layers)

    def pairs(self) -> Iterator[tuple[LayerPlan, nn.Module]]:
        """``(layer plan, module)`` for every layer, in order."""
        return zip(self.plan.layers, self.layers)

    def to_channels_last(self) -> int:
        """Ask every layer to store its weights channels_last where it prefers that (4-axis
        convolutions); returns how many changed."""
        return sum(bool(module.to_channels_last()) for module in self.layers)

    def module(self, index: int) -> nn.Module:
        """The module of layer ``index``."""
        return self.layers[index]

    def replace_module(self, index: int, module: nn.Module) -> None:
        """Run ``module`` in place of layer ``index``'s (folding, fusion); the plan is unchanged."""
        self.layers[index] = module
        self._make_steps()

    def layer_index(self, name: str) -> int:
        """Index of the first layer called ``name``."""
        return self.plan.layer_index(name)

    def param_owner(self, layer: int, blob: int) -> tuple[int, int] | None:
        """``(layer, blob)`` owning a shared parameter blob; None for a blob the layer owns."""
        return self.params_table.owners[layer][blob]

    def layer_param(self, index: int):
        """Layer ``index``'s LayerParameter as set up (what Caffe's Net::ToProto writes)."""
        return self.params_table.layer_params[index]

    def share_param(self, layer: int, blob: int, tensor: nn.Parameter) -> None:
        """Make blob ``blob`` of layer ``layer`` be ``tensor`` (Caffe's ShareTrainedLayersWith)."""
        replace_parameter(self.layers[layer], blob, tensor)

    @property
    def learnable_params(self) -> list[ParamInfo]:
        """Caffe's learnable_params_ (owners only, in order) with their lr/decay multipliers."""
        return [ParamInfo(self.layers[s.layer].blobs[s.index], float(s.lr_mult), float(s.decay_mult),
                          self.plan.layers[s.layer].name, s.index) for s in self.params_table.slots]

    # -- running ----------------------------------------------------------------------------------
    def objective(self, blobs: Mapping[str, torch.Tensor], device: torch.device | None = None) -> torch.Tensor:
        """Caffe's total loss: ``sum(loss_weight * top.sum())`` over the loss-weighted tops."""
        total: torch.Tensor | None = None
        for name, w in self.loss_weights.items():
            top = blobs[name]
            # a scalar top of weight 1 is its own term (the same value, two autograd nodes fewer)
            term = top if top.dim() == 0 and w == 1.0 else top.sum() * w
            total = term if total is None else total + term
        return total if total is not None else torch.zeros((), device=device)

    def run_range(self, start: int, end: int, values: dict[str, torch.Tensor],
                  steps: list[Step] | None = None) -> dict[str, torch.Tensor]:
        """Run layers ``start``..``end`` (inclusive) over ``values`` (blob name -> tensor), in place.

        A bottom no earlier layer of the run wrote is read from the stored blobs. A source layer
        (no bottoms) whose tops are all in ``values`` is not run; an Input layer never is, and
        held tops are read from the stored blobs.
        ``steps`` (from :meth:`steps_with`) runs other modules for some layers.
        (pycaffe's layer-by-layer forward and backward are in :mod:`.backward`.)
        """
        with running_sums.deferred():  # BatchNorm's running sums: one update for the pass
            return self._run_steps((steps or self._steps)[start:end + 1], values)

    def _run_steps(self, steps: list[Step], values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        stored = self._stored
        direct = not (_global_forward_hooks or _global_forward_pre_hooks or _global_backward_hooks
                      or _global_backward_pre_hooks or torch._C._get_tracing_state())
        for lay, module, detach_flags, source in steps:
            if module is None:
                continue
            if source:
                _run_source(lay, module, values, stored)
                continue
            bottoms = []
            for name, detach in zip(lay.bottoms, detach_flags):
                t = values.get(name)
                if t is None:  # a run that starts mid-net reads the stored blobs
                    t = values[name] = stored(name)
                bottoms.append(t.detach() if detach and t.requires_grad else t)
            tops = module.forward(*bottoms) if direct and not _hooked(module) else module(*bottoms)
            for name, t in zip(lay.tops, tops):
                values[name] = t
        return values

    def run_whole(self, steps: list[Step], values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """:meth:`run_range` over every layer for a pass that records nothing (under no_grad,
        e.g. pycaffe's whole forward): the same results, without its per-layer bookkeeping
        (no detaching; a module's ``forward`` is called directly unless it has hooks)."""
        if _global_forward_hooks or _global_forward_pre_hooks:
            return self.run_range(0, len(self) - 1, values, steps)
        stored = self._stored
        for lay, module, _, source in steps:
            if source:
                _run_source(lay, module, values, stored)
                continue
            call = module if _hooked(module) else module.forward
            bottoms = []
            for name in lay.bottoms:
                t = values.get(name)
                if t is None:
                    t = values[name] = stored(name)
                bottoms.append(t)
            for name, t in zip(lay.tops, call(*bottoms)):
                values[name] = t
        return values

