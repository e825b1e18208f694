"""pycaffe's ``Net``: the facade users see over a :class:`~caffelike.net.graph.NetGraph`.

Building follows Caffe's Net::Init: read and upgrade (``caffelike.io``), filter by NetState
and wire names (:mod:`.plan`), construct each layer and log its set-up (:mod:`.build`),
resolve parameter specs and sharing, then Caffe's need-backward analysis. The graph runs the
layers; this class keeps pycaffe's per-blob storage (:class:`Blob`) and its numpy API.
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..allocator import keep_freed_memory
from ..blob import Blob, LayerView, ParamBlob
from ..errors import NetError, Where
from ..layers import LAYERS
from ..layers.python import python_layers, python_layers_allowed
from ..glog import get_logger
from ..proto import caffe_pb2
from .backward import LayerRecord, backward_range, clear_param_diffs, record_forward
from .blobs import LastPass, NetBlob
from .build import build_layers, setup_params
from .graph import NetGraph, ParamInfo, leaves_top
from .plan import NetPlan, filter_net, plan_backward, plan_net

log = get_logger("net")

TRAIN = caffe_pb2.TRAIN
TEST = caffe_pb2.TEST


def layer_type_list() -> list[str]:
    """Every registered layer type, sorted (pycaffe's ``caffe.layer_type_list()``)."""
    return LAYERS.names()


def _where_of(source_map: Any, filename: str | None) -> Callable[[caffe_pb2.LayerParameter], Where]:
    if source_map is not None:
        return source_map.where
    return lambda lp: Where(file=filename, layer=lp.name, type=lp.type)


def _read(network: Any, allow_unknown_fields: bool | None) -> tuple[caffe_pb2.NetParameter, Any, str | None]:
    if isinstance(network, caffe_pb2.NetParameter):
        copy = caffe_pb2.NetParameter()
        copy.CopyFrom(network)
        return copy, None, None
    from ..io import read_net

    path = os.fspath(network)
    net_param, source_map = read_net(path, allow_unknown_fields=allow_unknown_fields)
    return net_param, source_map, path


class Net(nn.Module):
    """A Caffe net (pycaffe's ``caffe.Net``) whose layers are torch modules.

    ``Net(prototxt, phase)``, ``Net(prototxt, phase, weights=...)`` or pycaffe's older
    ``Net(prototxt, weights, phase)``; ``prototxt`` may also be a ``NetParameter`` (already
    read: its ``state`` is used as given, plus ``level``/``stages`` when passed), with
    ``source_map`` (``caffelike.io.SourceMap``) giving its errors file:line.
    ``fill=False`` skips the parameter fillers and leaves the blobs uninitialised, for nets
    built only for their shapes or whose weights are all set afterwards (with ``weights``,
    the layers the file covers are never filled anyway). ``allow_python_layers`` (default:
    the current :func:`~caffelike.layers.python.python_layers` setting) refuses Python layers
    when False. ``optimize=True`` (deploy use) folds BatchNorm/Scale into convolutions and
    fuses ReLU (:mod:`caffelike.net.fold`); the folded chains' intermediate blobs then hold
    the chain's output. On the CPU it also compiles the whole forward (:mod:`.compiled`,
    seconds per input shape on the first forward) and uses it where it is the faster pass.
    """

    def __init__(self, network: str | os.PathLike | caffe_pb2.NetParameter,
                 phase_or_weights: int | str | os.PathLike | None = None, phase: int | None = None, *,
                 level: int | None = None, stages: Sequence[str] | None = None, weights: str | None = None,
                 allow_unknown_fields: bool | None = None, allow_python_layers: bool | None = None,
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
        net_param, read_map, filename = _read(network, allow_unknown_fields)
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
        # Layers whose blobs all come from the weights file need no filler run.
        source = None
        if weights is not None:
            from .weights import read_weights_source

            source = read_weights_source(weights)
        loaded = {l.name for l in source.layer if l.blobs} if source is not None else set()
        plan = plan_net(filtered, where_of)
        allowed = python_layers_allowed.get() if allow_python_layers is None else allow_python_layers
        with python_layers(allowed):
            modules, shapes = build_layers(plan, lambda lay: fill and lay.name not in loaded)
        params = setup_params(plan, modules)
        plan, grads = plan_backward(plan, params.needs_grad())
        for module, flags, owners in zip(modules, grads, params.owners):
            for bi, (flag, owner) in enumerate(zip(flags, owners)):
                if owner is None and module.blobs[bi].requires_grad and not flag:
                    module.blobs[bi].requires_grad_(False)
        self.graph = NetGraph(plan, modules, params, stored=self._stored)
        self.name = plan.name
        for name in plan.output_names:
            log.info("This network produces output %s", name)
        self._last_pass = LastPass()
        # Input blobs hold what the user wrote; the others also show the solver's last pass.
        self._blobs = OrderedDict((n, NetBlob(shapes[n], n, None if n in plan.input_names else self._last_pass))
                                  for n in plan.blob_names)
        self._share_split_data()
        for lay, module in self.graph.pairs():
            for i in getattr(module, "held_tops", ()):  # Caffe fills them once, at set-up
                self._blobs[lay.tops[i]].data_tensor().copy_(module.held_value(i))
        for n, w in self.graph.loss_weights.items():  # Caffe presets a loss top's diff to its loss weight
            self._blobs[n].diff_tensor().fill_(w)
        self._views = [LayerView(m) for m in modules]
        self._records: dict[int, LayerRecord] = {}  # each layer's last pycaffe forward (for backward)
        self._fused_steps: tuple[Any, list] = (None, [])
        self._runner: Callable[[Mapping[str, torch.Tensor] | None], dict[str, torch.Tensor]] | None = None
        self._pycaffe_callbacks: dict[str, list[Callable[[int], Any]]] = {k: [] for k in self._CALLBACK_KINDS}
        log.info("Network initialization done.")
        if weights is not None:
            from .weights import copy_trained_layers

            copy_trained_layers(self.graph, source if source is not None else weights, os.fspath(weights))
        if device is not None:
            self.to(device)
        self._compiled: Any = None
        if optimize:  # deploy opt-in: see caffelike.net.fold for what pycaffe readers then see
            from ..export import to_torch
            from .compiled import CompiledForward
            from .fold import optimize_net

            optimize_net(self)
            self._compiled = CompiledForward(self.graph, lambda: to_torch(self), list(self.inputs),
                                             list(self.outputs))

    def _share_split_data(self) -> None:
        # Caffe's SplitLayer shares its bottom's data with every top (no copy); not where a
        # later in-place layer rewrites a top or the bottom (a prototxt's own Split may do that).
        rewritten = {name for lay in self.plan.layers for name, inplace in zip(lay.tops, lay.in_place) if inplace}
        for lay in self.plan.layers:
            if lay.type == "Split" and lay.bottoms[0] not in rewritten:
                for name in lay.tops:
                    if name not in rewritten:
                        self._blobs[name].share_data_with(self._blobs[lay.bottoms[0]])

    # -- the torch surface (solver, tools) ----------------------------------------------------
    @property
    def plan(self) -> NetPlan:
        """The net's frozen plan (layers, wiring, need-backward flags)."""
        return self.graph.plan

    @property
    def output_names(self) -> list[str]:
        return list(self.graph.plan.output_names)

    @property
    def input_names(self) -> list[str]:
        return list(self.graph.plan.input_names)

    @property
    def loss_weights(self) -> dict[str, float]:
        """Blob name -> loss weight, for every top with a non-zero weight."""
        return dict(self.graph.loss_weights)

    @property
    def learnable_params(self) -> list[ParamInfo]:
        """Caffe's learnable_params_ (owners only, in order) with their lr/decay multipliers."""
        return self.graph.learnable_params

    @property
    def device(self) -> torch.device:
        """Where the net's parameters and stored blobs' copies live."""
        return self._device_probe.device

    def _stored(self, name: str) -> torch.Tensor:
        # A blob no earlier layer of this run wrote: a copy of the pycaffe blob's data.
        return self._blobs[name].data_tensor().to(self._device_probe.device, copy=True)

    def run(self, inputs: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """One forward pass with autograd; returns the final value of every blob name.

        ``inputs`` feeds Input-layer tops (and replaces any source layer all of whose tops it
        names); Input tops not given are taken from the pycaffe blobs. Runs the runner set
        with :meth:`set_runner` (e.g. a compiled :meth:`eager_run`) when there is one.
        """
        if self._runner is not None:
            return self._runner(inputs)
        return self._run_with_callbacks(0, len(self.graph) - 1, dict(inputs or {}))

    def eager_run(self, inputs: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """:meth:`run` layer by layer, whatever runner is set."""
        return self.graph.run_range(0, len(self.graph) - 1, dict(inputs or {}))

    def set_runner(self, runner: Callable[[Mapping[str, torch.Tensor] | None], dict[str, torch.Tensor]] | None
                   ) -> None:
        """Make :meth:`run` call ``runner`` (same contract as :meth:`eager_run`); None restores the eager pass."""
        self._runner = runner

    def objective(self, blobs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Caffe's total loss: ``sum(loss_weight * top.sum())`` over the loss-weighted tops."""
        return self.graph.objective(blobs, self._device_probe.device)

    def hold_last_pass(self, values: Mapping[str, torch.Tensor] | None) -> None:
        """Let ``net.blobs`` show ``values`` (a whole pass from :meth:`run`), copied only when read.

        The solver calls this after each training pass, and with None before anything that
        should not keep the pass's tensors alive (its test passes, the next forward).
        """
        self._last_pass.hold(values)

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
        for lay in self.plan.layers:  # as Caffe's blob_loss_weights_: the last layer writing a blob sets it
            weights.update(zip(lay.tops, lay.loss_weights))
        return weights

    @property
    def top_names(self) -> "OrderedDict[str, list[str]]":
        return OrderedDict((lay.name, list(lay.tops)) for lay in self.plan.layers)

    @property
    def bottom_names(self) -> "OrderedDict[str, list[str]]":
        return OrderedDict((lay.name, list(lay.bottoms)) for lay in self.plan.layers)

    def forward(self, blobs: Sequence[str] | None = None, start: str | None = None,
                end: str | None = None, **kwargs: np.ndarray) -> dict[str, np.ndarray]:
        """pycaffe's forward: copy ``kwargs`` into the input blobs, run, return the output blobs."""
        blobs = list(blobs or [])
        start_i = self.plan.layer_index(start) if start is not None else 0
        if end is not None:
            end_i = self.plan.layer_index(end)
            wanted = set(self.plan.layers[end_i].tops) | set(blobs)
        else:
            end_i = len(self.plan.layers) - 1
            wanted = set(self.outputs) | set(blobs)
        if kwargs:
            if set(kwargs) != set(self.inputs):
                raise NetError(f"input blob arguments {sorted(kwargs)} do not match the net inputs "
                               f"{sorted(self.inputs)}")
            if start_i == 0 and end_i == len(self.plan.layers) - 1:
                self._last_pass.hold(None)  # this pass replaces the last one (nothing reads it now)
            for name, array in kwargs.items():
                array = np.asarray(array)
                if array.shape[:1] != self._blobs[name].shape[:1]:
                    raise NetError(f"input '{name}' is not batch sized: {array.shape[0] if array.ndim else '-'} "
                                   f"vs {self._blobs[name].shape[0]}; reshape the blob first")
                self._blobs[name].write(array)
        self._pycaffe_forward(start_i, end_i)
        return {name: self._blobs[name].data for name in wanted}

    def _pycaffe_forward(self, start: int, end: int) -> None:
        before, after = self._callbacks("before_forward"), self._callbacks("after_forward")
        if self.graph.records_graph:  # some layer runs backward: record each layer for backward()
            values = record_forward(self.graph, start, end, self._stored, self._records, before, after)
        elif start == 0 and end == len(self.graph) - 1 and not before and not after:
            self._last_pass.hold(None)  # this pass rewrites every blob: free the last one first
            with torch.no_grad():
                if self._compiled is not None and self._device_probe.device.type == "cpu":
                    if self._compiled_pass():
                        return
                values = self.graph.run_whole(self._whole_pass_steps(), {})
        else:
            with torch.no_grad():
                values = self._run_with_callbacks(start, end)
        self._publish(values)

    def _compiled_pass(self) -> bool:
        """``optimize=True``: the outputs from the compiled forward (:mod:`.compiled`) and the
        other blobs from a layer-by-layer pass when first read; False when that does not serve.

        An input blob whose numpy array no script holds is read without a copy; the pending
        layer-by-layer pass gets its copy only if the blob is written before that pass runs
        (:meth:`LastPass.alias`)."""
        shared = [name for name in self.inputs if not self._blobs[name].handed_out]
        inputs = {name: (self._blobs[name].data_tensor() if name in shared else self._stored(name))
                  for name in self.inputs}

        def layer_by_layer() -> dict[str, torch.Tensor]:
            with torch.no_grad():
                return self.graph.run_whole(self._whole_pass_steps(), dict(inputs))

        outputs = self._compiled.outputs(inputs, layer_by_layer)
        if outputs is None:
            return False
        self._publish({**inputs, **outputs}, complete=layer_by_layer)
        for name in shared:
            self._last_pass.alias(name, self._blobs[name], inputs)
        return True

    def _whole_pass_steps(self) -> list:
        # A whole forward without callbacks runs BatchNorm + in-place Scale as one kernel, and
        # on the CPU each convolution packed with its in-place chain (:mod:`.packed`): the
        # values between the layers of an in-place chain are never visible. Partial forwards,
        # callbacks and backward see every layer. Rebuilt when the graph's modules change
        # (optimize, fusion, sharing) or the net moves.
        key = (self.graph.version, self._device_probe.device)
        if self._fused_steps[0] != key:
            from .fold import floorless_max_pools, in_place_fusions
            from .packed import packed_swaps, packing_available

            swaps = in_place_fusions(self.graph)
            swaps.update(floorless_max_pools(self.graph, swaps))
            if key[1].type == "cpu":
                keep_freed_memory()  # each pass reuses the last one's pages (see ..allocator)
                if packing_available():
                    swaps = packed_swaps(self.graph, swaps)
            # an absorbed layer that rewrote its blob in place has nothing left to do
            steps = [step for step in self.graph.steps_with(swaps) if not leaves_top(step[0], step[1])]
            self._fused_steps = (key, steps)
        return self._fused_steps[1]

    def _publish(self, values: dict[str, torch.Tensor],
                 complete: Callable[[], Mapping[str, torch.Tensor]] | None = None) -> None:
        # The blobs show this pass lazily (copied when read); a blob already read gets its copy
        # now, since a script may hold its numpy array. Blobs this run did not write keep the
        # previous pass's values, so those are copied in before that pass is replaced.
        # ``complete`` computes the blobs missing from ``values`` (see LastPass).
        self._last_pass.complete()
        previous = self._last_pass.values
        if previous is not None:
            for name in previous.keys() - values.keys():
                if name in self._blobs:
                    self._blobs[name].settle()
        self._last_pass.hold(values, complete)
        for name, blob in list(self._last_pass.exposed.items()):
            if blob.copies_eagerly and (complete is not None or name in values):
                blob.data_tensor()

    def backward(self, diffs: Sequence[str] | None = None, start: str | None = None,
                 end: str | None = None, **kwargs: np.ndarray) -> dict[str, np.ndarray]:
        """pycaffe's backward (Caffe's BackwardFromTo): layers ``start`` down to ``end``, inclusive.

        Each layer that needs backward reads its top blobs' ``.diff`` (``kwargs`` set the
        outputs' diffs; a loss top's diff is its loss weight) and overwrites its bottom blobs'
        ``.diff``; parameter diffs accumulate until :meth:`clear_param_diffs`. Returns the
        diffs of the inputs (of ``end``'s bottoms when ``end`` is given) and of ``diffs``.
        """
        diffs = list(diffs or [])
        start_i = self.plan.layer_index(start) if start is not None else len(self.plan.layers) - 1
        if end is not None:
            end_i = self.plan.layer_index(end)
            wanted = set(self.plan.layers[end_i].bottoms) | set(diffs)
        else:
            end_i = 0
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
        device = self._device_probe.device
        backward_range(self.graph, start_i, end_i, self._records,
                       data=self._stored,
                       diff=lambda name: self._blobs[name].diff_tensor().to(device),
                       store_diff=lambda name, t: self._blobs[name].store("diff", t),
                       before=self._callbacks("before_backward"), after=self._callbacks("after_backward"))
        return {name: self._blobs[name].diff for name in wanted}

    def clear_param_diffs(self) -> None:
        """Caffe's Net::ClearParamDiffs: set every parameter's diff to zero."""
        clear_param_diffs(self.graph)

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
        self._settle_blobs()  # the last pass's values first, in their old shapes
        shapes = {n: self._blobs[n].shape for n in self.plan.input_names}
        for lay, module in self.graph.pairs():
            if lay.info.is_input:
                module.set_shapes([shapes[n] for n in lay.tops])
                continue
            bottom_shapes = [shapes[n] for n in lay.bottoms]
            module.reshape(bottom_shapes)
            for name, shape in zip(lay.tops, module.top_shapes(bottom_shapes)):
                shapes[name] = tuple(int(d) for d in shape)
        for name, shape in shapes.items():
            self._blobs[name].reshape(*shape)

    def _settle_blobs(self) -> None:
        """Copy every pending last-pass value into its blob and release the pass."""
        if self._last_pass.values is not None:
            for blob in self._blobs.values():
                blob.settle()
            self._last_pass.hold(None)

    def set_input_arrays(self, data: np.ndarray, labels: np.ndarray) -> None:
        """pycaffe's MemoryData feed (only for nets with a MemoryData layer)."""
        for _, module in self.graph.pairs():
            if hasattr(module, "set_input_arrays"):
                module.set_input_arrays(data, labels)
                return
        raise NetError("set_input_arrays needs a MemoryData layer as the first layer")

    # -- weights -------------------------------------------------------------------------------
    def copy_trained_layers_from(self, source: str | os.PathLike | caffe_pb2.NetParameter) -> None:
        """Caffe's CopyTrainedLayersFrom: copy blobs by layer name from a .caffemodel/HDF5/NetParameter."""
        from .weights import copy_trained_layers

        copy_trained_layers(self.graph, source)

    def copy_from(self, source: str | os.PathLike | caffe_pb2.NetParameter) -> None:
        """pycaffe's name for :meth:`copy_trained_layers_from`."""
        self.copy_trained_layers_from(source)

    def to_net_param(self, write_diff: bool = False) -> caffe_pb2.NetParameter:
        """Caffe's Net::ToProto: every layer's parameter with its blobs, in order."""
        from .weights import net_to_proto

        return net_to_proto(self.graph, write_diff)

    def to_torch(self) -> torch.nn.Module:
        """A plain ``torch.nn.Module`` with this net's TEST forward and copies of its weights
        (:func:`caffelike.export.to_torch`)."""
        from ..export import to_torch

        return to_torch(self)

    def save(self, path: str | os.PathLike) -> None:
        """Write the weights as a binary .caffemodel real Caffe reads."""
        from ..io import write_caffemodel

        write_caffemodel(self.to_net_param(), os.fspath(path))

    def save_hdf5(self, path: str | os.PathLike, write_diff: bool = False) -> None:
        """Caffe's ToHDF5: ``data/<layer>/<i>`` datasets (owned blobs only), ``diff/...`` on request."""
        from .weights import save_hdf5

        save_hdf5(self.graph, os.fspath(path), write_diff)

    def load_hdf5(self, path: str | os.PathLike) -> None:
        """Caffe's CopyTrainedLayersFromHDF5."""
        from .weights import load_hdf5

        load_hdf5(self.graph, os.fspath(path))

    def share_trained_layers_with(self, other: "Net") -> None:
        """Caffe's ShareTrainedLayersWith: use ``other``'s parameter tensors for same-named layers."""
        from .weights import share_trained_layers

        share_trained_layers(self.graph, other.graph)

    def share_with(self, other: "Net") -> None:
        """pycaffe's name for :meth:`share_trained_layers_with`."""
        self.share_trained_layers_with(other)

    # -- pycaffe's callbacks and raw MemoryData feed (_caffe.cpp) -------------------------------
    _CALLBACK_KINDS = ("before_forward", "after_forward", "before_backward", "after_backward")

    def _callbacks(self, kind: str) -> list[Callable[[int], Any]]:
        return self._pycaffe_callbacks[kind]

    def before_forward(self, run: Callable[[int], Any]) -> None:
        """Call ``run(i)`` before layer ``i`` runs forward (Caffe's Net::add_before_forward)."""
        self._callbacks("before_forward").append(run)

    def after_forward(self, run: Callable[[int], Any]) -> None:
        """Call ``run(i)`` after layer ``i`` ran forward."""
        self._callbacks("after_forward").append(run)

    def before_backward(self, run: Callable[[int], Any]) -> None:
        """Call ``run(i)`` before layer ``i``'s backward (for every layer of the range, as Caffe)."""
        self._callbacks("before_backward").append(run)

    def after_backward(self, run: Callable[[int], Any]) -> None:
        """Call ``run(i)`` after layer ``i``'s backward (``caffe.NCCL`` objects are accepted)."""
        self._callbacks("after_backward").append(run)

    def _run_with_callbacks(self, start: int, end: int, values: dict[str, torch.Tensor] | None = None
                            ) -> dict[str, torch.Tensor]:
        """``graph.run_range(start, end, values)``, one layer at a time when forward callbacks are set."""
        before, after = self._callbacks("before_forward"), self._callbacks("after_forward")
        values = {} if values is None else values
        whole = start == 0 and end == len(self.graph) - 1
        if not before and not after and whole:
            return self.graph.run_range(start, end, values)
        # a partial pass, or callbacks around each layer: every layer by itself (a fused pair
        # may be split by the range, and each layer's own top must be visible)
        solo = self.graph.solo_steps()
        if not before and not after:
            return self.graph.run_range(start, end, values, steps=solo)
        for i in range(start, end + 1):
            for run in before:
                run(i)
            self.graph.run_range(i, i, values, steps=solo)
            for run in after:
                run(i)
        return values

    def backward_with_callbacks(self, backward: Callable[[], None], start: str | None = None,
                                end: str | None = None) -> None:
        """Run ``backward()`` (the solver's one autograd pass) with the backward callbacks of layers
        ``start`` down to ``end``: every ``before_backward(i)`` before it and every
        ``after_backward(i)`` after it, each in Caffe's (reverse) order. pycaffe's
        :meth:`backward` runs layer by layer and calls them around each layer instead."""
        before, after = self._callbacks("before_backward"), self._callbacks("after_backward")
        if not before and not after:
            backward()
            return
        first = self.plan.layer_index(start) if start is not None else len(self.plan.layers) - 1
        last = self.plan.layer_index(end) if end is not None else 0
        for i in range(first, last - 1, -1):
            for run in before:
                run(i)
        backward()
        for i in range(first, last - 1, -1):
            for run in after:
                run(i)

    def _set_input_arrays(self, data: np.ndarray, labels: np.ndarray) -> None:
        """pycaffe's raw MemoryData feed: C-contiguous float32 ``data (N, C, H, W)`` and
        ``labels (N, 1, 1, 1)`` (:meth:`set_input_arrays` also takes ``labels (N,)``)."""
        for what, array in (("data", data), ("labels", labels)):
            if not isinstance(array, np.ndarray) or array.dtype != np.float32 or array.ndim != 4 \
                    or not array.flags.c_contiguous:
                raise NetError(f"_set_input_arrays: the {what} array must be a 4-d C-contiguous float32 "
                               f"numpy array, got {type(array).__name__} "
                               f"{getattr(array, 'dtype', '')} {getattr(array, 'shape', '')}")
        if labels.shape[1:] != (1, 1, 1):
            raise NetError(f"_set_input_arrays: labels array has shape {labels.shape}; expected (N, 1, 1, 1)")
        self.set_input_arrays(data, labels)

    def __repr__(self) -> str:
        return f"<caffelike.Net '{self.name}' phase={'TRAIN' if self.phase == TRAIN else 'TEST'} " \
               f"layers={len(self.graph)}>"
