"""caffelike: Caffe, reborn on PyTorch.

``import caffelike as caffe`` gives pycaffe's surface: ``Net``, ``TRAIN``/``TEST``,
``set_mode_cpu``/``set_mode_gpu``, ``io``, the solvers, ``Layer`` for Python layers,
``NetSpec`` (``layers``/``params``), ``Classifier``/``Detector``, ``draw``, ``coord_map``,
``Timer``, ``init_log``/``log``, ``has_nccl``/``NCCL`` and the solver count/rank settings;
beyond pycaffe, ``to_torch(net)`` (a plain ``torch.nn.Module``). Names are imported lazily, so the command-line tools
that need no torch start fast.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

TRAIN = 0
TEST = 1

# name -> "module" or "module:attribute". pycaffe's solver classes (SGDSolver ... AdamSolver)
# are caffelike.solver's, one per entry of its update-rule table; ``__all__`` names them too,
# so it is computed on first use like the rest.
_LAZY: dict[str, str] = {
    "Net": "caffelike.net:Net",
    "Blob": "caffelike.blob:Blob",
    "set_mode_cpu": "caffelike.mode:set_mode_cpu",
    "set_mode_gpu": "caffelike.mode:set_mode_gpu",
    "set_device": "caffelike.mode:set_device",
    "set_random_seed": "caffelike.mode:set_random_seed",
    "layer_type_list": "caffelike.net:layer_type_list",
    "Layer": "caffelike.layers:Layer",
    "get_solver": "caffelike.solver:get_solver",
    "Solver": "caffelike.solver:Solver",
    "NetSpec": "caffelike.net_spec:NetSpec",
    "layers": "caffelike.layers",
    "params": "caffelike.net_spec:params",
    "to_proto": "caffelike.net_spec:to_proto",
    "Classifier": "caffelike.classifier:Classifier",
    "Detector": "caffelike.detector:Detector",
    "draw": "caffelike.draw",
    "coord_map": "caffelike.coord_map",
    "has_nccl": "caffelike.nccl:has_nccl",
    "NCCL": "caffelike.nccl:NCCL",
    "Timer": "caffelike.timer:Timer",
    "init_log": "caffelike.glog:init_log",
    "log": "caffelike.glog:log",
    "solver_count": "caffelike.mode:solver_count",
    "set_solver_count": "caffelike.mode:set_solver_count",
    "solver_rank": "caffelike.mode:solver_rank",
    "set_solver_rank": "caffelike.mode:set_solver_rank",
    "set_multiprocess": "caffelike.mode:set_multiprocess",
    "io": "caffelike.io",
    "proto": "caffelike.proto",
    "errors": "caffelike.errors",
    "to_torch": "caffelike.export:to_torch",
}


def _solver_classes() -> dict[str, type]:
    return importlib.import_module("caffelike.solver").SOLVER_CLASSES


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is not None:
        module_name, _, attr = target.partition(":")
        module = importlib.import_module(module_name)
        value = getattr(module, attr) if attr else module
    elif name == "__all__":
        value = ["TRAIN", "TEST", "__version__", *_LAZY, *_solver_classes()]
    elif name.endswith("Solver") and name in _solver_classes():
        value = _solver_classes()[name]
    else:
        raise AttributeError(f"module 'caffelike' has no attribute '{name}'")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__getattr__("__all__"))
