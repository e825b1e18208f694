"""File I/O for Caffe's formats, and pycaffe's ``caffe.io`` helpers.

* ``prototxt``: text nets and solvers, with a source map (layer -> line) and legacy upgrade;
* ``caffemodel``: binary NetParameter weights <-> ``dict[layer, list[ndarray]]``;
* ``solverstate``: SolverState files; ``blobs``: BlobProto <-> ndarray, mean files;
* ``upgrade``: Caffe's upgrade_proto rules (V0/V1 nets, legacy solver fields);
* ``pycaffe_io``: ``Transformer``, ``load_image``, ``oversample``, ... as in pycaffe.

Names are imported lazily from their modules.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY: dict[str, str] = {
    # prototxt.py
    "read_net": "prototxt", "read_solver": "prototxt", "parse_net": "prototxt",
    "parse_solver": "prototxt", "read_text_proto": "prototxt", "parse_text_proto": "prototxt",
    "write_text_proto": "prototxt", "layer_lines": "prototxt", "SourceMap": "prototxt",
    # caffemodel.py
    "read_caffemodel": "caffemodel", "load_weights": "caffemodel", "write_caffemodel": "caffemodel",
    "read_binary_net": "caffemodel",
    # solverstate.py
    "read_solverstate": "solverstate", "write_solverstate": "solverstate",
    # blobs.py
    "blob_to_array": "blobs", "array_to_blob": "blobs", "read_mean_file": "blobs",
    "write_mean_file": "blobs",
    # atomic.py
    "atomic_write": "atomic",
    # upgrade.py
    "upgrade_net": "upgrade", "upgrade_solver": "upgrade", "net_needs_upgrade": "upgrade",
    # pycaffe_io.py (pycaffe's caffe.io)
    "Transformer": "pycaffe_io", "load_image": "pycaffe_io", "resize_image": "pycaffe_io",
    "oversample": "pycaffe_io", "blobproto_to_array": "pycaffe_io",
    "array_to_blobproto": "pycaffe_io", "array_to_datum": "pycaffe_io",
    "datum_to_array": "pycaffe_io", "arraylist_to_blobprotovector_str": "pycaffe_io",
    "blobprotovector_str_to_arraylist": "pycaffe_io",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'caffelike.io' has no attribute '{name}'")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
