"""Leaving Caffe: a deploy net as ONNX, as plain PyTorch (``model.py`` + ``weights.pth``), as a
``torch.export`` program (``.pt2``), or as a plain ``nn.Module`` in memory (:func:`to_torch`).

Modules: ``onnx`` (ONNX export and its onnxruntime check), ``ops`` (the op table: Caffe type ->
torch module), ``helpers`` (modules for Caffe semantics torch lacks), ``describe`` (a net as
a static module description), ``module`` (the in-memory module), ``codegen`` (``model.py``),
``weights`` (``weights.pth``), ``pytorch`` (the directory export), ``pt2``.
"""
from __future__ import annotations

from .onnx import check, export
from .module import TorchNet, to_torch
from .pt2 import export_pt2
from .pytorch import export_pytorch

__all__ = ["check", "export", "export_pt2", "export_pytorch", "to_torch", "TorchNet"]
