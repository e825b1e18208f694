"""Layers without bottoms that are not data readers: Input, DummyData and Parameter.

Their top shapes come from their parameters, so each overrides :meth:`Layer.top_shapes`.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..errors import Where
from ..fillers import fill
from ..proto import caffe_pb2
from .base import TEST, Layer, Shape, register_layer

_CONSTANT_ZERO = caffe_pb2.FillerParameter(type="constant", value=0.0)


def _n_tops(layer: Layer) -> int:
    return max(len(layer.param.top), 1)


class _SourceLayer(Layer):
    """A layer that makes tensors from nothing: it creates them where ``.to(device)`` put it."""

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: Sequence[Shape] = (),
                 phase: int = TEST, where: Where | None = None):
        super().__init__(param, bottom_shapes, phase, where)
        self.register_buffer("_where_to_make", torch.empty(0), persistent=False)

    @property
    def device(self) -> torch.device:
        return self._where_to_make.device


def _pick(values: Sequence, i: int):
    """Caffe's "once for all tops, or once per top" rule."""
    return values[0] if len(values) == 1 else values[i]


@register_layer("Input", bottoms=0, tops=(1, None), is_input=True)
class Input(_SourceLayer):
    """The net's fed inputs: one ``shape`` for all tops, one per top, or none (shape ``()``).

    ``forward()`` returns zero-filled blobs of :attr:`shapes` (Caffe allocates zeros); the net
    replaces them with the arrays it is given. The net reshapes them with :meth:`set_shapes`.
    """

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: Sequence[Shape] = (),
                 phase: int = TEST, where: Where | None = None):
        super().__init__(param, bottom_shapes, phase, where)
        given = list(param.input_param.shape)
        n = _n_tops(self)
        if len(given) not in (0, 1, n):
            raise self.error(f"{len(given)} shapes for {n} tops; give one shape, one per top, "
                             f"or none")
        self.shapes: list[Shape] = [tuple(int(d) for d in _pick(given, i).dim) if given else ()
                                    for i in range(n)]

    def top_shapes(self, bottom_shapes: Sequence[Shape] = ()) -> list[Shape]:
        return list(self.shapes)

    def set_shapes(self, shapes: Sequence[Shape]) -> None:
        """New shapes for the tops (the net's reshape, after the caller reshaped its input blobs)."""
        self.shapes = [tuple(int(d) for d in s) for s in shapes]

    def forward(self) -> list[torch.Tensor]:
        return [torch.zeros(s, dtype=torch.float32, device=self.device) for s in self.shapes]


@register_layer("DummyData", bottoms=0, tops=(1, None))
class DummyData(_SourceLayer):
    """Blobs of fixed shape filled by ``data_filler`` (default constant 0).

    Caffe semantics: shapes from ``shape`` (once or per top) or the legacy
    ``num/channels/height/width`` (each once or per top); one filler for all tops or one per
    top. Constant fillers fill once; other fillers refill on every forward. In a net a constant
    top is held (:attr:`~caffelike.layers.base.Layer.held_tops`): a value a script writes into
    its blob stays, as in Caffe. Pinned by golden ``DummyData__constant``.
    """

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: Sequence[Shape] = (),
                 phase: int = TEST, where: Where | None = None):
        super().__init__(param, bottom_shapes, phase, where)
        dp = param.dummy_data_param
        n = _n_tops(self)
        if len(dp.data_filler) not in (0, 1, n):
            raise self.error(f"{len(dp.data_filler)} data fillers for {n} tops; give 0, 1 or {n}")
        self.shapes: list[Shape] = self._shapes(dp, n)
        fillers = list(dp.data_filler) or [_CONSTANT_ZERO]
        self.fillers = [_pick(fillers, i) for i in range(n)]
        self._constant = [f.type == "constant" for f in self.fillers]
        # Caffe fills a constant top once and never again: the net holds it between passes
        self.held_tops = frozenset(i for i, constant in enumerate(self._constant) if constant)
        for i in self.held_tops:  # a buffer, so that .to(device) moves it
            self.register_buffer(f"_top{i}", self._fill(i), persistent=False)

    def _shapes(self, dp: caffe_pb2.DummyDataParameter, n: int) -> list[Shape]:
        legacy = {name: list(getattr(dp, name)) for name in ("num", "channels", "height", "width")}
        if any(legacy.values()):
            if len(dp.shape):
                raise self.error("both shape and legacy num/channels/height/width were given; "
                                 "use one")
            for name, values in legacy.items():
                if len(values) not in (1, n):
                    raise self.error(f"'{name}' given {len(values)} times; give it once or once "
                                     f"per top ({n})")
            return [tuple(int(_pick(v, i)) for v in legacy.values()) for i in range(n)]
        if len(dp.shape) not in (1, n):
            raise self.error(f"'shape' given {len(dp.shape)} times; give it once or once per "
                             f"top ({n})")
        return [tuple(int(d) for d in _pick(dp.shape, i).dim) for i in range(n)]

    def _fill(self, i: int) -> torch.Tensor:
        blob = torch.empty(self.shapes[i], dtype=torch.float32, device=self.device)
        return fill(self.fillers[i], blob, where=self.where)

    def top_shapes(self, bottom_shapes: Sequence[Shape] = ()) -> list[Shape]:
        return list(self.shapes)

    def held_value(self, index: int) -> torch.Tensor:
        return getattr(self, f"_top{index}").clone()

    def forward(self) -> list[torch.Tensor]:
        return [self.held_value(i) if constant else self._fill(i)
                for i, constant in enumerate(self._constant)]


@register_layer("Parameter", bottoms=0, tops=1)
class Parameter(Layer):
    """Exposes its one blob (``parameter_param.shape``, zero-filled) as its top.

    Caffe semantics: the top shares data and diff with the blob, so the blob's gradient is the
    top's diff. Pinned by golden ``Parameter__shape3x4``.
    """

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: Sequence[Shape] = (),
                 phase: int = TEST, where: Where | None = None):
        super().__init__(param, bottom_shapes, phase, where)
        self.add_blob(tuple(int(d) for d in param.parameter_param.shape.dim))

    def top_shapes(self, bottom_shapes: Sequence[Shape] = ()) -> list[Shape]:
        return [tuple(self.blobs[0].shape)]

    def forward(self) -> list[torch.Tensor]:
        blob = self.blobs[0]
        return [blob.view_as(blob)]
