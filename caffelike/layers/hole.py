"""The forks' spellings of convolution ``dilation`` (the "hole" algorithm, à trous), issue 16.

ParseNet and DeepLab on weiliu89/caffe (branch fcn, ``base_conv_layer.cpp``) write
``filter_stride`` or ``filter_stride_h``/``filter_stride_w``; DeepLab v1 (deeplab-public, as in
TheLegendAli/DeepLab-Context ``conv_layer.cpp``) writes ``hole`` or ``hole_h``/``hole_w``. Both
space the filter taps that many cells apart, which is BVLC's ``dilation``.
"""
from __future__ import annotations

from ..proto import caffe_pb2
from .base import Layer

SPELLINGS = ("filter_stride", "hole")


def fork_dilation(layer: Layer, p: caffe_pb2.ConvolutionParameter, n: int) -> tuple[int, ...] | None:
    """The dilation a fork spelling gives for ``n`` spatial axes; None when none is given."""
    given = [name for name in SPELLINGS
             if any(p.HasField(name + suffix) for suffix in ("", "_h", "_w"))]
    if not given:
        return None
    if len(given) > 1 or len(p.dilation):
        raise layer.error(f"give one of dilation, {', '.join(SPELLINGS)} (the forks' names for it), "
                          "not several")
    name = given[0]
    hw = p.HasField(f"{name}_h") or p.HasField(f"{name}_w")
    if hw and (p.HasField(name) or not (p.HasField(f"{name}_h") and p.HasField(f"{name}_w"))):
        raise layer.error(f"give {name}, or both {name}_h and {name}_w")
    if not hw:
        return (int(getattr(p, name)),) * n
    if n != 2:
        raise layer.error(f"{name}_h and {name}_w can only be used for 2-D convolution ({n} spatial axes here)")
    return (int(getattr(p, f"{name}_h")), int(getattr(p, f"{name}_w")))
