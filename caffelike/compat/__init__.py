"""Opt-in ``caffe`` alias, so old pycaffe scripts run unchanged on caffelike.

Two ways, both explicit; neither is active by default, so a real Caffe is never shadowed:

* in Python, before the first ``import caffe``::

      import caffelike.compat
      caffelike.compat.install_caffe_alias()   # does nothing if a real caffe is importable
      import caffe                              # -> caffelike

* from the shell, for scripts you cannot edit::

      export PYTHONPATH="$(python -m caffelike.compat):$PYTHONPATH"
      python old_script.py                      # its `import caffe` gets caffelike

  (``python -m caffelike.compat`` prints the folder holding the ``caffe`` shim package.)
  Putting that folder on the path is your decision: it then wins over a real Caffe that
  comes later on the path.

Then ``import caffe``, ``from caffe.proto import caffe_pb2``, ``from caffe import layers as L,
params as P``, ``caffe.io.Transformer``, ``caffe.Net(...)`` and ``caffe.Classifier`` work.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys

from ..glog import get_logger

__all__ = ["alias_path", "install_caffe_alias", "real_caffe_present"]


def alias_path() -> str:
    """The folder to put on ``sys.path``/``PYTHONPATH`` so that ``import caffe`` finds the shim."""
    return os.path.dirname(os.path.abspath(__file__))


def real_caffe_present() -> bool:
    """True when ``import caffe`` would load something other than this shim."""
    module = sys.modules.get("caffe")
    if module is not None:
        return not getattr(module, "__caffelike_alias__", False)
    try:
        spec = importlib.util.find_spec("caffe")
    except (ImportError, ValueError):
        return False
    if spec is None:
        return False
    origin = os.path.abspath(spec.origin or "")
    return not origin.startswith(alias_path() + os.sep)


def install_caffe_alias(force: bool = False) -> bool:
    """Make ``import caffe`` return caffelike's pycaffe surface.

    A real Caffe already importable (or imported) wins unless ``force``; returns whether the
    alias is now in place.
    """
    current = sys.modules.get("caffe")
    if current is not None and getattr(current, "__caffelike_alias__", False):
        return True
    if real_caffe_present() and not force:
        get_logger().warning("a real 'caffe' module is importable; not aliasing it to caffelike "
                             "(call install_caffe_alias(force=True) to override)")
        return False
    shim = importlib.import_module(f"{__name__}.caffe")
    sys.modules["caffe"] = shim
    shim._register_submodules("caffe")
    return True
