"""The static half of Caffe's Net::Init: filter, validate and wire a NetParameter.

A pure function of the prototxt and the NetState: nothing here builds a torch module, logs a
set-up line or changes a plan once made. :func:`filter_net` keeps the layers whose
``include``/``exclude`` rules match the NetState (Caffe's FilterNet/StateMeetsRule);
:func:`plan_net` resolves bottom and top names the way Caffe's AppendBottom/AppendTop do
(in-place tops rebind a name, a top produced twice is an error, tops nobody consumes become
net outputs), checks bottom/top counts against the layer registry, and fixes each top's loss
weight. :func:`plan_backward` is Caffe's need-backward analysis; it needs to know which layers
have learnable blobs (known once they are built) and returns a new plan with the flags set.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence

from ..errors import NetError, Where
from ..layers.base import LAYERS, LayerInfo
from ..glog import get_logger
from ..proto import caffe_pb2
from .splits import insert_splits, is_split_of, needs_splits

log = get_logger("net")

AUTOMATIC_TOP = "(automatic)"


@dataclass(frozen=True)
class LayerPlan:
    """One layer of the filtered net with its wiring resolved (Caffe's per-layer vectors)."""

    index: int
    param: caffe_pb2.LayerParameter
    info: LayerInfo
    where: Where
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    in_place: tuple[bool, ...]
    loss_weights: tuple[float, ...]
    propagate_down: tuple[bool, ...] | None  # as written in the prototxt (None = not given)
    need_backward: bool = False  # set by plan_backward
    bottom_need_backward: tuple[bool, ...] = ()

    @property
    def name(self) -> str:
        return self.param.name

    @property
    def type(self) -> str:
        return self.param.type


@dataclass(frozen=True)
class NetPlan:
    """The wiring of a whole net: layers in order, blob names in creation order, inputs, outputs."""

    name: str
    layers: tuple[LayerPlan, ...]
    blob_names: tuple[str, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    force_backward: bool

    def loss_weights(self) -> dict[str, float]:
        """Blob name -> loss weight, for every top with a non-zero weight."""
        return {name: w for lay in self.layers for name, w in zip(lay.tops, lay.loss_weights) if w}

    def layer_index(self, name: str) -> int:
        """Index of the first layer called ``name``; NetError listing the layers otherwise."""
        for lay in self.layers:
            if lay.name == name:
                return lay.index
        raise NetError(f"unknown layer '{name}' (layers: {', '.join(l.name for l in self.layers)})")


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
def _loss_weights(layer: caffe_pb2.LayerParameter, info: LayerInfo, n_tops: int, where: Where) -> tuple[float, ...]:
    given = list(layer.loss_weight)
    if given:
        if len(given) != n_tops:
            raise NetError(f"loss_weight must be unspecified or given once per top blob "
                           f"({n_tops} tops, {len(given)} loss_weight values)", where)
        return tuple(float(w) for w in given)
    # Caffe's LossLayer gives its first top weight 1; every other top of every layer has 0.
    return tuple(1.0 if (info.is_loss and i == 0) else 0.0 for i in range(n_tops))


def plan_net(net: caffe_pb2.NetParameter, where_of: Callable[[caffe_pb2.LayerParameter], Where]) -> NetPlan:
    """Resolve the names of a filtered net; raise NetError naming file:line and layer on a wiring mistake.

    As Caffe's Net::Init, Split layers are inserted first for every blob read more than once
    (:mod:`.splits`), and the net with them is what gets wired.
    """
    if needs_splits(net):
        net = _with_splits(net)
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
        if lp.propagate_down and len(lp.propagate_down) != len(lp.bottom):
            raise NetError(f"propagate_down must be given either 0 or {len(lp.bottom)} (bottom count) times, "
                           f"got {len(lp.propagate_down)}", where)
        bottoms = list(lp.bottom)
        for i, name in enumerate(bottoms):
            if name not in consumable:
                raise NetError(f"unknown bottom blob '{name}' (bottom index {i}); no earlier layer "
                               f"has a top of that name", where)
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
                in_place.append(True)
            elif name in known:
                if i < len(bottoms) and is_split_of(bottoms[i], name):
                    raise NetError(f"in-place top '{name}' is also read by another layer, so Caffe splits "
                                   f"it and this layer's top would be produced twice (real Caffe refuses "
                                   f"this net too: 'produced by multiple sources'); give the top a new name", where)
                raise NetError(f"top blob '{name}' produced by multiple sources; use a new name, "
                               f"or the same name at the same position as a bottom for in-place", where)
            else:
                in_place.append(False)
                blob_names.append(name)
                known.add(name)
            if i < len(lp.top):  # anonymous tops cannot be consumed
                available.add(name)
                consumable.add(name)
            if info.is_input:
                inputs.append(name)
        layers.append(LayerPlan(
            index=index, param=lp, info=info, where=where, bottoms=tuple(bottoms), tops=tuple(tops),
            in_place=tuple(in_place), loss_weights=_loss_weights(lp, info, len(tops), where),
            propagate_down=tuple(lp.propagate_down) if lp.propagate_down else None,
        ))
    outputs = sorted(available)  # Caffe walks a std::set, i.e. name order
    return NetPlan(net.name, tuple(layers), tuple(blob_names), tuple(inputs), tuple(outputs),
                   bool(net.force_backward))


def _with_splits(net: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    split_net = insert_splits(net)
    for layer in split_net.layer:  # as Net::Init: a layer without a phase (a Split) gets the net's
        if not layer.HasField("phase"):
            layer.phase = net.state.phase
    return split_net


def log_wiring(lay: LayerPlan) -> None:
    """Caffe's "Creating Layer" and bottom/top lines for one layer (logged as it is set up)."""
    log.info("Creating Layer %s", lay.name)
    for name in lay.bottoms:
        log.info("%s <- %s", lay.name, name)
    for name, inplace in zip(lay.tops, lay.in_place):
        log.info("%s -> %s%s", lay.name, name, " (in-place)" if inplace else "")


# -- need-backward analysis (the end of Caffe's Net::Init) -----------------------------------
def plan_backward(plan: NetPlan, param_needs_grad: Sequence[Sequence[bool]]
                  ) -> tuple[NetPlan, list[list[bool]]]:
    """Caffe's need-backward analysis: a new plan with ``need_backward``/``bottom_need_backward`` set.

    ``param_needs_grad[i][j]`` is ``lr_mult != 0`` for blob j of layer i. Also returns the
    final per-blob "compute this parameter's gradient" flags (all True under force_backward).
    """
    need_backward: list[bool] = []
    bottom_needs: list[list[bool]] = []
    blob_needs: dict[str, bool] = {}
    for lay, needs in zip(plan.layers, param_needs_grad):
        need = False
        flags = []
        for i, name in enumerate(lay.bottoms):
            b = blob_needs.get(name, False)
            need |= b
            if lay.propagate_down is not None:
                b = bool(lay.propagate_down[i])
            flags.append(b)
        need |= any(needs)
        need_backward.append(need)
        bottom_needs.append(flags)
        for name, inplace in zip(lay.tops, lay.in_place):
            if not inplace:
                blob_needs.setdefault(name, False)
            if need:
                blob_needs[name] = True
    # Caffe decides this on a net with Split layers, i.e. per consumer of a blob: a blob is
    # under the loss if any consumer contributes to it, and skipped only if every consumer skips.
    under_loss: set[str] = set()
    consumer_needs: dict[str, bool] = {}
    for k in range(len(plan.layers) - 1, -1, -1):
        lay = plan.layers[k]
        contributes = False
        skip = True
        for name, weight in zip(lay.tops, lay.loss_weights):
            if weight or name in under_loss:
                contributes = True
            if consumer_needs.get(name, True):
                skip = False
            if contributes and not skip:
                break
        if need_backward[k] and skip:
            need_backward[k] = False
            bottom_needs[k] = [False] * len(lay.bottoms)
        if not contributes:
            need_backward[k] = False
        log.info("%s %s backward computation.", lay.name,
                 "needs" if need_backward[k] else "does not need")
        for i, name in enumerate(lay.bottoms):
            if contributes:
                under_loss.add(name)
            else:
                bottom_needs[k][i] = False
            consumer_needs[name] = consumer_needs.get(name, False) or bottom_needs[k][i]
    grads = [list(map(bool, n)) for n in param_needs_grad]
    if plan.force_backward:
        for k, (lay, g) in enumerate(zip(plan.layers, grads)):
            need_backward[k] = True
            bottom_needs[k] = [b or lay.info.cls.allow_force_backward(i) for i, b in enumerate(bottom_needs[k])]
            g[:] = [True] * len(g)
    layers = tuple(replace(lay, need_backward=need, bottom_need_backward=tuple(flags))
                   for lay, need, flags in zip(plan.layers, need_backward, bottom_needs))
    return replace(plan, layers=layers), grads
