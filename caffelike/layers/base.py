"""The layer contract and the registry keyed by Caffe's type string.

A layer is a ``torch.nn.Module`` built from its ``LayerParameter`` and the shapes of its
bottoms. ``self.blobs`` holds Caffe's parameter blobs in Caffe's order and shape (what a
.caffemodel stores for the layer); ``forward(*bottoms)`` returns the list of tops. Counting
checks (how many bottoms and tops) live in :class:`LayerInfo` and are enforced by the net
builder, not by each layer.

Adding a layer = one class in its family module::

    @register_layer("AbsVal")
    class AbsVal(Layer):
        def forward(self, x):
            return [AbsValFn.apply(x)]

The same :class:`Layer` is pycaffe's ``caffe.Layer`` (``caffelike.Layer``): a user's Python
layer subclasses it and speaks Caffe's blob protocol instead (see the class docstring); the
``Python`` layer type (layers/python.py) runs it.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator, Sequence

import torch
from torch import nn

from ..blob import Blob, BlobVec
from ..errors import LayerError, NetError, Where
from ..proto import caffe_pb2
from ..registry import Registry

TRAIN = caffe_pb2.TRAIN
TEST = caffe_pb2.TEST

Shape = tuple[int, ...]


@dataclass(frozen=True)
class LayerInfo:
    """Caffe's declarative facts about one layer type."""

    type: str
    cls: type["Layer"]
    bottoms: tuple[int, int | None]
    tops: tuple[int, int | None]
    is_loss: bool = False
    stats_blobs: bool = False  # blobs are statistics, not learned: lr_mult forced to 0 (BatchNorm)
    is_data: bool = False  # reads a dataset (no bottoms): the solver seeds and shards it
    is_input: bool = False  # its tops are the net's inputs, fed by the caller (Input)

    def check_counts(self, n_bottoms: int, n_tops: int, where: Where) -> None:
        for what, n, (lo, hi) in (("bottom", n_bottoms, self.bottoms), ("top", n_tops, self.tops)):
            if n < lo or (hi is not None and n > hi):
                if hi == lo:
                    want = f"exactly {lo}"
                elif hi is None:
                    want = f"at least {lo}"
                else:
                    want = f"{lo} to {hi}"
                raise NetError(f"{self.type} takes {want} {what} blob(s), got {n}", where)


LAYERS: Registry[LayerInfo] = Registry("layer type", NetError)


def _counts(spec: int | tuple[int, int | None]) -> tuple[int, int | None]:
    return (spec, spec) if isinstance(spec, int) else spec


def register_layer(type_name: str, *, bottoms: int | tuple[int, int | None] = 1,
                   tops: int | tuple[int, int | None] = 1, loss: bool = False,
                   stats_blobs: bool = False, is_data: bool = False,
                   is_input: bool = False) -> Callable[[type["Layer"]], type["Layer"]]:
    """Class decorator: register a Layer subclass under Caffe's type string."""

    def wrap(cls: type[Layer]) -> type[Layer]:
        cls.caffe_type = type_name
        LAYERS.register(type_name, LayerInfo(type_name, cls, _counts(bottoms), _counts(tops),
                                             loss, stats_blobs, is_data, is_input))
        return cls

    return wrap


class Layer(nn.Module):
    """Base class of every Caffe layer, built-in or a pycaffe Python layer (``caffe.Layer``).

    A built-in layer is built by the net as ``cls(param, bottom_shapes, phase, where)``. It
    reads its ``*_param`` from ``self.param`` in ``__init__`` (after calling
    ``super().__init__``), creates its blobs with :meth:`add_blob`, and implements
    :meth:`forward` on tensors. Top shapes are found by running ``forward`` on meta tensors;
    layers whose forward cannot run on meta tensors (data-dependent shapes, data sources)
    override :meth:`top_shapes`.

    A pycaffe Python layer is built as Caffe builds it, ``cls(param)``: its ``self.blobs`` is
    then a :class:`~caffelike.blob.BlobVec` (``self.blobs.add_blob(*shape)`` in ``setup``),
    ``self.param_str``, ``self.phase`` and ``self.type`` are set, and it overrides ``setup``,
    ``reshape``, ``forward`` and ``backward`` on blobs with numpy ``data``/``diff``.
    """

    caffe_type: ClassVar[str] = ""
    prefers_channels_last: ClassVar[bool] = False  # runs faster on channels_last activations
    # forward gives correct tops (in any layout) for channels_last bottoms, without a copy
    keeps_layout: ClassVar[bool] = False
    # tops the net keeps from pass to pass (indices): each is filled once with held_value()
    # when the net is built, then fed from the net's blob as an Input's top is, so a value a
    # script writes there is what the next pass reads (Caffe's constant DummyData tops)
    held_tops: frozenset[int] = frozenset()

    def __init__(self, param: caffe_pb2.LayerParameter | None = None,
                 bottom_shapes: Sequence[Shape] | None = None, phase: int = TEST,
                 where: Where | None = None):
        super().__init__()
        param = param if param is not None else caffe_pb2.LayerParameter(type="Python")
        pycaffe = bottom_shapes is None  # Caffe's constructor, Layer(param): a Python layer
        self.param = param
        self.phase = int(param.phase) if pycaffe else phase
        self.where = where if where is not None else Where(layer=param.name, type=param.type)
        self.bottom_shapes: list[Shape] = [tuple(s) for s in bottom_shapes or ()]
        if pycaffe:
            self.blobs = BlobVec()
            self.param_str = param.python_param.param_str
            self.type = param.type  # pycaffe's layer.type (shadows nn.Module.type on this object)
        else:
            self.blobs = nn.ParameterList()

    # -- construction helpers -------------------------------------------------------------
    def error(self, message: str) -> LayerError:
        """A LayerError located at this layer (raise it)."""
        return LayerError(message, self.where)

    def add_blob(self, shape: Sequence[int], filler: caffe_pb2.FillerParameter | None = None,
                 requires_grad: bool = True) -> nn.Parameter:
        """Append a parameter blob of Caffe shape ``shape``, filled by ``filler`` (default constant 0)."""
        from ..fillers import fill

        tensor = torch.zeros(tuple(int(d) for d in shape), dtype=torch.float32)
        if filler is not None and not (filler.type == "constant" and filler.value == 0):
            fill(filler, tensor)
        blob = nn.Parameter(tensor, requires_grad=requires_grad)
        self.blobs.append(blob)
        return blob

    # -- running -----------------------------------------------------------------------------
    def forward(self, *bottoms: Any) -> list[torch.Tensor] | None:
        """The tops for these bottom tensors; a pycaffe layer's is ``forward(bottom, top)``."""
        raise NotImplementedError(f"{type(self).__name__} does not define forward")

    def held_value(self, index: int) -> torch.Tensor:
        """The first value of held top ``index`` (see :attr:`held_tops`)."""
        raise NotImplementedError(f"{type(self).__name__} holds no top {index}")

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        """Shapes of the tops for these bottom shapes, computed without real data.

        Runs ``forward`` on meta tensors, with the blobs swapped for meta stand-ins (the real
        blobs are never touched).
        """
        meta = [torch.empty(s, dtype=torch.float32, device="meta") for s in bottom_shapes]
        with torch.no_grad(), _meta_blobs(self):
            tops = self(*meta)
        return [tuple(t.shape) for t in tops]

    def reshape(self, bottom: Sequence[Shape] | Sequence[Blob],
                top: Sequence[Blob] | None = None) -> None:
        """Caffe's Layer::Reshape. The net calls it with the new bottom shapes (default:
        remember them); a pycaffe layer gets its bottom and top blobs, to reshape the tops."""
        if top is None:
            self.bottom_shapes = [tuple(s) for s in bottom]

    # -- pycaffe's blob protocol (Python layers) ---------------------------------------------
    def setup(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        """Called once when the net is built (pycaffe layers)."""

    def backward(self, top: Sequence[Blob], propagate_down: Sequence[bool],
                 bottom: Sequence[Blob]) -> None:
        """Write the bottoms' (and blobs') diffs from the tops' diffs (pycaffe layers)."""
        raise NotImplementedError(f"{type(self).__name__} does not define "
                                  "backward(top, propagate_down, bottom)")

    def extra_repr(self) -> str:
        return f"name={self.param.name!r}, type={self.caffe_type!r}"

    # -- facts the net asks of a layer (defaults: a plain layer) ------------------------------
    @classmethod
    def allow_force_backward(cls, bottom: int) -> bool:
        """Caffe's Layer::AllowForceBackward: may ``force_backward`` send a gradient to this bottom?"""
        return True

    def affine(self, channels: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(scale, shift)`` in float64 when this layer maps each channel (axis 1) of its one
        bottom to ``x * scale + shift`` with ``channels`` channels; None otherwise (deploy folding)."""
        return None

    def fold_head(self) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """``(weight, bias)`` with output channels first, when this layer is a linear map that a
        following per-channel affine layer may fold into (see :meth:`run_folded`); else None."""
        return None

    def run_folded(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """This layer's forward with ``weight``/``bias`` (the layout of :meth:`fold_head`) in place of its blobs."""
        raise NotImplementedError(f"{self.caffe_type} cannot run folded weights")

    def learned_channel_affine(self, channels: int) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """The live ``(scale, shift or None)`` blobs when this layer multiplies each of ``channels``
        channels (axis 1) of its one bottom by a learned scale and adds a learned shift; else None."""
        return None

    def fused_activation(self) -> float | None:
        """The negative slope when this layer is a (leaky) ReLU that may run fused into the layer before it."""
        return None

    def writable_top(self) -> bool:
        """Whether this layer's one top is a new tensor that its backward does not read, so
        that a layer rewriting it in place may overwrite it (see fold.in_place_activations)."""
        return False

    def fuse_in_place(self, follower: "Layer") -> nn.Module | None:
        """A module computing this layer and then ``follower`` (which rewrites this layer's only
        top in place), with the same values and gradients; None when they cannot fuse."""
        return None

    def set_up_param(self, param: caffe_pb2.LayerParameter) -> None:
        """Rewrite the net's copy of this layer's parameter as the layer's LayerSetUp does to its
        ``layer_param_`` (e.g. PSPNet's BN fixing lr_mult); ``param`` has one spec per blob or fewer."""

    def to_channels_last(self) -> bool:
        """Store the blobs that profit from it channels_last; whether anything changed."""
        return False


class Delegating(nn.Module):
    """A stand-in for a layer module that answers every other question as the original does."""

    is_identity = False  # True: the stand-in's top is its bottom (see net.fold.PassThrough)

    def __init__(self, original: nn.Module):
        super().__init__()
        self.original = original

    @property
    def blobs(self) -> nn.ParameterList:  # Caffe's parameter blobs stay the original's
        return self.original.blobs

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["original"], name)

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        return self.original.top_shapes(bottom_shapes)

    def reshape(self, bottom_shapes: Sequence[Shape]) -> None:
        self.original.reshape(bottom_shapes)

    def writable_top(self) -> bool:  # a stand-in's top is its own business (a PassThrough's is its bottom)
        return False

    def alone(self) -> nn.Module:
        """The module that runs this layer by itself (pycaffe's layer-by-layer forward and
        backward, partial forwards, forward callbacks): itself, or the original layer where
        the stand-in computes more than this layer (a training fusion) or none of it."""
        return self


@contextlib.contextmanager
def _meta_blobs(module: nn.Module) -> Iterator[None]:
    """Every parameter and buffer of ``module`` (and its children) replaced by a meta tensor of
    its shape within the block. Not ``torch.func.functional_call``: that imports torch._dynamo
    on first use (about a second and 80 MB for every process that builds a net)."""
    saved: list[tuple[dict, str, Any]] = []
    try:
        for sub in module.modules():
            for table in (sub._parameters, sub._buffers):
                for key, value in list(table.items()):
                    if value is not None:
                        saved.append((table, key, value))
                        table[key] = torch.empty(value.shape, dtype=value.dtype, device="meta")
        yield
    finally:
        for table, key, value in reversed(saved):
            table[key] = value


def stored_nhwc(x: torch.Tensor) -> bool:
    """A 4-axis tensor stored channels_last (and not also NCHW-contiguous, as 1x1 maps or one
    channel are)."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def legacy_dim(shape: Sequence[int], index: int) -> int:
    """Caffe's Blob::LegacyShape: num/channels/height/width by index, 1 past the last axis."""
    return int(shape[index]) if index < len(shape) else 1


def canonical_axis(axis: int, num_axes: int, layer: Layer, what: str = "axis") -> int:
    """Caffe's Blob::CanonicalAxisIndex: negative axes count from the end; out of range is an error."""
    if not -num_axes <= axis < max(num_axes, 1):
        raise layer.error(f"{what} {axis} out of range for a {num_axes}-axis blob")
    return axis + num_axes if axis < 0 else axis
