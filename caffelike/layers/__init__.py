"""Caffe layers, one module per family, registered by Caffe type string in :data:`LAYERS`.

Importing this package imports every family module, which fills the registry.
"""
from __future__ import annotations

import importlib

from .base import LAYERS, TEST, TRAIN, Layer, LayerInfo, register_layer

FAMILIES = ("neuron", "common", "vision", "normalization", "loss", "recurrent", "data", "python")

for _family in FAMILIES:
    try:
        importlib.import_module(f"{__name__}.{_family}")
    except ModuleNotFoundError as exc:  # a family still being written
        if exc.name != f"{__name__}.{_family}":
            raise

__all__ = ["LAYERS", "Layer", "LayerInfo", "register_layer", "TRAIN", "TEST", "FAMILIES"]
