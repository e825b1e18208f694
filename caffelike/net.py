"""A Caffe net on PyTorch: pycaffe's ``Net``/``Blob`` and the torch surface the solver uses.

Building follows Caffe's Net::Init: parse and upgrade (``caffelike.io``), filter by NetState,
wire names (:mod:`caffelike.netplan`), then per layer: construct the module from its bottom
shapes, infer its top shapes on meta tensors (logging Caffe's ``Top shape:`` lines, no
activation is allocated), resolve parameter specs and ``param { name }`` sharing, and finally
Caffe's need-backward analysis.

Running is a plain ordered list of ``(module, bottoms, tops)`` over a dict of tensors: an
in-place top simply rebinds its name. :meth:`Net.run` is the lean autograd path for training;
:meth:`Net.forward`/:meth:`Net.backward` are pycaffe's, with per-blob storage in :class:`Blob`.
"""
from __future__ import annotations

import itertools
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .blob import Blob, LayerView, ParamBlob
from .errors import NetError, Where
from .layers import LAYERS, Layer
from .log import get_logger
from .netplan import LayerPlan, NetPlan, filter_net, mark_backward, plan_net
from .proto import caffe_pb2

log = get_logger("net")

TRAIN = caffe_pb2.TRAIN
TEST = caffe_pb2.TEST


def layer_type_list() -> list[str]:
    """Every registered layer type, sorted (pycaffe's ``caffe.layer_type_list()``)."""
    return LAYERS.names()


def shape_string(shape: Sequence[int]) -> str:
    """Caffe's Blob::shape_string: ``64 20 24 24 (737280)``; a scalar is ``(1)``."""
    count = 1
    for d in shape:
        count *= int(d)
    return "".join(f"{int(d)} " for d in shape) + f"({count})"


@dataclass(frozen=True)
class ParamInfo:
    """One entry of Caffe's ``learnable_params_``: the tensor and its solver multipliers."""

    tensor: nn.Parameter
    lr_mult: float
    decay_mult: float
    layer: str
    index: int


@dataclass
class _ParamSlot:
    """Where a learnable (owner) blob lives and its multipliers (shared blobs update them)."""

    layer: int
    index: int
    lr_mult: float
    decay_mult: float
    has_lr: bool
    has_decay: bool


def _where_of(source_map: Any, filename: str | None) -> Callable[[caffe_pb2.LayerParameter], Where]:
    if source_map is not None:
        return source_map.where
    return lambda lp: Where(file=filename, layer=lp.name, type=lp.type)


def infer_top_shapes(module: Layer, bottom_shapes: Sequence[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """Top shapes of ``module`` for these bottoms, without real data (see ``Layer.top_shapes``)."""
    return [tuple(int(d) for d in s) for s in module.top_shapes(bottom_shapes)]


def _holds_stray_meta(module: nn.Module) -> bool:
    """Whether a module built on the meta device keeps meta tensors outside its parameters/buffers."""
    for sub in module.modules():
        for key, value in vars(sub).items():
            if key in ("_parameters", "_buffers", "_modules"):
                continue
            items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
            if any(isinstance(v, torch.Tensor) and v.is_meta for v in items):
                return True
    return False


def _reshaped_share(owner: nn.Parameter, shape: tuple[int, ...]) -> nn.Parameter:
    """A Parameter over ``owner``'s storage in another shape whose gradient is added to the owner's.

    Caffe's PERMISSIVE sharing: same data and diff memory, only the count must agree.
    """
    view = nn.Parameter(owner.data.view(shape), requires_grad=owner.requires_grad)

    def forward_grad(p: torch.Tensor) -> None:
        grad = p.grad.reshape(owner.shape)
        owner.grad = grad.clone() if owner.grad is None else owner.grad + grad
        p.grad = None

    if view.requires_grad:
        view.register_post_accumulate_grad_hook(forward_grad)
    return view


def _replace_parameter(module: nn.Module, index: int, new: nn.Parameter) -> None:
    """Make blob ``index`` of ``module`` be ``new``, also where the layer keeps it under another name."""
    old = module.blobs[index]
    module.blobs[index] = new
    for sub in module.modules():
        for key, value in list(sub._parameters.items()):
            if value is old:
                sub._parameters[key] = new


class Net(nn.Module):
    """A Caffe net (pycaffe's ``caffe.Net``) whose layers are torch modules.

    ``Net(prototxt, phase)``, ``Net(prototxt, phase, weights=...)`` or pycaffe's older
    ``Net(prototxt, weights, phase)``; ``prototxt`` may also be a ``NetParameter``.
    ``fill=False`` skips the parameter fillers and leaves the blobs uninitialised, for nets
    built only for their shapes or whose weights are all set afterwards (with ``weights``,
    the layers the file covers are never filled anyway). ``source_map`` (``caffelike.io.SourceMap``)
    gives file:line to errors of a net passed as a ``NetParameter``. ``optimize=True`` (deploy
    use) folds BatchNorm/Scale into convolutions and fuses ReLU (:mod:`caffelike.optimize`);
    the folded chains' intermediate blobs then hold the chain's output.
    """

    def __init__(self, network: str | os.PathLike | caffe_pb2.NetParameter,
                 phase_or_weights: int | str | os.PathLike | None = None, phase: int | None = None, *,
                 level: int | None = None, stages: Sequence[str] | None = None, weights: str | None = None,
                 allow_unknown_fields: bool | None = None, allow_python_layers: bool = True,
                 device: str | torch.device | None = None, fill: bool = True, source_map: Any = None,
                 optimize: bool = False):
        super().__init__()
        # An empty buffer that follows net.to(device): where stored blobs and a zero loss go.
        self.register_buffer("_device_probe", torch.zeros(0), persistent=False)
        if isinstance(phase_or_weights, (str, os.PathLike)):
            if weights is not None:
                raise NetError("weights given twice (positionally and as weights=)")
            weights = os.fspath(phase_or_weights)
        elif phase_or_weights is not None:
            if phase is not None:
                raise NetError("phase given twice")
            phase = int(phase_or_weights)
        given_param = isinstance(network, caffe_pb2.NetParameter)
        net_param, read_map, filename = self._read(network, allow_unknown_fields)
        if source_map is None:
            source_map = read_map
        if filename is None and source_map is not None:
            filename = getattr(source_map, "file", None)
        if phase is None:
            phase = net_param.state.phase
        if phase not in (TRAIN, TEST):
            raise NetError(f"phase must be caffelike.TRAIN (0) or caffelike.TEST (1), got {phase!r}")
        # As Caffe's Net(file, phase, level, stages): the phase and level replace the file's
        # state, the stages are added to it. A NetParameter (from the solver) keeps its level.
        net_param.state.phase = phase
        if level is not None or not given_param:
            net_param.state.level = level or 0
        net_param.state.stage.extend(stages or [])
        self.phase = phase
        self.source_file = filename
        where_of = _where_of(source_map, filename)
        filtered = filter_net(net_param, where_of)
        if log.isEnabledFor(logging.INFO):
            from google.protobuf import text_format

            log.info("Initializing net from parameters: \n%s", text_format.MessageToString(filtered).rstrip("\n"))
        self.layer_modules = nn.ModuleList()
        self.blob_shapes: dict[str, tuple[int, ...]] = {}
        self._memory = 0
        # Layers whose blobs all come from the weights file need no filler run.
        source = None
        if weights is not None:
            from .weights import read_weights_source

            source = read_weights_source(weights)
        loaded = {l.name for l in source.layer if l.blobs} if source is not None else set()
        self.plan: NetPlan = plan_net(filtered, where_of, allow_python_layers,
                                      on_layer=lambda lay: self._build_layer(lay, fill and lay.name not in loaded))
        self.name = self.plan.name
        self._slots: list[_ParamSlot] = []
        self._param_owner: list[list[tuple[int, int] | None]] = []
        self._setup_params()
        self._finish_backward_flags()
        self._loss_weights = self._collect_loss_weights()
        for name in self.plan.output_names:
            log.info("This network produces output %s", name)
        self._blobs = OrderedDict((n, Blob(self.blob_shapes[n])) for n in self.plan.blob_names)
        for n, w in self.blob_loss_weights.items():
            if w:  # Caffe presets a loss top's diff to its loss weight
                self._blobs[n].diff_tensor().fill_(w)
        self._views = [LayerView(m) for m in self.layer_modules]
        self._first: dict[str, torch.Tensor] = {}
        self._last: dict[str, torch.Tensor] = {}
        log.info("Network initialization done.")
        if weights is not None:
            from .weights import copy_trained_layers

            copy_trained_layers(self, source if source is not None else weights, os.fspath(weights))
        if device is not None:
            self.to(device)
        if optimize:  # deploy opt-in: see caffelike.optimize for what pycaffe readers then see
            from .optimize import optimize_net

            optimize_net(self)

    # -- building ----------------------------------------------------------------------------
    @staticmethod
    def _read(network: Any, allow_unknown_fields: bool | None) -> tuple[caffe_pb2.NetParameter, Any, str | None]:
        if isinstance(network, caffe_pb2.NetParameter):
            copy = caffe_pb2.NetParameter()
            copy.CopyFrom(network)
            return copy, None, None
        from .io import read_net

        path = os.fspath(network)
        net_param, source_map = read_net(path, allow_unknown_fields=allow_unknown_fields)
        return net_param, source_map, path

    def _construct(self, lay: LayerPlan, bottom_shapes: list[tuple[int, ...]], fill: bool) -> Layer:
        """Build a layer; without ``fill`` its blobs are left uninitialised (built on the meta device)."""
        cls = lay.info.cls
        if not fill:
            try:
                with torch.device("meta"):
                    module = cls(lay.param, bottom_shapes, lay.param.phase, lay.where)
            except (RuntimeError, NotImplementedError, TypeError, ValueError):
                module = None  # this layer cannot be built on the meta device
            if module is not None and not _holds_stray_meta(module):
                return module.to_empty(device="cpu")
        return cls(lay.param, bottom_shapes, lay.param.phase, lay.where)

    def _build_layer(self, lay: LayerPlan, fill: bool) -> None:
        """Construct one wired layer, infer and log its top shapes (Caffe's SetUp step)."""
        bottom_shapes = [self.blob_shapes[n] for n in lay.bottoms]
        module = self._construct(lay, bottom_shapes, fill)
        top_shapes = infer_top_shapes(module, bottom_shapes)
        if len(top_shapes) != len(lay.tops):
            raise NetError(f"layer produced {len(top_shapes)} tops, the prototxt names "
                           f"{len(lay.tops)}", lay.where)
        log.info("Setting up %s", lay.name)
        for name, shape, weight in zip(lay.tops, top_shapes, lay.loss_weights):
            self.blob_shapes[name] = shape
            log.info("Top shape: %s", shape_string(shape))
            if weight:
                log.info("    with loss weight %g", weight)
            self._memory += int(np.prod(shape, dtype=np.int64))
        log.info("Memory required for data: %d", self._memory * 4)
        self.layer_modules.append(module)

    def _param_specs(self, lay: LayerPlan, n_blobs: int) -> list[caffe_pb2.ParamSpec]:
        if len(lay.param.param) > n_blobs:
            raise NetError(f"too many param specs: {len(lay.param.param)} given, the layer has "
                           f"{n_blobs} parameter blobs", lay.where)
        if lay.info.stats_blobs:
            # Caffe's BatchNorm masks its statistics from the solver with lr_mult 0.
            for i in range(n_blobs):
                if i == len(lay.param.param):
                    lay.param.param.add(lr_mult=0.0)
                elif lay.param.param[i].lr_mult != 0:
                    raise NetError("cannot configure batch normalization statistics as layer "
                                   "parameters; use lr_mult: 0 (or no param specs)", lay.where)
        return [lay.param.param[i] if i < len(lay.param.param) else caffe_pb2.ParamSpec()
                for i in range(n_blobs)]

    def _setup_params(self) -> None:
        """Caffe's AppendParam: owners become learnable params, named repeats share the owner's."""
        by_name: dict[str, tuple[int, int, int]] = {}  # param name -> (layer, blob, slot)
        self._specs: list[list[caffe_pb2.ParamSpec]] = []
        for li, (lay, module) in enumerate(zip(self.plan.layers, self.layer_modules)):
            specs = self._param_specs(lay, len(module.blobs))
            self._specs.append(specs)
            owners: list[tuple[int, int] | None] = []
            for bi, spec in enumerate(specs):
                pname = spec.name
                if not pname or pname not in by_name:
                    slot = len(self._slots)
                    self._slots.append(_ParamSlot(li, bi, spec.lr_mult, spec.decay_mult,
                                                  spec.HasField("lr_mult"), spec.HasField("decay_mult")))
                    if pname:
                        by_name[pname] = (li, bi, slot)
                    owners.append(None)
                    continue
                oli, obi, slot = by_name[pname]
                owner_layer = self.plan.layers[oli].name
                log.info("Sharing parameters '%s' owned by layer '%s', param index %d", pname, owner_layer, obi)
                mine = tuple(module.blobs[bi].shape)
                theirs = tuple(self.layer_modules[oli].blobs[obi].shape)
                if spec.share_mode == caffe_pb2.ParamSpec.PERMISSIVE:
                    if int(np.prod(mine)) != int(np.prod(theirs)):
                        raise NetError(f"cannot share param '{pname}' owned by layer '{owner_layer}': "
                                       f"count mismatch, owner shape {theirs}, this layer's {mine}",
                                       lay.where)
                elif mine != theirs:
                    raise NetError(f"cannot share param '{pname}' owned by layer '{owner_layer}': shape "
                                   f"mismatch, owner shape {theirs}, this layer expects {mine} "
                                   f"(share_mode: PERMISSIVE only checks the count)", lay.where)
                info = self._slots[slot]
                for attr, has, what in (("lr_mult", "has_lr", "lr_mult"), ("decay_mult", "has_decay", "decay_mult")):
                    if spec.HasField(what):
                        if getattr(info, has):
                            if getattr(spec, what) != getattr(info, attr):
                                raise NetError(f"shared param '{pname}' has mismatched {what} "
                                               f"({getattr(spec, what):g} here, {getattr(info, attr):g} before)",
                                               lay.where)
                        else:
                            setattr(info, has, True)
                            setattr(info, attr, getattr(spec, what))
                owner_param = self.layer_modules[oli].blobs[obi]
                if mine != theirs:  # PERMISSIVE: the owner's storage seen in this layer's shape
                    _replace_parameter(module, bi, _reshaped_share(owner_param, mine))
                else:
                    _replace_parameter(module, bi, owner_param)
                owners.append((oli, obi))
            self._param_owner.append(owners)

    def _finish_backward_flags(self) -> None:
        needs = [[spec.lr_mult != 0 for spec in specs] for specs in self._specs]
        grads = mark_backward(self.plan, needs)
        for module, flags, owners in zip(self.layer_modules, grads, self._param_owner):
            for bi, (flag, owner) in enumerate(zip(flags, owners)):
                if owner is None and module.blobs[bi].requires_grad and not flag:
                    module.blobs[bi].requires_grad_(False)
        self._record_graph = any(lay.need_backward for lay in self.plan.layers)
        self._detach = [[not b for b in lay.bottom_need_backward] for lay in self.plan.layers]

    # -- torch surface (solver, tools) ---------------------------------------------------------
    @property
    def output_names(self) -> list[str]:
        return list(self.plan.output_names)

    @property
    def input_names(self) -> list[str]:
        return list(self.plan.input_names)

    @property
    def loss_weights(self) -> dict[str, float]:
        """Blob name -> loss weight, for every top with a non-zero weight."""
        return dict(self._loss_weights)

    def _collect_loss_weights(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for lay in self.plan.layers:
            for name, w in zip(lay.tops, lay.loss_weights):
                if w:
                    out[name] = w
        return out

    @property
    def learnable_params(self) -> list[ParamInfo]:
        """Caffe's learnable_params_ (owners only, in order) with their lr/decay multipliers."""
        return [ParamInfo(self.layer_modules[s.layer].blobs[s.index], float(s.lr_mult), float(s.decay_mult),
                          self.plan.layers[s.layer].name, s.index) for s in self._slots]

    def _device(self) -> torch.device:
        return self._device_probe.device

    def run(self, inputs: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """One forward pass with autograd; returns the final value of every blob name.

        ``inputs`` feeds Input-layer tops (and replaces any source layer all of whose tops it
        names); Input tops not given are taken from the pycaffe blobs.
        """
        return self._run_range(0, len(self.plan.layers) - 1, dict(inputs or {}), pycaffe=False)

    def objective(self, blobs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Caffe's total loss: ``sum(loss_weight * top.sum())`` over the loss-weighted tops."""
        total: torch.Tensor | None = None
        for name, w in self._loss_weights.items():
            term = blobs[name].sum() * w
            total = term if total is None else total + term
        return total if total is not None else torch.zeros((), device=self._device())

    def _run_range(self, start: int, end: int, values: dict[str, torch.Tensor], pycaffe: bool
                   ) -> dict[str, torch.Tensor]:
        device: torch.device | None = None

        def stored(name: str) -> torch.Tensor:
            # A blob no earlier layer of this run wrote: a copy of the pycaffe blob's data.
            nonlocal device
            if device is None:
                device = self._device()
            return self._blobs[name].data_tensor().to(device, copy=True)

        fresh_inputs = pycaffe and self._record_graph and self.plan.force_backward
        first = self._first
        steps = zip(self.plan.layers, self.layer_modules, self._detach)
        for lay, module, detach_flags in itertools.islice(steps, start, end + 1):
            if lay.type == "Input" or (not lay.bottoms and lay.tops and all(t in values for t in lay.tops)):
                for name in lay.tops:
                    if name not in values:
                        values[name] = stored(name)
                    if fresh_inputs:
                        values[name] = values[name].detach().clone().requires_grad_(True)
                    if pycaffe:
                        first.setdefault(name, values[name])
                continue
            bottoms = []
            for name, detach in zip(lay.bottoms, detach_flags):
                t = values.get(name)
                if t is None:  # a run that starts mid-net reads the stored blobs
                    t = values[name] = stored(name)
                bottoms.append(t.detach() if detach and t.requires_grad else t)
            tops = module(*bottoms)
            for name, t, inplace in zip(lay.tops, tops, lay.in_place):
                values[name] = t
                if pycaffe and not inplace:
                    first[name] = t
        return values

    # -- pycaffe surface -------------------------------------------------------------------------
    @property
    def blobs(self) -> "OrderedDict[str, Blob]":
        return self._blobs

    @property
    def params(self) -> "OrderedDict[str, list[ParamBlob]]":
        return OrderedDict((lay.name, view.blobs) for lay, view in zip(self.plan.layers, self._views)
                           if view.blobs)

    @property
    def layers(self) -> list[LayerView]:
        return list(self._views)

    @property
    def layer_dict(self) -> "OrderedDict[str, LayerView]":
        return OrderedDict((lay.name, v) for lay, v in zip(self.plan.layers, self._views))

    @property
    def _layer_names(self) -> list[str]:
        return [lay.name for lay in self.plan.layers]

    @property
    def _blob_names(self) -> list[str]:
        return list(self.plan.blob_names)

    @property
    def inputs(self) -> list[str]:
        return list(self.plan.input_names)

    @property
    def outputs(self) -> list[str]:
        return list(self.plan.output_names)

    @property
    def blob_loss_weights(self) -> "OrderedDict[str, float]":
        weights = OrderedDict((n, 0.0) for n in self.plan.blob_names)
        for lay in self.plan.layers:
            for name, w in zip(lay.tops, lay.loss_weights):
                weights[name] = w
        return weights

    @property
    def top_names(self) -> "OrderedDict[str, list[str]]":
        return OrderedDict((lay.name, list(lay.tops)) for lay in self.plan.layers)

    @property
    def bottom_names(self) -> "OrderedDict[str, list[str]]":
        return OrderedDict((lay.name, list(lay.bottoms)) for lay in self.plan.layers)

    def _layer_index(self, name: str) -> int:
        try:
            return self._layer_names.index(name)
        except ValueError:
            raise NetError(f"unknown layer '{name}' (layers: {', '.join(self._layer_names)})") from None

    def forward(self, blobs: Sequence[str] | None = None, start: str | None = None,
                end: str | None = None, **kwargs: np.ndarray) -> dict[str, np.ndarray]:
        """pycaffe's forward: copy ``kwargs`` into the input blobs, run, return the output blobs."""
        blobs = list(blobs or [])
        start_i = self._layer_index(start) if start is not None else 0
        if end is not None:
            end_i = self._layer_index(end)
            wanted = set(self.plan.layers[end_i].tops) | set(blobs)
        else:
            end_i = len(self.plan.layers) - 1
            wanted = set(self.outputs) | set(blobs)
        if kwargs:
            if set(kwargs) != set(self.inputs):
                raise NetError(f"input blob arguments {sorted(kwargs)} do not match the net inputs "
                               f"{sorted(self.inputs)}")
            for name, array in kwargs.items():
                array = np.asarray(array)
                if array.shape[:1] != self._blobs[name].shape[:1]:
                    raise NetError(f"input '{name}' is not batch sized: {array.shape[0] if array.ndim else '-'} "
                                   f"vs {self._blobs[name].shape[0]}; reshape the blob first")
                self._blobs[name].data[...] = array
        self._pycaffe_forward(start_i, end_i)
        return {name: self._blobs[name].data for name in wanted}

    def _pycaffe_forward(self, start: int, end: int) -> None:
        self._first, self._last = {}, {}
        grad = self._record_graph
        with torch.set_grad_enabled(grad):
            values = self._run_range(start, end, {}, pycaffe=True)
        for name, t in values.items():
            self._blobs[name].store("data", t)
        self._last = values if grad else {}
        if not grad:
            self._first = {}

    def backward(self, diffs: Sequence[str] | None = None, start: str | None = None,
                 end: str | None = None, **kwargs: np.ndarray) -> dict[str, np.ndarray]:
        """pycaffe's backward through the last forward: fills the ``.diff`` of blobs and params.

        Loss tops start from their loss weight, other outputs from their ``.diff`` (set by
        ``kwargs``). Only layers Caffe would run backward contribute (see netplan.mark_backward);
        parameter diffs accumulate, as in Caffe, until cleared.
        """
        diffs = list(diffs or [])
        if start is not None or end is not None:
            log.warning("backward(start=, end=) runs the whole backward pass in caffelike")
        wanted = set(self.inputs) | set(diffs)
        if kwargs:
            if set(kwargs) != set(self.outputs):
                raise NetError(f"top diff arguments {sorted(kwargs)} do not match the net outputs "
                               f"{sorted(self.outputs)}")
            for name, array in kwargs.items():
                array = np.asarray(array)
                if array.shape[:1] != self._blobs[name].shape[:1]:
                    raise NetError(f"diff '{name}' is not batch sized")
                self._blobs[name].diff[...] = array
        self._pycaffe_backward()
        return {name: self._blobs[name].diff for name in wanted}

    def _pycaffe_backward(self) -> None:
        if not self._last:
            return
        roots, grads = [], []
        weights = self.loss_weights
        for name, t in self._last.items():
            if not t.requires_grad:
                continue
            if name in weights:
                roots.append(t)
                grads.append(torch.full_like(t, weights[name]))
            elif name in self.plan.output_names:
                roots.append(t)
                grads.append(self._blobs[name].diff_tensor().to(t.device).reshape(t.shape))
        if not roots:
            return
        targets = [t for t in self._first.values() if t.requires_grad]
        params = [p for lay, m in zip(self.plan.layers, self.layer_modules) if lay.need_backward
                  for p in m.blobs if p.requires_grad]
        for t in targets:
            t.grad = None
        seen: set[int] = set()
        unique_params = [p for p in params if not (id(p) in seen or seen.add(id(p)))]
        torch.autograd.backward(roots, grads, retain_graph=True, inputs=targets + unique_params)
        for name, t in self._first.items():
            if t.grad is not None:
                self._blobs[name].store("diff", t.grad)

    def forward_all(self, blobs: Sequence[str] | None = None, **kwargs: np.ndarray) -> dict[str, np.ndarray]:
        """pycaffe's forward_all: run in batches of the net's batch size, concatenate outputs."""
        wanted = set(self.outputs) | set(blobs or [])
        outs: dict[str, list[np.ndarray]] = {name: [] for name in wanted}
        for batch in self._batches(kwargs):
            for name, value in self.forward(blobs=blobs, **batch).items():
                outs[name].extend(value.copy())
        result = {name: np.asarray(v) for name, v in outs.items()}
        return self._unpad(result, kwargs)

    def forward_backward_all(self, blobs: Sequence[str] | None = None, diffs: Sequence[str] | None = None,
                             **kwargs: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """pycaffe's forward_backward_all."""
        outs: dict[str, list] = {n: [] for n in set(self.outputs) | set(blobs or [])}
        douts: dict[str, list] = {n: [] for n in set(self.inputs) | set(diffs or [])}
        fwd = list(self._batches({k: v for k, v in kwargs.items() if k in self.inputs}))
        bwd = list(self._batches({k: v for k, v in kwargs.items() if k in self.outputs}))
        for i in range(max(len(fwd), len(bwd))):
            for name, value in self.forward(blobs=blobs, **(fwd[i] if i < len(fwd) else {})).items():
                outs[name].extend(value.copy())
            for name, value in self.backward(diffs=diffs, **(bwd[i] if i < len(bwd) else {})).items():
                douts[name].extend(value.copy())
        return (self._unpad({n: np.asarray(v) for n, v in outs.items()}, kwargs),
                self._unpad({n: np.asarray(v) for n, v in douts.items()}, kwargs))

    def _batches(self, arrays: Mapping[str, np.ndarray]) -> Iterable[dict[str, np.ndarray]]:
        if not arrays:
            return
        num = len(next(iter(arrays.values())))
        batch = next(iter(self._blobs.values())).shape[0]
        for i in range(0, num - num % batch, batch):
            yield {n: a[i:i + batch] for n, a in arrays.items()}
        rest = num % batch
        if rest:
            yield {n: np.concatenate([a[-rest:], np.zeros((batch - rest,) + a.shape[1:], a.dtype)])
                   for n, a in arrays.items()}

    @staticmethod
    def _unpad(result: dict[str, np.ndarray], kwargs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not result or not kwargs:
            return result
        pad = len(next(iter(result.values()))) - len(next(iter(kwargs.values())))
        return {n: v[:-pad] for n, v in result.items()} if pad > 0 else result

    def reshape(self) -> None:
        """Caffe's Net::Reshape: propagate the (possibly new) input blob shapes through every layer."""
        shapes = {n: self._blobs[n].shape for n in self.plan.input_names}
        for lay, module in zip(self.plan.layers, self.layer_modules):
            if lay.type == "Input":
                module.shapes = [shapes[n] for n in lay.tops]
                continue
            bottom_shapes = [shapes[n] for n in lay.bottoms]
            module.reshape(bottom_shapes)
            for name, shape in zip(lay.tops, module.top_shapes(bottom_shapes)):
                shapes[name] = tuple(int(d) for d in shape)
        for name, shape in shapes.items():
            self.blob_shapes[name] = shape
            self._blobs[name].reshape(*shape)

    def set_input_arrays(self, data: np.ndarray, labels: np.ndarray) -> None:
        """pycaffe's MemoryData feed (only for nets with a MemoryData layer)."""
        for lay, module in zip(self.plan.layers, self.layer_modules):
            if lay.type == "MemoryData" and hasattr(module, "set_input_arrays"):
                if labels.ndim == 1:
                    labels = np.ascontiguousarray(labels[:, None, None, None])
                module.set_input_arrays(data, labels)
                return
        raise NetError("set_input_arrays needs a MemoryData layer as the first layer")

    # -- weights -------------------------------------------------------------------------------
    def copy_trained_layers_from(self, source: str | os.PathLike | caffe_pb2.NetParameter) -> None:
        """Caffe's CopyTrainedLayersFrom: copy blobs by layer name from a .caffemodel/HDF5/NetParameter."""
        from .weights import copy_trained_layers

        copy_trained_layers(self, source)

    def copy_from(self, source: str | os.PathLike | caffe_pb2.NetParameter) -> None:
        """pycaffe's name for :meth:`copy_trained_layers_from`."""
        self.copy_trained_layers_from(source)

    def to_net_param(self, write_diff: bool = False) -> caffe_pb2.NetParameter:
        """Caffe's Net::ToProto: every layer's parameter with its blobs, in order."""
        from .weights import net_to_proto

        return net_to_proto(self, write_diff)

    def save(self, path: str | os.PathLike) -> None:
        """Write the weights as a binary .caffemodel real Caffe reads."""
        from .io import write_caffemodel

        write_caffemodel(self.to_net_param(), os.fspath(path))

    def save_hdf5(self, path: str | os.PathLike, write_diff: bool = False) -> None:
        """Caffe's ToHDF5: ``data/<layer>/<i>`` datasets (owned blobs only), ``diff/...`` on request."""
        from .weights import save_hdf5

        save_hdf5(self, os.fspath(path), write_diff)

    def load_hdf5(self, path: str | os.PathLike) -> None:
        """Caffe's CopyTrainedLayersFromHDF5."""
        from .weights import load_hdf5

        load_hdf5(self, os.fspath(path))

    def share_trained_layers_with(self, other: "Net") -> None:
        """Caffe's ShareTrainedLayersWith: use ``other``'s parameter tensors for same-named layers."""
        from .weights import share_trained_layers

        share_trained_layers(self, other)

    def share_with(self, other: "Net") -> None:
        """pycaffe's name for :meth:`share_trained_layers_with`."""
        self.share_trained_layers_with(other)

    def __repr__(self) -> str:
        return f"<caffelike.Net '{self.name}' phase={'TRAIN' if self.phase == TRAIN else 'TEST'} " \
               f"layers={len(self.plan.layers)}>"
