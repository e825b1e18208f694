"""Binary NetParameter files (.caffemodel): read, upgrade, turn into arrays, write.

``load_weights`` needs no torch: it gives ``{layer name: [blob arrays]}`` in Caffe's blob
order, the form Caffe's CopyTrainedLayersFrom matches by layer name. Legacy models (V0/V1
``layers`` with weights, legacy 4-D blob dims) are upgraded as Caffe's
ReadNetParamsFromBinaryFileOrDie does. HDF5 weights (``.caffemodel.h5``, Caffe's
``data/<layer>/<i>`` layout) load too. Models a Caffe fork wrote: see ``read_binary_net``.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

import numpy as np

from google.protobuf.message import Message

from ..errors import CaffelikeError, WeightsError, Where
from ..glog import get_logger
from ..proto import caffe_pb2
from .binfile import CORRUPT, read_file_bytes, write_binary_proto
from .blobs import blob_to_array

try:
    from google.protobuf.unknown_fields import UnknownFieldSet
except ImportError:  # protobuf runtimes before 4.22
    UnknownFieldSet = None  # type: ignore[assignment,misc]

log = get_logger("io")


def _looks_like_text(raw: bytes) -> bool:
    head = raw[:512].lstrip()
    return bool(head) and all(32 <= b < 127 or b in (9, 10, 13) for b in head[:256]) and \
        head[:1].isalpha()


def _hint(raw: bytes, otherwise: str) -> str:
    """Why ``raw`` is not a .caffemodel: a text prototxt given as weights, else ``otherwise``."""
    if _looks_like_text(raw):
        return "it looks like a text prototxt; pass it as the net definition, not as weights"
    return otherwise


def read_binary_net(path: str | os.PathLike, tolerant: bool = True) -> caffe_pb2.NetParameter:
    """Parse a binary NetParameter as stored (no upgrade); ``WeightsError`` if it is not one.

    A .caffemodel written by a Caffe fork stores the fork's layer params under the fork's
    field numbers. Reading it never changes a layer's name, type or blobs (``layer`` fields
    1, 2, 7; V1 ``layers`` fields 4, 5, 6), which is all weight loading uses:

    - a number our schema lacks is kept as an unknown field and reported once (by number);
    - a number our schema gives to another field of another wire type is kept as unknown too;
    - a number our schema gives to another message of the same wire type is decoded as ours
      (SegNet's ``upsample_param`` 137 reads as ``embed_param``, the forks' pooling
      ``ceil_mode`` 13 as ``round_mode``): such params are wrong, never used for weights;
    - a section that does not decode as our message at all (PSPNet's ``mat_write_param`` 145
      as our ``parameter_param``) would fail the whole parse: with ``tolerant`` the file is
      read again layer by layer, every field that does not decode on its own is left out and
      logged (layer, number, our field of that number); without it (for the upgrade commands,
      which must not lose what they rewrite) that is a ``WeightsError`` naming the field.

    A V1 ``layers`` type from a fork's enum that ours lacks reads as no type ("" once
    upgraded); its blobs still load by name, as Caffe matches them.
    """
    path = os.fspath(path)
    raw = read_file_bytes(path, "weights file")
    if not raw:
        raise WeightsError("empty weights file; expected a binary NetParameter (.caffemodel)",
                           Where(file=path))
    what = "NetParameter (.caffemodel)"
    try:
        net = caffe_pb2.NetParameter.FromString(raw)
    except Exception:  # protobuf's DecodeError (its class differs between runtimes)
        net = _salvaged(raw, path, what, tolerant)
    _warn_unknown_fields(net, path)
    if not (len(net.layer) or len(net.layers)):
        hint = _hint(raw, "it holds no layers (a .solverstate or .binaryproto given as weights?)")
        raise WeightsError(f"not a binary {what}: {hint}", Where(file=path))
    return net


def _salvaged(raw: bytes, path: str, what: str, tolerant: bool) -> caffe_pb2.NetParameter:
    """``raw`` (which protobuf refused) without its undecodable fork params, or the error."""
    from .salvage import salvage_net
    from .wire import WireError

    try:
        net, dropped = salvage_net(raw, path)
    except WireError:
        raise WeightsError(f"not a binary {what}: {_hint(raw, CORRUPT)}", Where(file=path)) from None
    listed = "; ".join(str(d) for d in dropped)
    if not tolerant:
        raise WeightsError(f"cannot decode a param section with this schema (written by a Caffe "
                           f"fork under a number our schema gives to another field): {listed}; "
                           "rewriting the file would lose it", Where(file=path))
    log.warning("%s: left out param sections that do not decode with this schema (a Caffe fork "
                "wrote them under numbers our schema gives to other fields): %s; layer names, "
                "types and blobs are read", path, listed)
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


def upgrade_binary_net(net: caffe_pb2.NetParameter, path: str) -> None:
    """Upgrade a binary net in place as Caffe does; a failure is a ``WeightsError``."""
    from .upgrade import upgrade_net

    try:
        upgrade_net(net, path)
    except CaffelikeError as exc:
        raise WeightsError(exc.message, exc.where) from None


def read_caffemodel(path: str | os.PathLike) -> caffe_pb2.NetParameter:
    """Read a .caffemodel and upgrade it (V0/V1 layers, legacy inputs) as Caffe does."""
    path = os.fspath(path)
    net = read_binary_net(path)
    upgrade_binary_net(net, path)
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
    if is_hdf5_file(path):
        return _load_hdf5_weights(path)
    return net_weights(read_caffemodel(path), path)


_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def is_hdf5_file(path: str) -> bool:
    """Whether ``path`` starts with the HDF5 signature (False if it cannot be read)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(8) == _HDF5_MAGIC
    except OSError:
        return False


@contextlib.contextmanager
def open_hdf5_weights(path: str) -> Iterator[Any]:
    """Caffe's HDF5 weights open for reading, its ``data`` group checked.

    h5py's errors on an unreadable or corrupt file (OSError, KeyError), also while the
    caller reads datasets inside the ``with`` block, become one-line ``WeightsError``s.
    """
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            if "data" not in handle:
                raise WeightsError("HDF5 weights file has no 'data' group", Where(file=path))
            yield handle
    except (OSError, KeyError) as exc:
        raise WeightsError(f"cannot read HDF5 weights ({exc})", Where(file=path)) from None


def read_hdf5_weights(path: str) -> dict[str, dict[int, np.ndarray]]:
    """Caffe's HDF5 weights (group ``data``, one subgroup per layer, datasets "0", "1", ...) as
    layer name -> {blob index: float32 array}, in file order. Caffe's ToHDF5 leaves out the
    blobs a layer shares with an earlier one, so an index may be missing."""
    weights: dict[str, dict[int, np.ndarray]] = {}
    with open_hdf5_weights(path) as handle:
        for layer_name, group in handle["data"].items():
            arrays: dict[int, np.ndarray] = {}
            for key in group:
                if not key.isdigit():
                    raise WeightsError(f"dataset '{key}' is not a blob index", Where(file=path, layer=layer_name))
                arrays[int(key)] = np.asarray(group[key], dtype=np.float32)
            weights[layer_name] = dict(sorted(arrays.items()))
    return weights


def _load_hdf5_weights(path: str) -> dict[str, list[np.ndarray]]:
    """Every layer's blobs as a list; a file missing a (shared) blob cannot be read this way."""
    weights: dict[str, list[np.ndarray]] = {}
    for layer_name, arrays in read_hdf5_weights(path).items():
        missing = [i for i in range(len(arrays)) if i not in arrays]
        if missing:
            raise WeightsError(f"blob {missing[0]} is not stored (a shared blob?); load this "
                               "file into a net with copy_from instead",
                               Where(file=path, layer=layer_name))
        weights[layer_name] = [arrays[i] for i in range(len(arrays))]
    return weights


def write_caffemodel(net_param: caffe_pb2.NetParameter, path: str | os.PathLike) -> None:
    """Serialize ``net_param`` to ``path`` (atomically), as Caffe's WriteProtoToBinaryFile."""
    write_binary_proto(net_param, path)
