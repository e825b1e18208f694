"""Moving trained blobs between a Net and Caffe's files (Caffe's CopyTrainedLayersFrom, ToProto, ToHDF5)."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
import torch

from .errors import WeightsError
from .log import get_logger
from .proto import caffe_pb2

if TYPE_CHECKING:
    from .net import Net

log = get_logger("net")

_LEGACY_DIMS = ("num", "channels", "height", "width")


def _source_shape(blob: caffe_pb2.BlobProto) -> tuple[tuple[int, ...], bool]:
    """The shape a BlobProto declares, and whether it is the legacy 4-D num/channels/height/width."""
    if any(blob.HasField(d) for d in _LEGACY_DIMS):
        return tuple(int(getattr(blob, d)) for d in _LEGACY_DIMS), True
    return tuple(int(d) for d in blob.shape.dim), False


def _shape_equals(target: tuple[int, ...], source: tuple[int, ...], legacy: bool) -> bool:
    """Caffe's Blob::ShapeEquals: legacy 4-D dims match a blob of <= 4 axes padded with leading 1s."""
    if legacy:
        return len(target) <= 4 and (1,) * (4 - len(target)) + target == source
    return target == source


def _layer_index(net: "Net") -> dict[str, int]:
    index: dict[str, int] = {}
    for i, lay in enumerate(net.plan.layers):
        index.setdefault(lay.name, i)  # Caffe takes the first layer of that name
    return index


def _copy_into(param: torch.nn.Parameter, array: np.ndarray) -> None:
    with torch.no_grad():
        param.copy_(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).reshape(param.shape))


def read_weights_source(path: str | os.PathLike) -> caffe_pb2.NetParameter | None:
    """The upgraded NetParameter of a .caffemodel, or None for an HDF5 weights file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise WeightsError(f"weights file '{path}' does not exist")
    if _is_hdf5(path):
        return None
    from .io import read_caffemodel

    return read_caffemodel(path)


def copy_trained_layers(net: "Net", source: str | os.PathLike | caffe_pb2.NetParameter,
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
    from .io import blob_to_array

    index = _layer_index(net)
    for src in source.layer:
        target = index.get(src.name)
        if target is None:
            log.info("Ignoring source layer %s", src.name)
            continue
        module = net.layer_modules[target]
        where = net.plan.layers[target].where
        if len(module.blobs) != len(src.blobs):
            raise WeightsError(f"{source_name} has {len(src.blobs)} blobs for this layer, the net expects "
                               f"{len(module.blobs)}; rename the layer to learn it from scratch", where)
        for j, (param, blob) in enumerate(zip(module.blobs, src.blobs)):
            want = tuple(param.shape)
            shape, legacy = _source_shape(blob)
            if not _shape_equals(want, shape, legacy):
                raise WeightsError(f"cannot copy param {j}: shape {shape} in {source_name} does not match "
                                   f"the net's {want}; rename the layer to learn it from scratch", where)
            _copy_into(param, blob_to_array(blob))


def net_to_proto(net: "Net", write_diff: bool = False) -> caffe_pb2.NetParameter:
    """Caffe's Net::ToProto: each layer's parameter (as set up) with its blobs in Caffe order."""
    from .io import array_to_blob

    out = caffe_pb2.NetParameter(name=net.name)
    for lay, module in zip(net.plan.layers, net.layer_modules):
        lp = out.layer.add()
        lp.CopyFrom(lay.param)
        del lp.blobs[:]
        for param in module.blobs:
            data = param.detach().cpu().numpy().astype(np.float32, copy=False)
            diff = None
            if write_diff:
                grad = param.grad
                diff = grad.detach().cpu().numpy() if grad is not None else np.zeros_like(data)
            lp.blobs.add().CopyFrom(array_to_blob(data, diff) if diff is not None else array_to_blob(data))
    return out


def _is_hdf5(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == b"\x89HDF\r\n\x1a\n"


def save_hdf5(net: "Net", path: str, write_diff: bool = False) -> None:
    """Caffe's ToHDF5: ``data/<layer>/<i>`` for blobs the layer owns; ``diff/<layer>/<i>`` for all."""
    import h5py

    from .io import atomic_write

    with atomic_write(path, "wb") as f, h5py.File(f, "w") as h5:
        data = h5.create_group("data")
        diff = h5.create_group("diff") if write_diff else None
        for lay, module, owners in zip(net.plan.layers, net.layer_modules, net._param_owner):
            g = data.create_group(lay.name)
            gd = diff.create_group(lay.name) if diff is not None else None
            for i, param in enumerate(module.blobs):
                if owners[i] is None:
                    g.create_dataset(str(i), data=param.detach().cpu().numpy())
                if gd is not None:
                    grad = param.grad
                    gd.create_dataset(str(i), data=(grad.detach().cpu().numpy() if grad is not None
                                                   else np.zeros(tuple(param.shape), np.float32)))


def load_hdf5(net: "Net", path: str) -> None:
    """Caffe's CopyTrainedLayersFromHDF5 (a shared blob may be absent from the file)."""
    import h5py

    index = _layer_index(net)
    with h5py.File(path, "r") as h5:
        if "data" not in h5:
            raise WeightsError(f"{path}: no 'data' group; not a Caffe HDF5 weights file")
        for name in h5["data"]:
            target = index.get(name)
            if target is None:
                log.info("Ignoring source layer %s", name)
                continue
            group = h5["data"][name]
            module = net.layer_modules[target]
            where = net.plan.layers[target].where
            if len(group) > len(module.blobs):
                raise WeightsError(f"{path} has {len(group)} blobs for this layer, the net expects "
                                   f"{len(module.blobs)}; rename the layer to learn it from scratch", where)
            for j, param in enumerate(module.blobs):
                if str(j) not in group:
                    if net._param_owner[target][j] is not None:
                        continue
                    raise WeightsError(f"{path} lacks blob {j} of this layer; rename the layer to learn "
                                       f"it from scratch", where)
                array = np.asarray(group[str(j)], dtype=np.float32)
                if array.size != param.numel():
                    raise WeightsError(f"cannot copy param {j}: shape {array.shape} in {path} does not match "
                                       f"the net's {tuple(param.shape)}; rename the layer to learn it from "
                                       f"scratch", where)
                _copy_into(param, array)


def share_trained_layers(net: "Net", other: "Net") -> None:
    """Caffe's ShareTrainedLayersWith: same-named layers of ``net`` use ``other``'s parameter tensors."""
    from .net import _replace_parameter

    index = _layer_index(net)
    for lay, module in zip(other.plan.layers, other.layer_modules):
        target = index.get(lay.name)
        if target is None:
            log.info("Ignoring source layer %s", lay.name)
            continue
        mine = net.layer_modules[target]
        where = net.plan.layers[target].where
        if len(mine.blobs) != len(module.blobs):
            raise WeightsError(f"cannot share weights of layer '{lay.name}': {len(module.blobs)} blobs in the "
                               f"source net, {len(mine.blobs)} here", where)
        for j, param in enumerate(module.blobs):
            if tuple(mine.blobs[j].shape) != tuple(param.shape):
                raise WeightsError(f"cannot share param {j} of layer '{lay.name}': shape {tuple(param.shape)} "
                                   f"in the source net, {tuple(mine.blobs[j].shape)} here", where)
            _replace_parameter(mine, j, param)
