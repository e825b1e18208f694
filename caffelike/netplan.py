"""The static half of Caffe's Net::Init: filter, validate and wire a NetParameter.

Nothing here builds a torch module. :func:`filter_net` keeps the layers whose
``include``/``exclude`` rules match the NetState (Caffe's FilterNet/StateMeetsRule);
:func:`plan_net` resolves bottom and top names the way Caffe's AppendBottom/AppendTop do
(in-place tops rebind a name, a top produced twice is an error, tops nobody consumes become
net outputs), checks bottom/top counts against the layer registry, and fixes each top's loss
weight. :func:`mark_backward` is Caffe's need-backward analysis, run once the layers (and so
their parameter blobs) exist.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from .errors import NetError, Where
from .layers.base import LAYERS, LayerInfo
from .log import get_logger
from .proto import caffe_pb2

log = get_logger("net")

AUTOMATIC_TOP = "(automatic)"


@dataclass
class LayerPlan:
    """One layer of the filtered net with its wiring resolved (Caffe's per-layer vectors)."""

    index: int
    param: caffe_pb2.LayerParameter
    info: LayerInfo
    where: Where
    bottoms: list[str]
    tops: list[str]
    in_place: list[bool]
    loss_weights: list[float]
    propagate_down: list[bool] | None  # as written in the prototxt (None = not given)
    need_backward: bool = False
    bottom_need_backward: list[bool] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.param.name

    @property
    def type(self) -> str:
        return self.param.type


@dataclass
class NetPlan:
    """The wiring of a whole net: layers in order, blob names in creation order, inputs, outputs."""

    name: str
    layers: list[LayerPlan]
    blob_names: list[str]
    input_names: list[str]
    output_names: list[str]
    force_backward: bool


# -- NetState filtering (Caffe's FilterNet / StateMeetsRule) --------------------------------
def state_meets_rule(state: caffe_pb2.NetState, rule: caffe_pb2.NetStateRule, layer_name: str) -> bool:
    """Whether ``state`` satisfies every condition of ``rule`` (phase, levels, stages)."""
    if rule.HasField("phase") and rule.phase != state.phase:
        log.info("The NetState phase (%d) differed from the phase (%d) specified by a rule in layer %s",
                 state.phase, rule.phase, layer_name)
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        log.info("The NetState level (%d) is above the min_level (%d) specified by a rule in layer %s",
                 state.level, rule.min_level, layer_name)
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        log.info("The NetState level (%d) is above the max_level (%d) specified by a rule in layer %s",
                 state.level, rule.max_level, layer_name)
        return False
    stages = set(state.stage)
    for stage in rule.stage:
        if stage not in stages:
            log.info("The NetState did not contain stage '%s' specified by a rule in layer %s",
                     stage, layer_name)
            return False
    for stage in rule.not_stage:
        if stage in stages:
            log.info("The NetState contained a not_stage '%s' specified by a rule in layer %s",
                     stage, layer_name)
            return False
    return True


def layer_included(layer: caffe_pb2.LayerParameter, state: caffe_pb2.NetState, where: Where) -> bool:
    """Caffe's rule: no include rules = kept unless an exclude rule matches; else kept if any include matches."""
    if layer.include and layer.exclude:
        raise NetError("specify either include rules or exclude rules; not both", where)
    if not layer.include:
        return not any(state_meets_rule(state, r, layer.name) for r in layer.exclude)
    return any(state_meets_rule(state, r, layer.name) for r in layer.include)


def filter_net(net: caffe_pb2.NetParameter, where_of: Callable[[caffe_pb2.LayerParameter], Where]
               ) -> caffe_pb2.NetParameter:
    """A copy of ``net`` holding only the layers its ``state`` includes; unset layer phases inherit it."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    del out.layer[:]
    for layer in net.layer:
        if layer_included(layer, net.state, where_of(layer)):
            kept = out.layer.add()
            kept.CopyFrom(layer)
            if not kept.HasField("phase"):
                kept.phase = net.state.phase
    return out


# -- wiring (Caffe's AppendBottom / AppendTop) -----------------------------------------------
def _loss_weights(layer: caffe_pb2.LayerParameter, info: LayerInfo, n_tops: int, where: Where) -> list[float]:
    given = list(layer.loss_weight)
    if given:
        if len(given) != n_tops:
            raise NetError(f"loss_weight must be unspecified or given once per top blob "
                           f"({n_tops} tops, {len(given)} loss_weight values)", where)
        return [float(w) for w in given]
    # Caffe's LossLayer gives its first top weight 1; every other top of every layer has 0.
    return [1.0 if (info.is_loss and i == 0) else 0.0 for i in range(n_tops)]


def plan_net(net: caffe_pb2.NetParameter, where_of: Callable[[caffe_pb2.LayerParameter], Where],
             allow_python_layers: bool = True,
             on_layer: Callable[[LayerPlan], None] | None = None) -> NetPlan:
    """Resolve the names of a filtered net; raise NetError naming file:line and layer on a wiring mistake.

    ``on_layer`` is called with each layer as soon as it is wired (the net builds it there,
    so the log interleaves as Caffe's does and shape errors surface in layer order).
    """
    layers: list[LayerPlan] = []
    blob_names: list[str] = []
    known: set[str] = set()
    available: set[str] = set()  # produced and not consumed yet: the net outputs at the end
    consumable: set[str] = set()
    inputs: list[str] = []
    n_automatic = 0
    for index, lp in enumerate(net.layer):
        where = where_of(lp)
        info = LAYERS.get(lp.type, where)
        if lp.type == "Python" and not allow_python_layers:
            raise NetError("Python layers are disabled (allow_python_layers=False)", where)
        if lp.propagate_down and len(lp.propagate_down) != len(lp.bottom):
            raise NetError(f"propagate_down must be given either 0 or {len(lp.bottom)} (bottom count) times, "
                           f"got {len(lp.propagate_down)}", where)
        log.info("Creating Layer %s", lp.name)
        bottoms = list(lp.bottom)
        for i, name in enumerate(bottoms):
            if name not in consumable:
                raise NetError(f"unknown bottom blob '{name}' (bottom index {i}); no earlier layer "
                               f"has a top of that name", where)
            log.info("%s <- %s", lp.name, name)
            available.discard(name)
        tops = list(lp.top)
        if info.is_loss and len(tops) < info.tops[0]:
            # Caffe's AutoTopBlobs: a loss layer written without a top still gets one.
            while len(tops) < info.tops[0]:
                tops.append(AUTOMATIC_TOP if n_automatic == 0 else f"{AUTOMATIC_TOP}_{n_automatic}")
                n_automatic += 1
        info.check_counts(len(bottoms), len(tops), where)
        in_place = []
        for i, name in enumerate(tops):
            if i < len(bottoms) and bottoms[i] == name:
                log.info("%s -> %s (in-place)", lp.name, name)
                in_place.append(True)
            elif name in known:
                raise NetError(f"top blob '{name}' produced by multiple sources; use a new name, "
                               f"or the same name at the same position as a bottom for in-place", where)
            else:
                log.info("%s -> %s", lp.name, name)
                in_place.append(False)
                blob_names.append(name)
                known.add(name)
            if i < len(lp.top):  # anonymous tops cannot be consumed
                available.add(name)
                consumable.add(name)
            if lp.type == "Input":
                inputs.append(name)
        layers.append(LayerPlan(
            index=index, param=lp, info=info, where=where, bottoms=bottoms, tops=tops,
            in_place=in_place, loss_weights=_loss_weights(lp, info, len(tops), where),
            propagate_down=list(lp.propagate_down) if lp.propagate_down else None,
        ))
        if on_layer is not None:
            on_layer(layers[-1])
    outputs = sorted(available)  # Caffe walks a std::set, i.e. name order
    return NetPlan(net.name, layers, blob_names, inputs, outputs, bool(net.force_backward))


# -- need-backward analysis (the end of Caffe's Net::Init) -----------------------------------
def _allow_force_backward(info: LayerInfo, bottom: int) -> bool:
    special = _FORCE_BACKWARD_RULES.get(info.type)
    if special is not None:
        return special(bottom)
    return bottom != 1 if info.is_loss else True


# Layers whose AllowForceBackward differs from the default (loss layers: not the label bottom).
_FORCE_BACKWARD_RULES: dict[str, Callable[[int], bool]] = {
    "ContrastiveLoss": lambda i: i != 2,
    "EuclideanLoss": lambda i: True,
    "LSTMUnit": lambda i: i != 2,
    "RNN": lambda i: i != 1,
    "LSTM": lambda i: i != 1,
}


def mark_backward(plan: NetPlan, param_needs_grad: Sequence[Sequence[bool]]) -> list[list[bool]]:
    """Fill ``need_backward``/``bottom_need_backward`` of every layer as Caffe does.

    ``param_needs_grad[i][j]`` is ``lr_mult != 0`` for blob j of layer i. Returns the final
    per-blob "compute this parameter's gradient" flags (all True under force_backward).
    """
    blob_needs: dict[str, bool] = {}
    for lay, needs in zip(plan.layers, param_needs_grad):
        need = False
        lay.bottom_need_backward = []
        for i, name in enumerate(lay.bottoms):
            b = blob_needs.get(name, False)
            need |= b
            if lay.propagate_down is not None:
                b = bool(lay.propagate_down[i])
            lay.bottom_need_backward.append(b)
        need |= any(needs)
        lay.need_backward = need
        for name, inplace in zip(lay.tops, lay.in_place):
            if not inplace:
                blob_needs.setdefault(name, False)
            if need:
                blob_needs[name] = True
    # Caffe decides this on a net with Split layers, i.e. per consumer of a blob: a blob is
    # under the loss if any consumer contributes to it, and skipped only if every consumer skips.
    under_loss: set[str] = set()
    consumer_needs: dict[str, bool] = {}
    for lay in reversed(plan.layers):
        contributes = False
        skip = True
        for name, weight in zip(lay.tops, lay.loss_weights):
            if weight or name in under_loss:
                contributes = True
            if consumer_needs.get(name, True):
                skip = False
            if contributes and not skip:
                break
        if lay.need_backward and skip:
            lay.need_backward = False
            lay.bottom_need_backward = [False] * len(lay.bottoms)
        if not contributes:
            lay.need_backward = False
        log.info("%s %s backward computation.", lay.name,
                 "needs" if lay.need_backward else "does not need")
        for i, name in enumerate(lay.bottoms):
            if contributes:
                under_loss.add(name)
            else:
                lay.bottom_need_backward[i] = False
            consumer_needs[name] = consumer_needs.get(name, False) or lay.bottom_need_backward[i]
    grads = [list(map(bool, n)) for n in param_needs_grad]
    if plan.force_backward:
        for lay, g in zip(plan.layers, grads):
            lay.need_backward = True
            lay.bottom_need_backward = [b or _allow_force_backward(lay.info, i)
                                        for i, b in enumerate(lay.bottom_need_backward)]
            g[:] = [True] * len(g)
    return grads
