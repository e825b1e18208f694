"""Binary NetParameter files (.caffemodel): read, upgrade, turn into arrays, write.

``load_weights`` needs no torch: it gives ``{layer name: [blob arrays]}`` in Caffe's blob
order, the form Caffe's CopyTrainedLayersFrom matches by layer name. Legacy models (V0/V1
``layers`` with weights, legacy 4-D blob dims) are upgraded as Caffe's
ReadNetParamsFromBinaryFileOrDie does. HDF5 weights (``.caffemodel.h5``, Caffe's
``data/<layer>/<i>`` layout) load too.
"""
from __future__ import annotations

import os

import numpy as np

from google.protobuf.message import Message

from ..errors import CaffelikeError, WeightsError, Where
from ..log import get_logger
from ..proto import caffe_pb2
from .atomic import atomic_write
from .blobs import blob_to_array

try:
    from google.protobuf.unknown_fields import UnknownFieldSet
except ImportError:  # protobuf runtimes before 4.22
    UnknownFieldSet = None  # type: ignore[assignment,misc]

log = get_logger("io")


def _read_bytes(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise WeightsError(f"cannot read {what} ({exc.strerror})", Where(file=path)) from None


def _looks_like_text(raw: bytes) -> bool:
    head = raw[:512].lstrip()
    return bool(head) and all(32 <= b < 127 or b in (9, 10, 13) for b in head[:256]) and \
        head[:1].isalpha()


def read_binary_net(path: str | os.PathLike) -> caffe_pb2.NetParameter:
    """Parse a binary NetParameter as stored (no upgrade); ``WeightsError`` if it is not one."""
    path = os.fspath(path)
    raw = _read_bytes(path, "weights file")
    if not raw:
        raise WeightsError("empty weights file; expected a binary NetParameter (.caffemodel)",
                           Where(file=path))
    net = caffe_pb2.NetParameter()
    try:
        net.ParseFromString(raw)
    except Exception:  # protobuf's DecodeError (its class differs between runtimes)
        hint = ("it looks like a text prototxt; pass it as the net definition, not as weights"
                if _looks_like_text(raw) else "truncated or corrupt protobuf data")
        raise WeightsError(f"not a binary NetParameter (.caffemodel): {hint}",
                           Where(file=path)) from None
    _warn_unknown_fields(net, path)
    if not (len(net.layer) or len(net.layers)):
        hint = ("it looks like a text prototxt; pass it as the net definition, not as weights"
                if _looks_like_text(raw) else "it holds no layers (a .solverstate or "
                ".binaryproto given as weights?)")
        raise WeightsError(f"not a binary NetParameter (.caffemodel): {hint}", Where(file=path))
    return net


def _unknown_fields(message: Message, found: dict[str, set[int]]) -> None:
    for number in {f.field_number for f in UnknownFieldSet(message)}:
        found.setdefault(message.DESCRIPTOR.full_name, set()).add(number)
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None or descriptor.message_type.name == "BlobProto":
            continue
        for item in (value if descriptor.is_repeated else (value,)):
            _unknown_fields(item, found)


def _warn_unknown_fields(net: caffe_pb2.NetParameter, path: str) -> None:
    """Log once which fields (from a Caffe fork) the file holds that BVLC's schema lacks."""
    if UnknownFieldSet is None:
        return
    found: dict[str, set[int]] = {}
    _unknown_fields(net, found)
    if found:
        listed = "; ".join(f"{name}: {', '.join(str(n) for n in sorted(numbers))}"
                           for name, numbers in sorted(found.items()))
        log.warning("%s: ignored fields unknown to BVLC Caffe's caffe.proto (written by a Caffe "
                    "fork), by field number: %s", path, listed)


def read_caffemodel(path: str | os.PathLike) -> caffe_pb2.NetParameter:
    """Read a .caffemodel and upgrade it (V0/V1 layers, legacy inputs) as Caffe does."""
    from .upgrade import upgrade_net

    path = os.fspath(path)
    net = read_binary_net(path)
    try:
        upgrade_net(net, path)
    except CaffelikeError as exc:
        raise WeightsError(exc.message, exc.where) from None
    return net


def net_weights(net: caffe_pb2.NetParameter, path: str = "<net>") -> dict[str, list[np.ndarray]]:
    """``{layer name: [float32 arrays]}`` for the layers of an upgraded net that hold blobs.

    A layer name given twice keeps the later layer's blobs, as Caffe's copy does.
    """
    weights: dict[str, list[np.ndarray]] = {}
    for layer in net.layer:
        if not len(layer.blobs):
            continue
        try:
            weights[layer.name] = [blob_to_array(blob) for blob in layer.blobs]
        except WeightsError as exc:
            raise WeightsError(exc.message, Where(file=path, layer=layer.name,
                                                  type=layer.type or None)) from None
    return weights


def load_weights(path: str | os.PathLike) -> dict[str, list[np.ndarray]]:
    """The parameter blobs of a .caffemodel (or .caffemodel.h5) by layer name, as float32."""
    path = os.fspath(path)
    if _is_hdf5(path):
        return _load_hdf5_weights(path)
    return net_weights(read_caffemodel(path), path)


_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _is_hdf5(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(8) == _HDF5_MAGIC
    except OSError:
        return False


def _load_hdf5_weights(path: str) -> dict[str, list[np.ndarray]]:
    """Caffe's HDF5 weights: group ``data``, one subgroup per layer, datasets "0", "1", ..."""
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise WeightsError(f"cannot read HDF5 weights ({exc})", Where(file=path)) from None
    with handle:
        if "data" not in handle:
            raise WeightsError("HDF5 weights file has no 'data' group", Where(file=path))
        weights: dict[str, list[np.ndarray]] = {}
        for layer_name, group in handle["data"].items():
            count = len(group.keys())
            weights[layer_name] = [np.asarray(group[str(i)], dtype=np.float32) for i in range(count)]
    return weights


def write_caffemodel(net_param: caffe_pb2.NetParameter, path: str | os.PathLike) -> None:
    """Serialize ``net_param`` to ``path`` (atomically), as Caffe's WriteProtoToBinaryFile."""
    data = net_param.SerializeToString()
    with atomic_write(path, "wb") as handle:
        handle.write(data)
