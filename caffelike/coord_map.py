"""pycaffe's ``caffe.coord_map``: how the spatial coordinates of two tops of a NetSpec relate.

A layer maps input coordinates to output coordinates by an affine map on one axis range:
``(axis, scale, shift)`` with ``out = in * scale + shift`` (``axis`` None: the layer does not
care, as pointwise layers). :func:`coord_map_from_to` composes these maps along the graph of
:class:`~caffelike.net_spec.Top` objects from two tops back to a common ancestor; :func:`crop`
turns the result into the ``Crop`` layer that aligns one top with the other (FCN's use).
Maps, exceptions and errors follow pycaffe's ``coord_map.py``.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from .net_spec import Function, Top, layers as L

__all__ = ["PASS_THROUGH_LAYERS", "UndefinedMapException", "AxisMismatchException", "conv_params",
           "crop_params", "coord_map", "compose", "inverse", "coord_map_from_to", "crop"]

# (axis, scale, shift); scale and shift are numbers or per-axis numpy arrays.
CoordMap = Tuple[Optional[int], Any, Any]

PASS_THROUGH_LAYERS = ["AbsVal", "BatchNorm", "Bias", "BNLL", "Dropout", "Eltwise", "ELU", "Log", "LRN",
                       "Exp", "MVN", "Power", "ReLU", "PReLU", "Scale", "Sigmoid", "Split", "TanH",
                       "Threshold"]
IDENTITY: CoordMap = (None, 1, 0)


class UndefinedMapException(Exception):
    """The layer type has no coordinate mapping (the walk stops at it)."""


class AxisMismatchException(Exception):
    """Two maps on different axes cannot be composed."""


def conv_params(fn: Function) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """(axis, stride, effective kernel extent, pad) of a Convolution/Deconvolution/Im2col/Pooling."""
    params = fn.params.get("convolution_param", fn.params)
    legacy = {"pad_h", "pad_w", "kernel_h", "kernel_w", "stride_h", "stride_w"} & set(fn.params)
    if legacy:
        raise AssertionError(f"cropping does not support legacy _h/_w params ({', '.join(sorted(legacy))} "
                             f"of {fn.type_name}); give kernel_size, stride and pad")
    kernel = np.array(params["kernel_size"], ndmin=1)
    dilation = np.array(params.get("dilation", 1), ndmin=1)
    return (params.get("axis", 1), np.array(params.get("stride", 1), ndmin=1),
            (kernel - 1) * dilation + 1, np.array(params.get("pad", 0), ndmin=1))


def crop_params(fn: Function) -> tuple[int, np.ndarray]:
    """(axis, offset) of a Crop layer, with Caffe's defaults (axis 2, offset 0)."""
    params = fn.params.get("crop_param", fn.params)
    return params.get("axis", 2), np.array(params.get("offset", 0), ndmin=1)


def coord_map(fn: Function) -> CoordMap:
    """The map of one layer from its (first) bottom to its top; UndefinedMapException if none."""
    if fn.type_name in ("Convolution", "Pooling", "Im2col"):
        axis, stride, extent, pad = conv_params(fn)
        return axis, 1 / stride, (pad - (extent - 1) / 2) / stride
    if fn.type_name == "Deconvolution":
        axis, stride, extent, pad = conv_params(fn)
        return axis, stride, (extent - 1) / 2 - pad
    if fn.type_name in PASS_THROUGH_LAYERS:
        return IDENTITY
    if fn.type_name == "Crop":
        axis, offset = crop_params(fn)
        return axis - 1, 1, -offset  # axis - 1: the last axis that is not a coordinate
    raise UndefinedMapException(f"no coordinate mapping for layer type {fn.type_name}")


def compose(base_map: CoordMap, next_map: CoordMap) -> CoordMap:
    """``base_map`` after ``next_map``: scales multiply, the next shift is scaled by the base scale."""
    ax1, a1, b1 = base_map
    ax2, a2, b2 = next_map
    if ax1 is None:
        axis = ax2
    elif ax2 is None or ax1 == ax2:
        axis = ax1
    else:
        raise AxisMismatchException(f"cannot compose coordinate maps on axes {ax1} and {ax2}")
    return axis, a1 * a2, a1 * b2 + b1


def inverse(cmap: CoordMap) -> CoordMap:
    """The map back (output to input coordinates)."""
    axis, a, b = cmap
    return axis, 1 / a, -b / a


def _mapped_bottoms(top: Top) -> tuple:
    # Every bottom of a layer maps alike, except Crop's second (reference-shape) bottom.
    bottoms = top.fn.inputs
    return bottoms[:1] if top.fn.type_name == "Crop" else bottoms


def _walk_back(start: Top, stop_at: dict | None = None) -> tuple[dict, CoordMap | None]:
    """Maps from ``start`` to each ancestor; with ``stop_at``, the first ancestor found in it."""
    maps = {start: IDENTITY}
    frontier = {start}
    while frontier:
        top = frontier.pop()
        if stop_at is not None and top in stop_at:
            return maps, compose(maps[top], inverse(stop_at[top]))
        try:
            step = coord_map(top.fn)
        except UndefinedMapException:
            continue
        for bottom in _mapped_bottoms(top):
            maps[bottom] = compose(maps[top], step)
            frontier.add(bottom)
    return maps, None


def coord_map_from_to(top_from: Top, top_to: Top) -> CoordMap:
    """The map from ``top_from``'s coordinates to ``top_to``'s, through a common ancestor.

    RuntimeError when the two tops share no ancestor reachable through mappable layers.
    """
    from_maps, _ = _walk_back(top_from)
    _, found = _walk_back(top_to, stop_at=from_maps)
    if found is None:
        raise RuntimeError("Could not compute map between tops; are they connected by spatial layers?")
    return found


def crop(top_from: Top, top_to: Top) -> Top:
    """A ``Crop`` layer cropping ``top_from`` to ``top_to`` (axis and offsets from their map).

    AssertionError when the tops differ in scale or the offset is negative or fractional.
    """
    axis, a, b = coord_map_from_to(top_from, top_to)
    if not np.all(a == 1):
        raise AssertionError(f"scale mismatch on crop (a = {a})")
    if not np.all(b <= 0):
        raise AssertionError(f"cannot crop negative offset (b = {b})")
    if not np.all(np.round(b) == b):
        raise AssertionError(f"cannot crop noninteger offset (b = {b})")
    return L.Crop(top_from, top_to,
                  crop_param=dict(axis=axis + 1, offset=[int(v) for v in -np.round(np.atleast_1d(b))]))
