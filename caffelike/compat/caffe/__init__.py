"""``caffe`` shim: pycaffe's names, served by caffelike (see ``caffelike.compat``)."""
from __future__ import annotations

import importlib
import sys
from typing import Any

import caffelike as _caffelike
from caffelike import TEST, TRAIN, __version__  # noqa: F401
from caffelike import io  # noqa: F401
from caffelike import net_spec  # noqa: F401
from caffelike.net_spec import layers, params, to_proto, NetSpec  # noqa: F401

__caffelike_alias__ = True

# pycaffe submodule name -> caffelike module
_SUBMODULES = {
    "io": "caffelike.io",
    "net_spec": "caffelike.net_spec",
    "proto.caffe_pb2": "caffelike.proto.caffe_pb2",
    "classifier": "caffelike.classifier",
    "detector": "caffelike.detector",
    "draw": "caffelike.draw",
    "coord_map": "caffelike.coord_map",
}
_ON_USE = {"classifier", "detector"}  # imported on first use: they need the Net


def _register_submodules(prefix: str) -> None:
    """Let ``import caffe.io`` / ``import caffe.proto.caffe_pb2`` find caffelike's modules."""
    sys.modules.setdefault(f"{prefix}.proto", importlib.import_module(f"{__name__}.proto"))
    for name, target in _SUBMODULES.items():
        if name in _ON_USE:
            continue
        sys.modules.setdefault(f"{prefix}.{name}", importlib.import_module(target))


def __getattr__(name: str) -> Any:
    if name in _ON_USE:
        return importlib.import_module(_SUBMODULES[name])
    return getattr(_caffelike, name)


def __dir__() -> list[str]:
    return sorted(set(dir(_caffelike)) | {"layers", "params", "to_proto", "NetSpec", "io", "proto"})


_register_submodules("caffe")
