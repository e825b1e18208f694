"""BlobProto <-> numpy arrays, and Caffe's mean files (.binaryproto).

A BlobProto gives its shape either as ``shape { dim: ... }`` or, in files from before 2015,
as the four legacy fields ``num``/``channels``/``height``/``width``; its values are in
``data`` (float) or ``double_data``. The reading rules follow Caffe's ``Blob::FromProto``
(src/caffe/blob.cpp): any legacy field present means a 4-D shape, and double values win
over float ones when both are given.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import WeightsError, Where
from ..proto import caffe_pb2
from .binfile import parse_binary, read_file_bytes, write_binary_proto

_LEGACY_FIELDS = ("num", "channels", "height", "width")


def has_legacy_shape(blob: caffe_pb2.BlobProto) -> bool:
    """Whether ``blob`` states its shape in the legacy num/channels/height/width fields."""
    return any(blob.HasField(name) for name in _LEGACY_FIELDS)


def blob_shape(blob: caffe_pb2.BlobProto) -> tuple[int, ...]:
    """The shape Caffe gives ``blob``: legacy 4-D if any legacy dim is set, else ``shape.dim``."""
    if has_legacy_shape(blob):
        return (blob.num, blob.channels, blob.height, blob.width)
    return tuple(int(d) for d in blob.shape.dim)


def _values(blob: caffe_pb2.BlobProto, double_field: str, float_field: str,
            shape: tuple[int, ...], what: str) -> np.ndarray | None:
    doubles = getattr(blob, double_field)
    values = doubles if len(doubles) else getattr(blob, float_field)
    if not len(values):
        return None
    array = np.asarray(values, dtype=np.float64 if len(doubles) else np.float32)
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if array.size != count:
        raise WeightsError(f"blob of shape {shape} holds {array.size} {what} values; "
                           f"expected {count}")
    return array.reshape(shape)


def blob_to_array(blob: caffe_pb2.BlobProto, diff: bool = False,
                  dtype: np.dtype | type | None = np.float32) -> np.ndarray:
    """The values (or, with ``diff=True``, the diffs) of ``blob`` as an array of its shape.

    ``dtype=None`` keeps the stored precision (float32 for ``data``, float64 for
    ``double_data``); the default casts to float32 as Caffe's float blobs do. A blob with no
    stored values gives zeros (an empty ``diff`` is the usual case).
    """
    shape = blob_shape(blob)
    if diff:
        array = _values(blob, "double_diff", "diff", shape, "diff")
    else:
        array = _values(blob, "double_data", "data", shape, "data")
    if array is None:
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if not diff and count:
            raise WeightsError(f"blob of shape {shape} holds no data values; expected {count}")
        array = np.zeros(shape, dtype=np.float32)
    return array if dtype is None else array.astype(dtype, copy=False)


def array_to_blob(array: np.ndarray, diff: np.ndarray | None = None,
                  legacy_4d: bool = False) -> caffe_pb2.BlobProto:
    """A BlobProto holding ``array`` as float32 ``data`` (and ``diff`` if given).

    The shape goes into ``shape.dim`` as current Caffe writes it (``Blob::ToProto``); with
    ``legacy_4d=True`` into ``num/channels/height/width`` instead (at most 4 axes, padded on
    the left with 1s), as Caffe's compute_image_mean and pycaffe's ``array_to_blobproto`` do.
    """
    array = np.asarray(array)
    blob = caffe_pb2.BlobProto()
    if legacy_4d:
        if array.ndim > 4:
            raise WeightsError(f"a legacy 4-D blob cannot hold an array of shape {array.shape}")
        dims = (1,) * (4 - array.ndim) + tuple(array.shape)
        blob.num, blob.channels, blob.height, blob.width = (int(d) for d in dims)
    else:
        blob.shape.dim.extend(int(d) for d in array.shape)
    blob.data.extend(array.astype(np.float32, copy=False).ravel().tolist())
    if diff is not None:
        diff = np.asarray(diff)
        if diff.shape != array.shape:
            raise WeightsError(f"diff shape {diff.shape} does not match data shape {array.shape}")
        blob.diff.extend(diff.astype(np.float32, copy=False).ravel().tolist())
    return blob


def read_blob_file(path: str | os.PathLike) -> caffe_pb2.BlobProto:
    """Parse a binary BlobProto file (a .binaryproto), with a clear error if it is not one."""
    path = os.fspath(path)
    raw = read_file_bytes(path, "mean file")
    what = "BlobProto (.binaryproto)"
    blob = parse_binary(caffe_pb2.BlobProto(), raw, path, what)
    if not raw or not (len(blob.data) or len(blob.double_data)):
        raise WeightsError(f"not a binary {what}: it holds no values", Where(file=path))
    return blob


def read_mean_file(path: str | os.PathLike) -> np.ndarray:
    """The mean image of a .binaryproto mean file, as a float32 array (C, H, W).

    Caffe's DataTransformer loads the file into a blob (``Blob::FromProto``) and reads it
    through the legacy 4-D accessors: channels, height and width are axes 1 to 3, and the
    mean is the first ``channels * height * width`` values. So the blob must have 4 axes
    (num, channels, height, width); with num > 1 the first image is the mean. pycaffe's
    ``blobproto_to_array(blob)[0]`` gives the same image.
    """
    path = os.fspath(path)
    blob = read_blob_file(path)
    shape = blob_shape(blob)
    if len(shape) != 4 or min(shape) < 0:
        raise WeightsError(f"mean blob has shape {shape}; expected (num, C, H, W) with num >= 1: "
                           "Caffe reads a mean file through the legacy 4-D accessors "
                           "(write a (C, H, W) mean with a leading axis of 1)", Where(file=path))
    try:
        array = blob_to_array(blob)
    except WeightsError as exc:
        raise WeightsError(exc.message, Where(file=path)) from None
    return array[0]


def write_mean_file(array: np.ndarray, path: str | os.PathLike) -> None:
    """Write a (C, H, W) mean as Caffe's compute_image_mean does (num=1, legacy 4-D dims)."""
    array = np.asarray(array)
    if array.ndim != 3:
        raise WeightsError(f"a mean image must be (C, H, W); got {array.shape}",
                           Where(file=os.fspath(path)))
    write_binary_proto(array_to_blob(array[np.newaxis], legacy_4d=True), path)


def legacy_shape_fits(file_shape: tuple[int, ...], net_shape: tuple[int, ...]) -> bool:
    """Whether a legacy 4-D blob (num, channels, height, width) fits a net blob of ``net_shape``.

    Caffe's Blob::ShapeEquals for legacy blobs: the net shape, padded on the left with 1s to
    4 axes, must equal the stored dims (a bias stored as 1x1x1xN fits an (N,) blob).
    """
    if len(file_shape) != 4 or len(net_shape) > 4:
        return False
    return tuple(file_shape) == (1,) * (4 - len(net_shape)) + tuple(net_shape)


def blob_fits(blob: caffe_pb2.BlobProto, net_shape: tuple[int, ...]) -> bool:
    """Caffe's Blob::ShapeEquals: whether the stored ``blob`` may be copied into ``net_shape``."""
    if has_legacy_shape(blob):
        return legacy_shape_fits(blob_shape(blob), tuple(net_shape))
    return blob_shape(blob) == tuple(net_shape)
