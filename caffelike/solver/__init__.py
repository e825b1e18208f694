"""Caffe's solvers on torch: lr policies, update rules, the training loop, snapshots, log messages.

``Solver`` runs Caffe's loop; ``SGDSolver`` ... ``AdamSolver`` fix the update rule, one class
per entry of the update-rule table ``UPDATE_RULES``; ``get_solver(file_or_param)`` picks it
from ``type`` (pycaffe's ``caffe.get_solver``).

Resuming (``caffelike train -snapshot x.solverstate``) restores the iteration, lr step,
update history and weights, as Caffe does. Like Caffe, the solverstate holds no data read
position: data layers restart from the first item, so a resumed run equals an uninterrupted
one exactly only when the snapshot was taken at an epoch boundary (iteration x batch_size x
iter_size a multiple of the training set size, no shuffling); mid-epoch we do no better
than Caffe.
"""
from __future__ import annotations

import importlib
from typing import Any

# name -> module; imported on first use, so ``caffelike.solver.messages`` (the log texts and
# patterns a log parser needs) loads without torch. The ``<type>Solver`` classes and
# ``__all__``, which names them, come from the update-rule table in the same way.
_LAZY = {
    "Solver": "loop", "get_solver": "loop", "SOLVER_CLASSES": "loop",
    "LR_POLICIES": "lr_policies", "UPDATE_RULES": "updates",
}


def _solver_classes() -> dict[str, type]:
    return importlib.import_module(f"{__name__}.loop").SOLVER_CLASSES


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    elif name == "__all__":
        value = [*_LAZY, *_solver_classes()]
    elif name.endswith("Solver") and name in _solver_classes():
        value = _solver_classes()[name]
    else:
        raise AttributeError(f"module 'caffelike.solver' has no attribute '{name}'")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__getattr__("__all__"))
