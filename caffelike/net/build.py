"""Modules from a plan: Caffe's per-layer SetUp (with its log lines) and AppendParam.

:func:`build_layers` constructs each layer from its bottom shapes, infers and logs its top
shapes (on meta tensors: no activation is allocated); :func:`setup_params` resolves parameter
specs and ``param { name }`` sharing into a :class:`ParamTable`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import NetError
from ..layers.base import Layer, Shape
from ..glog import get_logger
from ..proto import caffe_pb2
from .plan import LayerPlan, NetPlan, log_wiring

log = get_logger("net")


def shape_string(shape: Sequence[int]) -> str:
    """Caffe's Blob::shape_string: ``64 20 24 24 (737280)``; a scalar is ``(1)``."""
    count = 1
    for d in shape:
        count *= int(d)
    return "".join(f"{int(d)} " for d in shape) + f"({count})"


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


def construct(lay: LayerPlan, bottom_shapes: list[Shape], fill: bool) -> Layer:
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


def build_layers(plan: NetPlan, fill: Callable[[LayerPlan], bool]) -> tuple[list[Layer], dict[str, Shape]]:
    """Every layer's module, in order, and every blob's shape, logging Caffe's set-up lines."""
    modules: list[Layer] = []
    shapes: dict[str, Shape] = {}
    memory = 0
    for lay in plan.layers:
        log_wiring(lay)
        bottom_shapes = [shapes[n] for n in lay.bottoms]
        module = construct(lay, bottom_shapes, fill(lay))
        top_shapes = [tuple(int(d) for d in s) for s in module.top_shapes(bottom_shapes)]
        if len(top_shapes) != len(lay.tops):
            raise NetError(f"layer produced {len(top_shapes)} tops, the prototxt names "
                           f"{len(lay.tops)}", lay.where)
        log.info("Setting up %s", lay.name)
        for name, shape, weight in zip(lay.tops, top_shapes, lay.loss_weights):
            shapes[name] = shape
            log.info("Top shape: %s", shape_string(shape))
            if weight:
                log.info("    with loss weight %g", weight)
            memory += int(np.prod(shape, dtype=np.int64))
        log.info("Memory required for data: %d", memory * 4)
        modules.append(module)
    return modules, shapes


@dataclass
class ParamSlot:
    """One learnable (owner) blob: where it lives and its multipliers (sharers may set unset ones)."""

    layer: int
    index: int
    lr_mult: float
    decay_mult: float
    has_lr: bool
    has_decay: bool


@dataclass(frozen=True)
class ParamTable:
    """Caffe's param bookkeeping: learnable owners, who owns each shared blob, the specs as set up."""

    slots: tuple[ParamSlot, ...]
    owners: tuple[tuple[tuple[int, int] | None, ...], ...]  # per layer, per blob: (layer, blob) of the owner
    specs: tuple[tuple[caffe_pb2.ParamSpec, ...], ...]  # per layer, one per blob (defaults filled in)
    layer_params: tuple[caffe_pb2.LayerParameter, ...]  # each layer's parameter as set up (Net::ToProto)

    def needs_grad(self) -> list[list[bool]]:
        """Per layer, per blob: ``lr_mult != 0`` as that layer states it (Caffe's param_need_backward)."""
        return [[spec.lr_mult != 0 for spec in specs] for specs in self.specs]


def _set_up_param(lay: LayerPlan, module: Layer) -> caffe_pb2.LayerParameter:
    """The layer's parameter with one spec per blob; statistics blobs get Caffe's fixed lr_mult 0."""
    n_blobs = len(module.blobs)
    if len(lay.param.param) > n_blobs:
        raise NetError(f"too many param specs: {len(lay.param.param)} given, the layer has "
                       f"{n_blobs} parameter blobs", lay.where)
    out = caffe_pb2.LayerParameter()
    out.CopyFrom(lay.param)
    if lay.info.stats_blobs:  # Caffe's BatchNorm adds them to its own layer_param_ (the layer refuses others)
        while len(out.param) < n_blobs:
            out.param.add(lr_mult=0.0)
    module.set_up_param(out)
    return out


def _padded_specs(param: caffe_pb2.LayerParameter, n_blobs: int) -> list[caffe_pb2.ParamSpec]:
    return [param.param[i] if i < len(param.param) else caffe_pb2.ParamSpec() for i in range(n_blobs)]


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


def replace_parameter(module: nn.Module, index: int, new: nn.Parameter) -> None:
    """Make blob ``index`` of ``module`` be ``new``, also where the layer keeps it under another name."""
    old = module.blobs[index]
    module.blobs[index] = new
    for sub in module.modules():
        for key, value in list(sub._parameters.items()):
            if value is old:
                sub._parameters[key] = new


def _check_share(lay: LayerPlan, spec: caffe_pb2.ParamSpec, owner_layer: str, mine: tuple[int, ...],
                 theirs: tuple[int, ...], slot: ParamSlot) -> None:
    pname = spec.name
    if spec.share_mode == caffe_pb2.ParamSpec.PERMISSIVE:
        if int(np.prod(mine)) != int(np.prod(theirs)):
            raise NetError(f"cannot share param '{pname}' owned by layer '{owner_layer}': "
                           f"count mismatch, owner shape {theirs}, this layer's {mine}", lay.where)
    elif mine != theirs:
        raise NetError(f"cannot share param '{pname}' owned by layer '{owner_layer}': shape "
                       f"mismatch, owner shape {theirs}, this layer expects {mine} "
                       f"(share_mode: PERMISSIVE only checks the count)", lay.where)
    for attr, has in (("lr_mult", "has_lr"), ("decay_mult", "has_decay")):
        if not spec.HasField(attr):
            continue
        if getattr(slot, has):
            if getattr(spec, attr) != getattr(slot, attr):
                raise NetError(f"shared param '{pname}' has mismatched {attr} "
                               f"({getattr(spec, attr):g} here, {getattr(slot, attr):g} before)", lay.where)
        else:
            setattr(slot, has, True)
            setattr(slot, attr, getattr(spec, attr))


def setup_params(plan: NetPlan, modules: Sequence[Layer]) -> ParamTable:
    """Caffe's AppendParam: owners become learnable params, named repeats share the owner's tensor."""
    by_name: dict[str, tuple[int, int, int]] = {}  # param name -> (layer, blob, slot)
    slots: list[ParamSlot] = []
    owners: list[tuple[tuple[int, int] | None, ...]] = []
    all_specs: list[tuple[caffe_pb2.ParamSpec, ...]] = []
    layer_params: list[caffe_pb2.LayerParameter] = []
    for li, (lay, module) in enumerate(zip(plan.layers, modules)):
        set_up = _set_up_param(lay, module)
        layer_params.append(set_up)
        mine_owners: list[tuple[int, int] | None] = []
        specs = _padded_specs(set_up, len(module.blobs))
        all_specs.append(tuple(specs))
        for bi, spec in enumerate(specs):
            pname = spec.name
            if not pname or pname not in by_name:
                if pname:
                    by_name[pname] = (li, bi, len(slots))
                slots.append(ParamSlot(li, bi, spec.lr_mult, spec.decay_mult,
                                       spec.HasField("lr_mult"), spec.HasField("decay_mult")))
                mine_owners.append(None)
                continue
            oli, obi, slot = by_name[pname]
            owner_layer = plan.layers[oli].name
            log.info("Sharing parameters '%s' owned by layer '%s', param index %d", pname, owner_layer, obi)
            owner_param = modules[oli].blobs[obi]
            mine, theirs = tuple(module.blobs[bi].shape), tuple(owner_param.shape)
            _check_share(lay, spec, owner_layer, mine, theirs, slots[slot])
            new = _reshaped_share(owner_param, mine) if mine != theirs else owner_param
            replace_parameter(module, bi, new)
            mine_owners.append((oli, obi))
        owners.append(tuple(mine_owners))
    return ParamTable(tuple(slots), tuple(owners), tuple(all_specs), tuple(layer_params))
