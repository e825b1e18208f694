"""pycaffe's blob objects: ``Blob`` (data and diff: a net's activation, a Python layer's bottom,
top or parameter), ``BlobVec`` (a Python layer's ``self.blobs``), ``ParamBlob`` (a view of a
net layer's parameter) and ``LayerView`` (``net.layers[i]``: type, name and parameter blobs).

All give numpy arrays that write through while the net is on the CPU, and Caffe's legacy
``num``/``channels``/``height``/``width`` accessors.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import weakref

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from .layers import Layer


class Shaped:
    """``count`` and Caffe's legacy num/channels/height/width for any blob with a ``shape``."""

    @property
    def shape(self) -> tuple[int, ...]:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def count(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def _legacy(self, index: int) -> int:
        # Blob::LegacyShape (include/caffe/blob.hpp): axis ``index`` counted from the front,
        # 1 for an axis the blob lacks, so an (N, K) blob has num N, channels K, height 1.
        shape = self.shape
        return int(shape[index]) if index < len(shape) else 1

    @property
    def num(self) -> int:
        return self._legacy(0)

    @property
    def channels(self) -> int:
        return self._legacy(1)

    @property
    def height(self) -> int:
        return self._legacy(2)

    @property
    def width(self) -> int:
        return self._legacy(3)


class Blob(Shaped):
    """pycaffe's blob (``caffe._caffe.Blob``): float32 ``data`` and ``diff`` numpy arrays.

    Both are views of CPU tensors, allocated (as zeros) on first use: the net keeps one blob
    per activation and copies results in with :meth:`store`; a Python layer gets its bottoms,
    tops and parameters as blobs. ``Blob(shape)`` starts empty; ``Blob(data=array)`` wraps an
    array (without a copy when it is already float32 and contiguous).
    """

    def __init__(self, shape: Sequence[int] = (), data: np.ndarray | None = None,
                 diff: np.ndarray | None = None):
        self._data: torch.Tensor | None = None
        self._diff: torch.Tensor | None = None
        if data is None:
            self._shape = _dims(shape)
        else:
            self._data = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
            self._shape = tuple(self._data.shape)
        if diff is not None:
            self._diff = torch.from_numpy(np.ascontiguousarray(diff, dtype=np.float32)).reshape(self._shape)

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    def reshape(self, *shape: int) -> None:
        """Caffe's Blob::Reshape: contents kept when the count is unchanged, else zeros."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        new = _dims(shape)
        if new == self._shape:
            return
        self._shape = new
        for attr in ("_data", "_diff"):
            old = getattr(self, attr)
            if old is not None and old.numel() == int(np.prod(new, dtype=np.int64)):
                setattr(self, attr, old.reshape(new))
            else:
                setattr(self, attr, None)

    def use_tensors(self, data: torch.Tensor, diff: torch.Tensor | None = None) -> None:
        """View ``data`` (and ``diff``, else zeros) from now on, without copying: CPU float32
        tensors, e.g. a Python layer's parameter, so that its blob writes through."""
        self._shape = tuple(data.shape)
        self._data = data
        self._diff = diff

    def data_tensor(self) -> torch.Tensor:
        """The persistent CPU tensor behind ``.data``."""
        if self._data is None:
            self._data = torch.zeros(self._shape, dtype=torch.float32)
        return self._data

    def diff_tensor(self) -> torch.Tensor:
        """The persistent CPU tensor behind ``.diff``."""
        if self._diff is None:
            self._diff = torch.zeros(self._shape, dtype=torch.float32)
        return self._diff

    @property
    def data(self) -> np.ndarray:
        return self.data_tensor().numpy()

    @data.setter
    def data(self, value: np.ndarray) -> None:
        self.data[...] = value

    @property
    def diff(self) -> np.ndarray:
        return self.diff_tensor().numpy()

    @diff.setter
    def diff(self, value: np.ndarray) -> None:
        self.diff[...] = value

    def store(self, attr: str, value: torch.Tensor) -> None:
        """Copy ``value`` (any device) into the data or diff tensor, reshaping the blob if needed."""
        if tuple(value.shape) != self._shape:
            self.reshape(*value.shape)
        target = self.data_tensor() if attr == "data" else self.diff_tensor()
        with torch.no_grad():
            target.copy_(value.detach())

    def __repr__(self) -> str:
        return f"Blob(shape={self._shape})"


class BlobVec(list):
    """pycaffe's BlobVec: a Python layer's ``self.blobs``, a list of blobs with ``add_blob``."""

    def add_blob(self, *shape: int) -> None:
        """Append a zero blob of ``shape`` (pycaffe's ``self.blobs.add_blob(...)`` in setup)."""
        self.append(Blob(shape))


def _dims(shape: Sequence[int]) -> tuple[int, ...]:
    dims = tuple(int(d) for d in shape)
    if any(d < 0 for d in dims):
        raise ValueError(f"blob shape {dims} has a negative dimension")
    return dims


class _Views:
    """The numpy views of one parameter handed out so far: how many, and which are alive."""

    __slots__ = ("generation", "alive")

    def __init__(self) -> None:
        self.generation = 0
        self.alive: list[weakref.ref] = []

    def add(self, array: np.ndarray) -> None:
        self.generation += 1
        self.alive = [r for r in self.alive if r() is not None]
        self.alive.append(weakref.ref(array))

    def __reduce__(self):  # views belong to this process: a pickled parameter starts afresh
        return (_Views, ())


def _watched(tensor: torch.Tensor, array: np.ndarray) -> np.ndarray:
    views = tensor.__dict__.get("_caffelike_views")
    if views is None:
        views = tensor.__dict__["_caffelike_views"] = _Views()
    views.add(array)
    return array


def param_view_state(tensor: torch.Tensor) -> tuple[int, bool]:
    """``(generation, alive)`` of the numpy views :class:`ParamBlob` handed out of ``tensor``:
    the count so far, and whether one (or an array derived from one) still exists. A cache
    computed from the tensor (packed or folded weights) is stale once the count moves, and
    cannot be trusted while a view lives, since writes through it reach no torch counter."""
    views = tensor.__dict__.get("_caffelike_views")
    if views is None:
        return 0, False
    return views.generation, any(r() is not None for r in views.alive)


def params_state(tensors: Iterable[torch.Tensor]) -> list[tuple] | None:
    """What a cache computed from ``tensors`` (packed, folded or compiled weights) depends on:
    each one's identity, torch version counter, data pointer and :func:`param_view_state`
    count; None while a numpy view of one lives (then no cache can be trusted)."""
    state = []
    for t in tensors:
        generation, alive = param_view_state(t)
        if alive:
            return None
        state.append((id(t), t._version, t.data_ptr(), generation))
    return state


class ParamBlob(Shaped):
    """A parameter blob: ``.data`` views the layer's Parameter, ``.diff`` its ``.grad``.

    The Parameter is looked up on every access, so weight sharing (which replaces the
    Parameter object) and ``net.to(device)`` are always reflected. Views write through only
    while the net is on the CPU.
    """

    def __init__(self, get: Callable[[], torch.nn.Parameter]):
        self._get = get

    @property
    def tensor(self) -> torch.nn.Parameter:
        return self._get()

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._get().shape)

    @property
    def data(self) -> np.ndarray:
        p = self._get()
        array = p.detach().cpu().numpy()
        return _watched(p, array) if p.device.type == "cpu" else array

    @data.setter
    def data(self, value: np.ndarray) -> None:
        p = self._get()
        with torch.no_grad():
            p.copy_(torch.as_tensor(np.asarray(value, dtype=np.float32)).reshape(p.shape))

    @property
    def diff(self) -> np.ndarray:
        p = self._get()
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        return p.grad.detach().cpu().numpy()

    @diff.setter
    def diff(self, value: np.ndarray) -> None:
        p = self._get()
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        with torch.no_grad():
            p.grad.copy_(torch.as_tensor(np.asarray(value, dtype=np.float32)).reshape(p.shape))

    def reshape(self, *shape: int) -> None:
        """Reshape the parameter in place (count must stay the same)."""
        p = self._get()
        with torch.no_grad():
            p.data = p.data.reshape(tuple(int(d) for d in shape))

    def __repr__(self) -> str:
        return f"ParamBlob(shape={self.shape})"


class LayerView:
    """pycaffe's view of a layer: ``type``, ``name`` and ``blobs`` (as :class:`ParamBlob`)."""

    def __init__(self, module: Layer):
        self.module = module
        self.blobs = [ParamBlob(self._getter(i)) for i in range(len(module.blobs))]

    def _getter(self, i: int) -> Callable[[], nn.Parameter]:
        return lambda: self.module.blobs[i]

    @property
    def type(self) -> str:
        return self.module.param.type

    @property
    def name(self) -> str:
        return self.module.param.name

    def __repr__(self) -> str:
        return f"<{self.type} layer '{self.name}'>"
