"""Data-movement layers: they copy, select or re-view elements without arithmetic.

Concat, Slice, Split, Silence, Crop, Flatten, Reshape, Tile, Filter and BatchReindex.
Forward results must equal Caffe's bit for bit; backward is plain autograd (a scatter, a sum
over copies, or zeros), which is what Caffe's Backward_cpu computes for each of them.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..errors import Where
from ..proto import caffe_pb2
from .base import TEST, Layer, Shape, canonical_axis, register_layer


def _is_meta(t: torch.Tensor) -> bool:
    return t.device.type == "meta"


def _refuse_in_place(layer: Layer) -> None:
    """Reshape and Flatten share the bottom's memory in Caffe and refuse top == bottom."""
    p = layer.param
    if p.top and p.bottom and p.top[0] == p.bottom[0]:
        raise layer.error(f"{p.type} does not allow in-place computation; give top "
                          f"'{p.top[0]}' a new name")


def _legacy_or_axis(layer: Layer, param: caffe_pb2.ConcatParameter | caffe_pb2.SliceParameter,
                    legacy_field: str, ndim: int) -> int:
    """The axis of Concat/Slice: the deprecated ``*_dim`` field if set, else ``axis``."""
    if param.HasField(legacy_field) and param.HasField("axis"):
        raise layer.error(f"either axis or {legacy_field} should be specified; not both")
    if param.HasField(legacy_field):
        axis = int(getattr(param, legacy_field))
        if not 0 <= axis < ndim:
            raise layer.error(f"{legacy_field} {axis} out of range for a {ndim}-axis blob")
        return axis
    return canonical_axis(param.axis, ndim, layer)


@register_layer("Concat", bottoms=(1, None))
class Concat(Layer):
    """Joins its bottoms along ``axis`` (or the legacy ``concat_dim``).

    Caffe semantics: all other axes must agree; one bottom is passed through.
    Pinned by golden ``Concat__axis0`` and ``Concat__axis1``.
    """

    keeps_layout = True

    def forward(self, *bottoms: torch.Tensor) -> list[torch.Tensor]:
        first = bottoms[0]
        axis = _legacy_or_axis(self, self.param.concat_param, "concat_dim", first.dim())
        for i, b in enumerate(bottoms[1:], start=1):
            other = [d for j, d in enumerate(b.shape) if j != axis]
            want = [d for j, d in enumerate(first.shape) if j != axis]
            if b.dim() != first.dim() or other != want:
                raise self.error(f"bottom {i} has shape {tuple(b.shape)}, bottom 0 has "
                                 f"{tuple(first.shape)}; all inputs must match except at "
                                 f"axis {axis}")
        if len(bottoms) == 1:
            return [first.view_as(first)]
        return [torch.cat(bottoms, dim=axis)]


@register_layer("Slice", tops=(1, None))
class Slice(Layer):
    """Cuts its bottom along ``axis`` (or legacy ``slice_dim``) at ``slice_point``s, or evenly.

    Pinned by golden ``Slice__axis0_equal`` and ``Slice__axis1_points1_3``.
    """

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        sp = self.param.slice_param
        axis = _legacy_or_axis(self, sp, "slice_dim", x.dim())
        n_tops = max(len(self.param.top), 1)
        size = x.shape[axis]
        points = list(sp.slice_point)
        if points:
            if len(points) != n_tops - 1:
                raise self.error(f"{len(points)} slice_point(s) given for {n_tops} tops; "
                                 f"expected {n_tops - 1}")
            bounds = [0, *points, size]
            if (any(b <= a for a, b in zip(bounds[:-2], bounds[1:-1])) or points[-1] > size
                    or n_tops > size):
                raise self.error(f"slice_point {points} must increase strictly from above 0 "
                                 f"up to {size} (the size of axis {axis})")
            sizes = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
        else:
            if size % n_tops:
                raise self.error(f"{n_tops} tops do not evenly divide axis {axis} of size {size}")
            sizes = [size // n_tops] * n_tops
        return list(torch.split(x, sizes, dim=axis))


@register_layer("Split", tops=(1, None))
class Split(Layer):
    """Hands its bottom to every top (the same tensor: no copy); autograd adds the readers' gradients."""

    keeps_layout = True

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x] * max(len(self.param.top), 1)


@register_layer("Silence", bottoms=(1, None), tops=0)
class Silence(Layer):
    """Consumes bottoms so they are not net outputs; no tops, zero gradient to the bottoms."""

    def forward(self, *bottoms: torch.Tensor) -> list[torch.Tensor]:
        return []


@register_layer("Crop", bottoms=2)
class Crop(Layer):
    """Crops bottom 0 to bottom 1's shape on every axis from ``axis`` on, at ``offset``.

    Caffe semantics: no offset = 0, one offset = all cropped axes, else one per cropped axis;
    the reference bottom gets no gradient. Pinned by golden ``Crop__axis1_off1`` and
    ``Crop__axis2_off1_2``.
    """

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: Sequence[Shape],
                 phase: int = TEST, where: Where | None = None):
        super().__init__(param, bottom_shapes, phase, where)
        if self.bottom_shapes:
            self._offsets(self.bottom_shapes[0], self.bottom_shapes[1])

    def _offsets(self, data: Shape, ref: Shape) -> list[int]:
        cp = self.param.crop_param
        ndim = len(data)
        start = canonical_axis(cp.axis, ndim, self)
        given = list(cp.offset)
        if len(given) > 1 and start + len(given) != ndim:
            raise self.error(f"{len(given)} offsets given for axes {start}..{ndim - 1}; give one "
                             f"offset, or exactly {ndim - start}")
        if len(ref) < ndim:
            raise self.error(f"reference bottom has {len(ref)} axes; it needs at least the "
                             f"data's {ndim}")
        offsets = [0] * ndim
        for i in range(start, ndim):
            off = given[0] if len(given) == 1 else (given[i - start] if given else 0)
            if data[i] - off < ref[i]:
                raise self.error(f"crop of size {ref[i]} at offset {off} is out of bounds for "
                                 f"axis {i} of size {data[i]}")
            offsets[i] = off
        return offsets

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> list[torch.Tensor]:
        offsets = self._offsets(tuple(x.shape), tuple(ref.shape))
        start = canonical_axis(self.param.crop_param.axis, x.dim(), self)
        index = tuple(slice(None) if i < start else slice(off, off + ref.shape[i])
                      for i, off in enumerate(offsets))
        return [x[index]]


@register_layer("Flatten")
class Flatten(Layer):
    """Merges axes ``axis`` .. ``end_axis`` (inclusive) into one. Pinned by ``Flatten__*``."""

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: Sequence[Shape],
                 phase: int = TEST, where: Where | None = None):
        super().__init__(param, bottom_shapes, phase, where)
        _refuse_in_place(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        fp = self.param.flatten_param
        start = canonical_axis(fp.axis, x.dim(), self)
        end = canonical_axis(fp.end_axis, x.dim(), self, "end_axis")
        shape = (*x.shape[:start], math.prod(x.shape[start:end + 1]), *x.shape[end + 1:])
        return [x.reshape(shape)]


@register_layer("Reshape")
class Reshape(Layer):
    """Replaces axes ``axis`` .. ``axis+num_axes`` by ``shape`` (0 copies a dim, -1 infers one).

    Caffe semantics: a negative ``axis`` counts from after the last axis (-1 = append), and
    ``num_axes: -1`` means all remaining axes. Pinned by golden ``Reshape__*``.
    """

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: Sequence[Shape],
                 phase: int = TEST, where: Where | None = None):
        super().__init__(param, bottom_shapes, phase, where)
        _refuse_in_place(self)
        dims = list(param.reshape_param.shape.dim)
        if dims.count(-1) > 1:
            raise self.error(f"shape {dims} has more than one -1; at most one dim can be inferred")
        if any(d < -1 for d in dims):
            raise self.error(f"shape {dims} has a dim below -1; use a size, 0 (copy) or -1 (infer)")

    def new_shape(self, shape: Shape) -> Shape:
        """The top shape for a bottom of this shape (Caffe's ReshapeLayer::Reshape)."""
        rp = self.param.reshape_param
        ndim = len(shape)
        start = rp.axis if rp.axis >= 0 else ndim + rp.axis + 1
        if not 0 <= start <= ndim:
            raise self.error(f"axis {rp.axis} out of range for a {ndim}-axis bottom")
        if rp.num_axes < -1:
            raise self.error(f"num_axes {rp.num_axes} must be >= 0, or -1 for all")
        end = ndim if rp.num_axes == -1 else start + rp.num_axes
        if end > ndim:
            raise self.error(f"axis {start} + num_axes {rp.num_axes} is past the bottom's "
                             f"{ndim} axes")
        dims = list(rp.shape.dim)
        out = list(shape[:start]) + dims + list(shape[end:])
        for i, d in enumerate(dims):
            if d == 0:
                if start + i >= ndim:
                    raise self.error(f"shape dim {i} is 0 but the bottom has no axis "
                                     f"{start + i} to copy")
                out[start + i] = shape[start + i]
        if -1 in dims:
            i = start + dims.index(-1)
            known = math.prod(d for j, d in enumerate(out) if j != i)
            total = math.prod(shape)
            if known == 0 or total % known:
                raise self.error(f"bottom count {total} is not divisible by the product of the "
                                 f"given dims ({known})")
            out[i] = total // known
        if math.prod(out) != math.prod(shape):
            raise self.error(f"top shape {tuple(out)} has {math.prod(out)} elements; the bottom "
                             f"{tuple(shape)} has {math.prod(shape)}")
        return tuple(out)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x.reshape(self.new_shape(tuple(x.shape)))]


@register_layer("Tile")
class Tile(Layer):
    """Repeats the block of axes ``axis``.. ``tiles`` times. Pinned by golden ``Tile__axis1_t3``."""

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: Sequence[Shape],
                 phase: int = TEST, where: Where | None = None):
        super().__init__(param, bottom_shapes, phase, where)
        tp = param.tile_param
        if not tp.HasField("tiles"):
            raise self.error("tile_param { tiles } must be specified")
        if tp.tiles <= 0:
            raise self.error(f"tiles must be positive, got {tp.tiles}")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        axis = canonical_axis(self.param.tile_param.axis, x.dim(), self)
        reps = [1] * x.dim()
        reps[axis] = self.param.tile_param.tiles
        return [x.repeat(reps)]


def _batch_index(values: torch.Tensor) -> torch.Tensor:
    """Float indices as Caffe reads them (``static_cast<int>``: truncation toward zero)."""
    return values.detach().reshape(-1).to(torch.int64)


@register_layer("Filter", bottoms=(2, None), tops=(1, None))
class Filter(Layer):
    """Keeps the items (axis 0) whose selector (last bottom) is nonzero, for each other bottom.

    Caffe semantics: tops = bottoms - 1; the selector gets no gradient and unselected items get
    a zero one. Until the first forward the tops have the full batch size (Caffe's first
    Reshape). Pinned by golden ``Filter__one_blob`` (layer-level backward).
    """

    def __init__(self, param: caffe_pb2.LayerParameter, bottom_shapes: Sequence[Shape],
                 phase: int = TEST, where: Where | None = None):
        super().__init__(param, bottom_shapes, phase, where)
        if self.bottom_shapes:
            self._check(self.bottom_shapes)
        if param.top and len(param.top) != len(param.bottom) - 1:
            raise self.error(f"{len(param.top)} tops for {len(param.bottom)} bottoms; Filter "
                             f"needs one top per bottom except the last (selector)")

    def _check(self, shapes: Sequence[Shape]) -> None:
        sel = shapes[-1]
        if any(d != 1 for d in sel[1:]):
            raise self.error(f"selector shape {tuple(sel)}: all axes but the first must be 1")
        for i, s in enumerate(shapes[:-1]):
            if not s or not sel or s[0] != sel[0]:
                raise self.error(f"bottom {i} shape {tuple(s)} does not have the selector's "
                                 f"first dim {sel[0] if sel else None}")

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        self._check(bottom_shapes)
        return [tuple(s) for s in bottom_shapes[:-1]]

    def forward(self, *bottoms: torch.Tensor) -> list[torch.Tensor]:
        self._check([tuple(b.shape) for b in bottoms])
        keep = torch.nonzero(bottoms[-1].detach().reshape(-1) != 0).reshape(-1)
        return [b.index_select(0, keep) for b in bottoms[:-1]]


@register_layer("BatchReindex", bottoms=2)
class BatchReindex(Layer):
    """Top item i = bottom 0 item ``index[i]`` (bottom 1, 1-D, float indices).

    Caffe semantics: repeated indices add their gradients; no gradient into the indices.
    Pinned by golden ``BatchReindex__repeat`` (layer-level backward).
    """

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> list[torch.Tensor]:
        if index.dim() != 1:
            raise self.error(f"index bottom must have 1 axis, got shape {tuple(index.shape)}")
        if not _is_meta(index) and index.numel():
            # batch_reindex_layer.cpp checks the float values before truncating them.
            lo, hi = float(index.min()), float(index.max())
            if lo < 0 or hi >= x.shape[0]:
                raise self.error(f"index {lo if lo < 0 else hi:g} out of range for a batch of "
                                 f"{x.shape[0]}")
        return [x.index_select(0, _batch_index(index))]
