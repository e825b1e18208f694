"""The net: a frozen plan (:mod:`.plan`), modules built from it (:mod:`.build`), the graph that
runs them (:mod:`.graph`), deploy folding (:mod:`.fold`), weight I/O (:mod:`.weights`) and
pycaffe's ``Net`` facade (:mod:`.pycaffe`)."""
from __future__ import annotations

from .build import shape_string
from .graph import NetGraph, ParamInfo
from .plan import LayerPlan, NetPlan
from .pycaffe import TEST, TRAIN, Net, layer_type_list

__all__ = ["Net", "NetGraph", "NetPlan", "LayerPlan", "ParamInfo", "TRAIN", "TEST", "layer_type_list",
           "shape_string"]
