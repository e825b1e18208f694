"""Reading, decoding and encoding images the way Caffe's ``util/io.cpp`` does (OpenCV, BGR).

Images are numpy arrays ``(H, W, C)`` (C = 3 for colour, 1 for grey), uint8, BGR channel
order, as ``cv::imread`` gives them. ``None`` means "could not read": callers turn that into a
:class:`~caffelike.errors.DataError` naming the list file and line, or the DB and key.
"""
from __future__ import annotations

import os

import cv2
import numpy as np

from ..proto import caffe_pb2

# Caffe's convert_imageset/ReadImageToDatum keeps a file's own bytes when its extension
# already names the requested encoding (with jpeg == jpg).
_EXT_ALIASES = {"jpeg": "jpg"}


def _hwc(img: np.ndarray) -> np.ndarray:
    return img[:, :, None] if img.ndim == 2 else img


def read_image(path: str, new_height: int = 0, new_width: int = 0,
               is_color: bool = True) -> np.ndarray | None:
    """Caffe's ReadImageToCVMat: imread (colour or grey), then resize if both sizes are > 0.

    The resize is ``cv::resize`` with its default bilinear interpolation.
    """
    flag = cv2.IMREAD_COLOR if is_color else cv2.IMREAD_GRAYSCALE
    img = cv2.imread(path, flag) if os.path.isfile(path) else None
    if img is None:
        return None
    if new_height > 0 and new_width > 0:
        img = cv2.resize(img, (new_width, new_height), interpolation=cv2.INTER_LINEAR)
    return _hwc(img)


def decode_bytes(data: bytes, color: bool | None) -> np.ndarray | None:
    """Decode encoded image bytes: ``color=None`` keeps the file's own channels (Caffe's
    DecodeDatumToCVMatNative), ``True``/``False`` force colour/grey (DecodeDatumToCVMat)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size == 0:
        return None
    if color is None:
        flag = cv2.IMREAD_UNCHANGED
    else:
        flag = cv2.IMREAD_COLOR if color else cv2.IMREAD_GRAYSCALE
    img = cv2.imdecode(buf, flag)
    return None if img is None else _hwc(img)


def datum_to_image(datum: caffe_pb2.Datum, force_color: bool = False,
                   force_gray: bool = False) -> np.ndarray | None:
    """The pixels of a Datum as an ``(H, W, C)`` array.

    Encoded datums are decoded (native channels unless forced, as Caffe's DataTransformer);
    raw datums hold CHW uint8 bytes in ``data`` or floats in ``float_data``.
    """
    if datum.encoded:
        color = True if force_color else (False if force_gray else None)
        return decode_bytes(datum.data, color)
    c, h, w = datum.channels, datum.height, datum.width
    if datum.data:
        if len(datum.data) != c * h * w:
            return None
        chw = np.frombuffer(datum.data, dtype=np.uint8).reshape(c, h, w)
    elif len(datum.float_data):
        if len(datum.float_data) != c * h * w:
            return None
        chw = np.asarray(datum.float_data, dtype=np.float32).reshape(c, h, w)
    else:
        return None
    return np.ascontiguousarray(chw.transpose(1, 2, 0))


def image_to_datum(img: np.ndarray, label: int) -> caffe_pb2.Datum:
    """Caffe's CVMatToDatum: a raw (unencoded) Datum with CHW uint8 bytes."""
    img = _hwc(img)
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = img.shape[2], img.shape[0], img.shape[1]
    datum.data = np.ascontiguousarray(img.transpose(2, 0, 1)).tobytes()
    datum.label = int(label)
    datum.encoded = False
    return datum


def extension_matches(path: str, encoding: str) -> bool:
    """Whether the file extension of ``path`` names ``encoding`` (case-insensitive, jpeg = jpg)."""
    ext = path.rsplit(".", 1)[-1].lower()
    enc = encoding.lower()
    return ext == enc or _EXT_ALIASES.get(ext) == enc


def encode_image(img: np.ndarray, encoding: str) -> bytes | None:
    """``cv::imencode('.' + encoding, img)`` with OpenCV's default quality settings."""
    ok, buf = cv2.imencode("." + encoding, img)
    return buf.tobytes() if ok else None
