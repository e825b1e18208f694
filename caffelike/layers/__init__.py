"""Caffe layers, one module per family, registered by Caffe type string in :data:`LAYERS`.

Importing this package imports every family module, which fills the registry.

The package also plays pycaffe's ``caffe.layers`` (``from caffelike import layers as L``):
a capitalised attribute such as ``L.Convolution(...)`` is a NetSpec layer factory.
"""
from __future__ import annotations

import importlib
from typing import Any

from .base import LAYERS, TEST, TRAIN, Layer, LayerInfo, register_layer

FAMILIES = ("neuron", "common", "shape", "inputs", "vision", "normalization", "loss", "recurrent", "data", "python",
            "caffe_long", "caffe_long_bilinear", "caffe_long_margin", "caffe_long_loss", "caffe_long_data",
            "fork_misc", "yolo", "interp", "rcnn", "segnet", "fork_bn", "segnet_data",
            "ssd", "ssd_detection", "ssd_loss", "ssd_data", "parsenet")

for _family in FAMILIES:
    importlib.import_module(f"{__name__}.{_family}")


def __getattr__(name: str) -> Any:
    if name[:1].isupper():
        from ..net_spec import layers as spec_layers

        return getattr(spec_layers, name)
    raise AttributeError(f"module '{__name__}' has no attribute '{name}'")

__all__ = ["LAYERS", "Layer", "LayerInfo", "register_layer", "TRAIN", "TEST", "FAMILIES"]
