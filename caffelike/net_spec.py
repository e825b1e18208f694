"""pycaffe's net specification: write nets in Python, get a NetParameter.

``L.Convolution(bottom, kernel_size=3, num_output=8)`` returns a :class:`Top`; assigning tops to
a :class:`NetSpec` names them; ``NetSpec.to_proto()`` emits every layer needed for the named
tops, in dependency order. ``P.Pooling.MAX`` gives enum constants. Naming, keyword routing and
list handling follow pycaffe's ``net_spec.py``:

* a keyword ending in ``param`` sets that LayerParameter field (``param=[dict(lr_mult=1)]``,
  ``transform_param=dict(...)``); any other keyword goes to the layer's own ``<type>_param``
  message, or to the LayerParameter itself if that message has no such field
  (``name``, ``include``, ``loss_weight``, ``propagate_down``, ...);
* ``ntop=N`` makes a layer with N tops (0 returns the layer itself), ``in_place=True`` writes
  the top over the first bottom;
* unnamed tops are called ``<Type><count>`` (``Convolution1``); a layer takes the name of its
  first top.
"""
from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Any

from .proto import caffe_pb2

__all__ = ["NetSpec", "Top", "Function", "layers", "params", "to_proto", "assign_proto", "param_name_dict"]


def param_name_dict() -> dict[str, str]:
    """Layer type name -> its ``*_param`` field stem, from LayerParameter's fields
    (``ConvolutionParameter convolution_param`` gives ``"Convolution" -> "convolution"``)."""
    out: dict[str, str] = {}
    for field in caffe_pb2.LayerParameter.DESCRIPTOR.fields:
        if field.name.endswith("_param") and field.message_type is not None:
            type_name = field.message_type.name
            if type_name.endswith("Parameter"):
                out[type_name[: -len("Parameter")]] = field.name[: -len("_param")]
    return out


_PARAM_NAMES = param_name_dict()


def _is_repeated(proto: Any, name: str) -> bool:
    return hasattr(getattr(proto, name), "extend")


def assign_proto(proto: Any, name: str, value: Any) -> None:
    """Set ``proto.name`` from a Python value: dicts fill messages, lists fill repeated fields
    (a single value for a repeated field becomes a one-element list)."""
    if _is_repeated(proto, name) and not isinstance(value, (list, tuple)):
        value = [value]
    if isinstance(value, (list, tuple)):
        field = getattr(proto, name)
        if value and isinstance(value[0], dict):
            for item in value:
                message = field.add()
                for k, v in item.items():
                    assign_proto(message, k, v)
        else:
            field.extend(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            assign_proto(getattr(proto, name), k, v)
    else:
        setattr(proto, name, value)


class Top:
    """One output blob of a layer (the ``n``-th top of ``fn``)."""

    def __init__(self, fn: "Function", n: int):
        self.fn = fn
        self.n = n

    def to_proto(self) -> caffe_pb2.NetParameter:
        """A NetParameter with every layer needed to compute this top."""
        return to_proto(self)

    def _to_proto(self, layers: dict, names: dict, autonames: Counter) -> None:
        self.fn._to_proto(layers, names, autonames)


class Function:
    """A layer: its type, its bottoms (Tops) and its keyword parameters."""

    def __init__(self, type_name: str, inputs: tuple, params: dict[str, Any]):
        self.type_name = type_name
        for index, inp in enumerate(inputs):
            if not isinstance(inp, Top):
                raise TypeError(f"{type_name} input {index} is not a Top (type is {type(inp)})")
        self.inputs = inputs
        self.params = dict(params)
        self.ntop = int(self.params.pop("ntop", 1))
        self.in_place = bool(self.params.pop("in_place", False))
        self.tops = tuple(Top(self, n) for n in range(self.ntop))

    def _top_name(self, top: Top, names: dict, autonames: Counter) -> str:
        if top not in names:
            autonames[top.fn.type_name] += 1
            names[top] = f"{top.fn.type_name}{autonames[top.fn.type_name]}"
        return names[top]

    def _layer_name(self, names: dict, autonames: Counter) -> str:
        if self not in names:
            if self.ntop > 0:
                names[self] = self._top_name(self.tops[0], names, autonames)
            else:
                autonames[self.type_name] += 1
                names[self] = f"{self.type_name}{autonames[self.type_name]}"
        return names[self]

    def _to_proto(self, layers: dict, names: dict, autonames: Counter) -> None:
        if self in layers:
            return
        bottoms = []
        for inp in self.inputs:
            inp._to_proto(layers, names, autonames)
            bottoms.append(layers[inp.fn].top[inp.n])
        layer = caffe_pb2.LayerParameter()
        layer.type = self.type_name
        layer.bottom.extend(bottoms)
        if self.in_place:
            layer.top.extend(layer.bottom)
        else:
            layer.top.extend(self._top_name(t, names, autonames) for t in self.tops)
        layer.name = self._layer_name(names, autonames)
        for key, value in self.params.items():
            if key.endswith("param"):
                assign_proto(layer, key, value)
                continue
            stem = _PARAM_NAMES.get(self.type_name)
            message = getattr(layer, f"{stem}_param") if stem else None
            if message is not None and key in message.DESCRIPTOR.fields_by_name:
                assign_proto(message, key, value)
            else:
                assign_proto(layer, key, value)
        layers[self] = layer


def to_proto(*tops: Top) -> caffe_pb2.NetParameter:
    """A NetParameter with every layer needed to compute the given tops (auto-named)."""
    layers: OrderedDict = OrderedDict()
    autonames: Counter = Counter()
    for top in tops:
        top.fn._to_proto(layers, {}, autonames)
    net = caffe_pb2.NetParameter()
    net.layer.extend(layers.values())
    return net


class NetSpec:
    """Named tops: ``n.conv1 = L.Convolution(n.data, ...)``; ``n.to_proto()`` emits the net."""

    def __init__(self) -> None:
        object.__setattr__(self, "tops", OrderedDict())

    def __setattr__(self, name: str, value: Top) -> None:
        self.tops[name] = value

    def __getattr__(self, name: str) -> Top:
        try:
            return self.tops[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setitem__(self, key: str, value: Top) -> None:
        self.tops[key] = value

    def __getitem__(self, item: str) -> Top:
        return self.tops[item]

    def to_proto(self) -> caffe_pb2.NetParameter:
        """A NetParameter with every layer needed for the named tops, using those names."""
        names: dict = {top: name for name, top in self.tops.items()}
        autonames: Counter = Counter()
        layers: OrderedDict = OrderedDict()
        for top in self.tops.values():
            top._to_proto(layers, names, autonames)
        net = caffe_pb2.NetParameter()
        net.layer.extend(layers.values())
        return net


class Layers:
    """``layers.<Type>(*bottoms, **params)`` -> a Top (or tuple of Tops, or the layer for ntop=0)."""

    def __getattr__(self, type_name: str):
        if type_name.startswith("__"):
            raise AttributeError(type_name)

        def layer_fn(*args: Top, **kwargs: Any):
            fn = Function(type_name, args, kwargs)
            if fn.ntop == 0:
                return fn
            if fn.ntop == 1:
                return fn.tops[0]
            return fn.tops

        return layer_fn


class _EnumConstants:
    """Constants of one ``<Name>Parameter`` message (``P.Pooling.MAX``)."""

    def __init__(self, name: str):
        self._message = getattr(caffe_pb2, f"{name}Parameter")

    def __getattr__(self, const: str) -> Any:
        if const.startswith("__"):
            raise AttributeError(const)
        return getattr(self._message, const)


class Parameters:
    """``params.<Name>.<CONSTANT>`` -> the enum value from ``<Name>Parameter``."""

    def __getattr__(self, name: str) -> _EnumConstants:
        if name.startswith("__"):
            raise AttributeError(name)
        return _EnumConstants(name)


layers = Layers()
params = Parameters()
