"""ParseNet's pooling into a fixed number of bins (issue 16): ``pooling_param.bin_size`` or
``bin_h``/``bin_w`` of weiliu89/caffe branch fcn (``pooling_layer.cpp``).

The fork derives kernel, stride and pad from the bottom's size at every reshape and then pools
as Caffe does (ceil rounding, the padded-last-window rule). With bins it skips the kernel,
stride and pad fields and their checks; ``bin_size: 1`` is a global pooling.
"""
from __future__ import annotations

import math

from ..proto import caffe_pb2
from .base import Layer

Pair = tuple[int, int]


def has_bins(p: caffe_pb2.PoolingParameter) -> bool:
    """Whether the pooling is given as bins (the fork then ignores kernel, stride and pad)."""
    return p.HasField("bin_size") or p.HasField("bin_h") or p.HasField("bin_w")


def bin_geometry(layer: Layer, p: caffe_pb2.PoolingParameter, height: int, width: int
                 ) -> tuple[Pair, Pair, Pair]:
    """(kernel, stride, pad), each (h, w), that pool a ``height`` x ``width`` map into the bins.

    Per axis with b bins over size n: kernel k = ceil(n / b); stride k, or 1 when k == n;
    pad floor(((b - 1) * stride + k - n) / 2). The fork requires 0 < b <= n // 2.
    """
    if not p.HasField("bin_size") and not (p.HasField("bin_h") and p.HasField("bin_w")):
        raise layer.error("pooling_param needs bin_size, or both bin_h and bin_w")
    bins = (p.bin_size,) * 2 if p.HasField("bin_size") else (p.bin_h, p.bin_w)
    kernel, stride, pad = [], [], []
    for axis, b, n in (("height", bins[0], height), ("width", bins[1], width)):
        if b <= 0:
            raise layer.error(f"the number of bins in {axis} must be > 0, got {b}")
        if b > n // 2:
            raise layer.error(f"{b} bins in {axis} is more than half the bottom's {axis} {n} "
                              "(the fork allows at most half)")
        k = math.ceil(n / b)
        s = 1 if k == n else k
        kernel.append(k)
        stride.append(s)
        pad.append(((b - 1) * s + k - n) // 2)
    return (kernel[0], kernel[1]), (stride[0], stride[1]), (pad[0], pad[1])
