"""The ``Python`` layer type: a user class named by ``python_param { module layer param_str }``.

Two kinds of class work:

* a pycaffe layer: a subclass of the layer base class :class:`~caffelike.layers.base.Layer`
  (``caffelike.Layer``, i.e. ``caffe.Layer``), built as Caffe builds it, ``cls(param)``, with
  ``setup(bottom, top)``, ``reshape(bottom, top)``, ``forward(bottom, top)`` and
  ``backward(top, propagate_down, bottom)`` working on :class:`~caffelike.blob.Blob` objects
  with numpy ``.data``/``.diff``. It runs inside an autograd function that calls its
  ``backward``; blobs it adds with ``self.blobs.add_blob(*shape)`` in ``setup`` become
  learnable parameters (their ``.diff`` written in ``backward`` is their gradient). A class
  that is not a ``torch.nn.Module`` at all is run the same way.
* any other ``torch.nn.Module``: called as ``module(*bottoms)`` returning a tensor or a list
  of tensors, differentiated by autograd; its parameters are the layer's blobs.

The module is imported as Caffe does (``sys.path``, then the current directory).
``param_str`` and ``phase`` are set on the instance before ``setup`` (pycaffe) or passed to
the constructor when it takes them (``nn.Module``).

Disabling Python layers: the net builder (or anyone) wraps construction in
``with python_layers(False): ...``; :func:`check_allowed` then raises a LayerError. The
switch is the context variable :data:`python_layers_allowed`.
"""
from __future__ import annotations

import contextlib
import contextvars
import importlib
import inspect
import os
import sys
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..blob import Blob, BlobVec
from ..errors import LayerError, Where
from .base import Layer, Shape, register_layer

Tensor = torch.Tensor

python_layers_allowed: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "python_layers_allowed", default=True)


@contextlib.contextmanager
def python_layers(allowed: bool) -> Iterator[None]:
    """Within this block, Python layers may (True) or may not (False) be built."""
    token = python_layers_allowed.set(bool(allowed))
    try:
        yield
    finally:
        python_layers_allowed.reset(token)


def check_allowed(where: Where | None = None) -> None:
    """Raise a LayerError if Python layers are disabled in the current context."""
    if not python_layers_allowed.get():
        raise LayerError("Python layers are disabled (allow_python_layers=False); "
                         "enable them to run user code from python_param", where)


# --- importing the user's class ---------------------------------------------------------------
def _import(module_name: str, where: Where | None) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name.split(".")[0] and exc.name != module_name:
            raise LayerError(f"cannot import Python layer module '{module_name}': {exc}", where) from None
    except Exception as exc:  # the user's module failed while importing
        raise LayerError(f"cannot import Python layer module '{module_name}': "
                         f"{type(exc).__name__}: {exc}", where) from None
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.append(cwd)
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError:
            pass
        except Exception as exc:
            raise LayerError(f"cannot import Python layer module '{module_name}': "
                             f"{type(exc).__name__}: {exc}", where) from None
        finally:
            if sys.path and sys.path[-1] == cwd:
                sys.path.pop()
    raise LayerError(f"cannot import Python layer module '{module_name}': no module of that name "
                     "on sys.path or in the current directory (set PYTHONPATH)", where)


def load_class(module_name: str, class_name: str, where: Where | None = None) -> type:
    """The class ``class_name`` of module ``module_name``, or a LayerError naming both."""
    if not module_name or not class_name:
        raise LayerError("python_param needs both module and layer (the module and class of "
                         "the Python layer)", where)
    module = _import(module_name, where)
    cls = getattr(module, class_name, None)
    if cls is None:
        raise LayerError(f"Python layer module '{module_name}' "
                         f"({getattr(module, '__file__', '?')}) has no class '{class_name}'", where)
    if not isinstance(cls, type):
        raise LayerError(f"'{module_name}.{class_name}' is not a class", where)
    return cls


def _make_module(cls: type, param: Any, phase: int) -> nn.Module:
    """Instantiate an nn.Module class, passing param_str / phase / param where it takes them."""
    offered = {"param_str": param.python_param.param_str, "phase": phase, "param": param}
    try:
        sig = inspect.signature(cls)
        kwargs = {k: v for k, v in offered.items() if k in sig.parameters}
    except (TypeError, ValueError):
        kwargs = {}
    module = cls(**kwargs)
    for name in ("param_str", "phase"):
        if not hasattr(module, name):
            setattr(module, name, offered[name])
    return module


# --- the Caffe layer --------------------------------------------------------------------------
@register_layer("Python", bottoms=(0, None), tops=(0, None))
class PythonLayer(Layer):
    """Runs a user's Python layer class (pycaffe-style or ``nn.Module``), see the module doc."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        check_allowed(self.where)
        if torch.empty(0).device.type == "meta":
            # User code expects real arrays: refuse a meta-device build (the net then builds
            # the layer normally) before running any of it.
            raise RuntimeError("Python layers cannot be built on the meta device")
        pp = self.param.python_param
        cls = load_class(pp.module, pp.layer, self.where)
        self.register_buffer("_device_probe", torch.zeros(0), persistent=False)
        self.n_tops = len(self.param.top)
        self.is_module = issubclass(cls, nn.Module) and not issubclass(cls, Layer)
        if self.is_module:
            self.impl = self._guard("construction", _make_module, cls, self.param, self.phase)
            for p in self.impl.parameters():
                self.blobs.append(p)
        else:
            # The user's layer runs on numpy blobs, not as a submodule of the net.
            object.__setattr__(self, "user", self._guard("construction", cls, self.param))
            self.user.param_str = pp.param_str
            self.user.phase = int(self.phase)
            if not hasattr(self.user, "blobs"):
                self.user.blobs = BlobVec()
            bottoms = [Blob(s) for s in self.bottom_shapes]
            self.top_blobs = [Blob(()) for _ in range(self.n_tops)]
            self._guard("setup", self.user.setup, bottoms, self.top_blobs)
            for blob in self.user.blobs:
                self.blobs.append(nn.Parameter(blob.data_tensor()))
            self._guard("reshape", self.user.reshape, bottoms, self.top_blobs)
            self._shapes_for = (list(self.bottom_shapes), [b.shape for b in self.top_blobs])

    def _guard(self, what: str, fn, *args):
        """Call user code; its exceptions propagate unchanged (as in pycaffe) with a note
        naming the layer and the step."""
        try:
            return fn(*args)
        except Exception as exc:
            if not isinstance(exc, LayerError):
                pp = self.param.python_param
                exc.add_note(f"{self.where}: in {what} of Python layer {pp.module}.{pp.layer}")
            raise

    @property
    def device(self) -> torch.device:
        return self._device_probe.device

    # -- shapes ----------------------------------------------------------------------------------
    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        shapes = [tuple(s) for s in bottom_shapes]
        if self.is_module:
            zeros = [torch.zeros(s, dtype=torch.float32, device=self.device) for s in shapes]
            with torch.no_grad():
                tops = self._module_tops(zeros)
            return [tuple(t.shape) for t in tops]
        if shapes == self._shapes_for[0]:
            return list(self._shapes_for[1])
        bottoms = [Blob(s) for s in shapes]
        self._guard("reshape", self.user.reshape, bottoms, self.top_blobs)
        return [b.shape for b in self.top_blobs]

    # -- running ---------------------------------------------------------------------------------
    def forward(self, *bottoms: Tensor) -> list[Tensor]:
        if self.is_module:
            return self._module_tops(list(bottoms))
        if self.n_tops == 0:
            self._run_forward(bottoms)
            return []
        return list(_PyCaffeFn.apply(self, len(bottoms), *bottoms, *self.blobs))

    def _module_tops(self, bottoms: list[Tensor]) -> list[Tensor]:
        out = self._guard("forward", self.impl, *bottoms)
        tops = [out] if isinstance(out, Tensor) else list(out) if out is not None else []
        if len(tops) != self.n_tops or not all(isinstance(t, Tensor) for t in tops):
            raise self.error(f"Python layer forward returned {len(tops)} value(s); expected "
                             f"{self.n_tops} tensor(s), one per top")
        return tops

    def _sync_params(self) -> list[Blob]:
        """Point the user's parameter blobs at the current parameter values (CPU numpy)
        and clear their diffs (the diff a backward writes is that call's gradient)."""
        for blob, param in zip(self.user.blobs, self.blobs):
            blob.use_tensors(param.detach().cpu())
        return list(self.user.blobs)

    def _run_forward(self, bottoms: Sequence[Tensor]) -> tuple[list[Blob], list[np.ndarray]]:
        self._sync_params()
        blobs = [Blob(data=b.detach().cpu().numpy().copy()) for b in bottoms]
        self._guard("reshape", self.user.reshape, blobs, self.top_blobs)
        self._guard("forward", self.user.forward, blobs, self.top_blobs)
        return blobs, [t.data.copy() for t in self.top_blobs]

    def _run_backward(self, bottoms: list[Blob], top_data: list[np.ndarray],
                      top_diffs: list[np.ndarray], propagate_down: list[bool]) -> list[np.ndarray]:
        params = self._sync_params()
        tops = [Blob(data=data, diff=diff) for data, diff in zip(top_data, top_diffs)]
        for b in bottoms:
            b.diff = 0.0
        self._guard("backward", self.user.backward, tops, propagate_down, bottoms)
        return [b.diff for b in bottoms] + [p.diff for p in params]


class _PyCaffeFn(torch.autograd.Function):
    """Forward and backward of a pycaffe layer through its numpy blobs."""

    @staticmethod
    def forward(ctx, layer: PythonLayer, n_bottoms: int, *tensors: Tensor):
        bottoms = tensors[:n_bottoms]
        blobs, top_data = layer._run_forward(bottoms)
        device = bottoms[0].device if bottoms else layer.device
        ctx.layer, ctx.n_bottoms, ctx.blobs, ctx.top_data = layer, n_bottoms, blobs, top_data
        ctx.devices = [t.device for t in tensors]
        return tuple(torch.from_numpy(d.copy()).to(device) for d in top_data)

    @staticmethod
    def backward(ctx, *grads: Tensor):
        diffs = [np.zeros_like(d) if g is None else g.detach().cpu().numpy()
                 for d, g in zip(ctx.top_data, grads)]
        propagate = [bool(ctx.needs_input_grad[2 + i]) for i in range(ctx.n_bottoms)]
        results = ctx.layer._run_backward(ctx.blobs, ctx.top_data, diffs, propagate)
        out: list[Tensor | None] = [None, None]
        for i, (arr, dev) in enumerate(zip(results, ctx.devices)):
            out.append(torch.from_numpy(np.array(arr, dtype=np.float32)).to(dev)
                       if ctx.needs_input_grad[2 + i] else None)
        return tuple(out)
