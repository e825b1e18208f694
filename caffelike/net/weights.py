"""Moving trained blobs between a net's graph and Caffe's files (CopyTrainedLayersFrom, ToProto, ToHDF5)."""
from __future__ import annotations

import os
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np
import torch

from ..errors import WeightsError, Where
from ..io.caffemodel import is_hdf5_file, read_caffemodel, read_hdf5_weights
from ..glog import get_logger
from ..proto import caffe_pb2
from .graph import NetGraph

log = get_logger("net")

T = TypeVar("T")


def _matched_layers(net: NetGraph, items: Iterable[T], name_of: Callable[[T], str]) -> Iterator[tuple[T, int]]:
    """``(item, net layer index)`` for each source item whose layer name the net has.

    Caffe takes the first net layer of a name, and logs each source layer it has no use for.
    """
    index: dict[str, int] = {}
    for lay in net.plan.layers:
        index.setdefault(lay.name, lay.index)
    for item in items:
        target = index.get(name_of(item))
        if target is None:
            log.info("Ignoring source layer %s", name_of(item))
            continue
        yield item, target


def _diff_array(param: torch.Tensor) -> np.ndarray:
    """The gradient of ``param`` as float32 numpy (zeros before any backward)."""
    grad = param.grad
    if grad is None:
        return np.zeros(tuple(param.shape), np.float32)
    return grad.detach().cpu().numpy()


def _copy_into(param: torch.nn.Parameter, array: np.ndarray) -> None:
    with torch.no_grad():
        param.copy_(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).reshape(param.shape))


def read_weights_source(path: str | os.PathLike) -> caffe_pb2.NetParameter | None:
    """The upgraded NetParameter of a .caffemodel, or None for an HDF5 weights file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise WeightsError("weights file does not exist", Where(file=path))
    if is_hdf5_file(path):
        return None
    return read_caffemodel(path)


def copy_trained_layers(net: NetGraph, source: str | os.PathLike | caffe_pb2.NetParameter,
                        source_name: str | None = None) -> None:
    """Copy every source layer's blobs into the net layer of the same name; others are ignored."""
    if not isinstance(source, caffe_pb2.NetParameter):
        path = os.fspath(source)
        parsed = read_weights_source(path)
        if parsed is None:
            load_hdf5(net, path)
            return
        source_name, source = path, parsed
    source_name = source_name or "the source NetParameter"
    from ..io.blobs import blob_fits, blob_shape, blob_to_array

    for src, target in _matched_layers(net, source.layer, lambda layer: layer.name):
        module = net.module(target)
        where = net.plan.layers[target].where
        if len(module.blobs) != len(src.blobs):
            raise WeightsError(f"{source_name} has {len(src.blobs)} blobs for this layer, the net expects "
                               f"{len(module.blobs)}; rename the layer to learn it from scratch", where)
        for j, (param, blob) in enumerate(zip(module.blobs, src.blobs)):
            want = tuple(param.shape)
            if not blob_fits(blob, want):
                raise WeightsError(f"cannot copy param {j}: shape {blob_shape(blob)} in {source_name} does not "
                                   f"match the net's {want}; rename the layer to learn it from scratch", where)
            _copy_into(param, blob_to_array(blob))


def net_to_proto(net: NetGraph, write_diff: bool = False) -> caffe_pb2.NetParameter:
    """Caffe's Net::ToProto: each layer's parameter (as set up) with its blobs in Caffe order."""
    from ..io import array_to_blob

    out = caffe_pb2.NetParameter(name=net.plan.name)
    for lay, module in net.pairs():
        lp = out.layer.add()
        lp.CopyFrom(net.layer_param(lay.index))
        del lp.blobs[:]
        for param in module.blobs:
            data = param.detach().cpu().numpy().astype(np.float32, copy=False)
            diff = _diff_array(param) if write_diff else None
            lp.blobs.add().CopyFrom(array_to_blob(data, diff))
    return out


def save_hdf5(net: NetGraph, path: str, write_diff: bool = False) -> None:
    """Caffe's ToHDF5: ``data/<layer>/<i>`` for blobs the layer owns; ``diff/<layer>/<i>`` for all."""
    import h5py

    from ..io import atomic_write

    with atomic_write(path, "wb") as f, h5py.File(f, "w") as h5:
        data = h5.create_group("data")
        diff = h5.create_group("diff") if write_diff else None
        for lay, module in net.pairs():
            g = data.create_group(lay.name)
            gd = diff.create_group(lay.name) if diff is not None else None
            for i, param in enumerate(module.blobs):
                if net.param_owner(lay.index, i) is None:
                    g.create_dataset(str(i), data=param.detach().cpu().numpy())
                if gd is not None:
                    gd.create_dataset(str(i), data=_diff_array(param))


def load_hdf5(net: NetGraph, path: str) -> None:
    """Caffe's CopyTrainedLayersFromHDF5 (a blob shared with an earlier layer may be absent from the file)."""
    stored = read_hdf5_weights(path)
    for name, target in _matched_layers(net, stored, str):
        arrays = stored[name]
        module = net.module(target)
        where = net.plan.layers[target].where
        if len(arrays) > len(module.blobs):
            raise WeightsError(f"{path} has {len(arrays)} blobs for this layer, the net expects "
                               f"{len(module.blobs)}; rename the layer to learn it from scratch", where)
        for j, param in enumerate(module.blobs):
            array = arrays.get(j)
            if array is None:
                if net.param_owner(target, j) is not None:
                    continue
                raise WeightsError(f"{path} lacks blob {j} of this layer; rename the layer to learn "
                                   f"it from scratch", where)
            if array.size != param.numel():
                raise WeightsError(f"cannot copy param {j}: shape {array.shape} in {path} does not match "
                                   f"the net's {tuple(param.shape)}; rename the layer to learn it from "
                                   f"scratch", where)
            _copy_into(param, array)


def share_trained_layers(net: NetGraph, other: NetGraph) -> None:
    """Caffe's ShareTrainedLayersWith: same-named layers of ``net`` use ``other``'s parameter tensors."""
    for (lay, module), target in _matched_layers(net, other.pairs(), lambda pair: pair[0].name):
        mine = net.module(target)
        where = net.plan.layers[target].where
        if len(mine.blobs) != len(module.blobs):
            raise WeightsError(f"cannot share weights of layer '{lay.name}': {len(module.blobs)} blobs in the "
                               f"source net, {len(mine.blobs)} here", where)
        for j, param in enumerate(module.blobs):
            if tuple(mine.blobs[j].shape) != tuple(param.shape):
                raise WeightsError(f"cannot share param {j} of layer '{lay.name}': shape {tuple(param.shape)} "
                                   f"in the source net, {tuple(mine.blobs[j].shape)} here", where)
            net.share_param(target, j, param)
