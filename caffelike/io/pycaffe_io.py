"""pycaffe's ``caffe.io``: input preprocessing (Transformer), image loading and proto conversions.

Same names, arguments and step order as pycaffe (python/caffe/io.py), with OpenCV in place of
scikit-image/scipy: ``load_image`` returns RGB float32 in [0, 1] (HxWx3, or HxWx1 for
``color=False``) as pycaffe does; ``resize_image`` interpolates with ``cv2.resize``
(order 0 nearest, 1 bilinear, 3 bicubic), which matches skimage's pixel-centre convention up to
edge pixels and anti-aliasing when shrinking.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

from ..errors import CaffelikeError, DataError
from ..proto import caffe_pb2

# skimage's rgb2gray weights (ITU-R BT.709), which pycaffe's load_image(color=False) uses
_GRAY_WEIGHTS = np.array([0.2125, 0.7154, 0.0721], dtype=np.float64)
_INTERPOLATION = {0: "INTER_NEAREST", 1: "INTER_LINEAR", 2: "INTER_CUBIC", 3: "INTER_CUBIC",
                  4: "INTER_LANCZOS4", 5: "INTER_LANCZOS4"}


# ---------------------------------------------------------------- proto / datum / ndarray

def blobproto_to_array(blob: caffe_pb2.BlobProto, return_diff: bool = False) -> np.ndarray:
    """A BlobProto's data (or diff) as an array shaped by ``shape`` or the legacy 4-D fields."""
    values = np.array(blob.diff if return_diff else blob.data)
    if any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        return values.reshape(blob.num, blob.channels, blob.height, blob.width)
    return values.reshape(tuple(blob.shape.dim))


def array_to_blobproto(arr: np.ndarray, diff: np.ndarray | None = None) -> caffe_pb2.BlobProto:
    """An N-d array (and optionally its diff, same shape) as a BlobProto with ``shape``."""
    arr = np.asarray(arr)
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(int(d) for d in arr.shape)
    blob.data.extend(arr.astype(float).ravel().tolist())
    if diff is not None:
        blob.diff.extend(np.asarray(diff).astype(float).ravel().tolist())
    return blob


def arraylist_to_blobprotovector_str(arraylist: Iterable[np.ndarray]) -> bytes:
    """Arrays -> serialized BlobProtoVector."""
    vec = caffe_pb2.BlobProtoVector()
    vec.blobs.extend(array_to_blobproto(a) for a in arraylist)
    return vec.SerializeToString()


def blobprotovector_str_to_arraylist(data: bytes) -> list[np.ndarray]:
    """Serialized BlobProtoVector -> arrays."""
    vec = caffe_pb2.BlobProtoVector()
    vec.ParseFromString(data)
    return [blobproto_to_array(b) for b in vec.blobs]


def array_to_datum(arr: np.ndarray, label: int | None = None) -> caffe_pb2.Datum:
    """A CxHxW array as a Datum: uint8 arrays as bytes in ``data``, others as ``float_data``."""
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise ValueError("Incorrect array shape.")
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = (int(d) for d in arr.shape)
    if arr.dtype == np.uint8:
        datum.data = arr.tobytes()
    else:
        datum.float_data.extend(arr.astype(float).ravel().tolist())
    if label is not None:
        datum.label = int(label)
    return datum


def datum_to_array(datum: caffe_pb2.Datum) -> np.ndarray:
    """A Datum's pixels as a CxHxW array (uint8 from ``data``, float64 from ``float_data``).

    The label is not returned (read ``datum.label``). Encoded (JPEG/PNG) datums are decoded.
    """
    shape = (datum.channels, datum.height, datum.width)
    if datum.encoded:
        import cv2

        img = cv2.imdecode(np.frombuffer(datum.data, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise DataError("datum_to_array: encoded datum does not decode as an image")
        return (img[:, :, None] if img.ndim == 2 else img).transpose(2, 0, 1).copy()
    if len(datum.data):
        return np.frombuffer(datum.data, dtype=np.uint8).reshape(shape).copy()
    return np.array(datum.float_data, dtype=float).reshape(shape)


# ---------------------------------------------------------------- preprocessing

class Transformer:
    """Turns images into net input blobs, pycaffe's way.

    ``inputs`` maps input blob names to their shapes (``{'data': net.blobs['data'].data.shape}``).
    ``preprocess`` applies, in this order: cast to float32, resize to the input's HxW, transpose,
    channel swap, raw scale, mean subtraction, input scale. ``deprocess`` undoes them.
    """

    def __init__(self, inputs: Mapping[str, Sequence[int]]):
        self.inputs = {name: tuple(int(d) for d in shape) for name, shape in inputs.items()}
        self.transpose: dict[str, tuple[int, ...]] = {}
        self.channel_swap: dict[str, tuple[int, ...]] = {}
        self.raw_scale: dict[str, float] = {}
        self.mean: dict[str, np.ndarray] = {}
        self.input_scale: dict[str, float] = {}

    def _check_input(self, in_: str) -> None:
        if in_ not in self.inputs:
            raise CaffelikeError(f"Transformer: '{in_}' is not one of the net inputs: {list(self.inputs)}")

    def preprocess(self, in_: str, data: np.ndarray) -> np.ndarray:
        """An HxWxK image -> a KxHxW float32 array for input ``in_``."""
        self._check_input(in_)
        out = np.array(data, dtype=np.float32)  # a copy: the scalings below work in place
        in_dims = self.inputs[in_][2:]
        if out.shape[:2] != in_dims:
            out = resize_image(out, in_dims)
        if in_ in self.transpose:
            out = out.transpose(self.transpose[in_])
        if in_ in self.channel_swap:
            out = out[list(self.channel_swap[in_]), :, :]
        if in_ in self.raw_scale:
            out *= self.raw_scale[in_]
        if in_ in self.mean:
            out -= self.mean[in_]
        if in_ in self.input_scale:
            out *= self.input_scale[in_]
        return out

    def deprocess(self, in_: str, data: np.ndarray) -> np.ndarray:
        """Undo :meth:`preprocess` (except the resize): KxHxW -> HxWxK."""
        self._check_input(in_)
        out = np.array(data, dtype=np.float32 if np.asarray(data).dtype != np.float64 else np.float64)
        while out.ndim > 3 and out.shape[0] == 1:
            out = out[0]  # drop the batch axis of a single image
        if in_ in self.input_scale:
            out = out / self.input_scale[in_]
        if in_ in self.mean:
            out = out + self.mean[in_]
        if in_ in self.raw_scale:
            out = out / self.raw_scale[in_]
        if in_ in self.channel_swap:
            out = out[np.argsort(self.channel_swap[in_]), :, :]
        if in_ in self.transpose:
            out = out.transpose(np.argsort(self.transpose[in_]))
        return out.squeeze()

    def set_transpose(self, in_: str, order: Sequence[int]) -> None:
        """Order of dimensions, e.g. ``(2, 0, 1)`` for HxWxC -> CxHxW."""
        self._check_input(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise CaffelikeError("Transformer.set_transpose: the order needs one entry per input "
                                 f"dimension after the batch ({len(self.inputs[in_]) - 1}), got {tuple(order)}")
        self.transpose[in_] = tuple(order)

    def set_channel_swap(self, in_: str, order: Sequence[int]) -> None:
        """Channel order after the transpose, e.g. ``(2, 1, 0)`` for RGB -> BGR."""
        self._check_input(in_)
        if len(order) != self.inputs[in_][1]:
            raise CaffelikeError("Transformer.set_channel_swap: the order needs one entry per input "
                                 f"channel ({self.inputs[in_][1]}), got {tuple(order)}")
        self.channel_swap[in_] = tuple(order)

    def set_raw_scale(self, in_: str, scale: float) -> None:
        """Multiply raw input (e.g. 255 for [0, 1] images and ImageNet models) before the mean."""
        self._check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_: str, mean: np.ndarray) -> None:
        """Mean to subtract: one value per channel (K,), or an image (K x H x W, resized to fit)."""
        self._check_input(in_)
        mean = np.asarray(mean)
        if mean.ndim == 1:
            if mean.shape[0] != self.inputs[in_][1]:
                raise CaffelikeError(f"Transformer.set_mean: {mean.shape[0]} mean values for "
                                     f"{self.inputs[in_][1]} input channels")
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            ms = mean.shape if mean.ndim != 2 else (1,) + mean.shape
            if len(ms) != 3:
                raise CaffelikeError(f"Transformer.set_mean: mean shape {mean.shape} is neither (K,) nor (K, H, W)")
            mean = mean.reshape(ms)
            if ms != self.inputs[in_][1:]:
                lo, hi = float(mean.min()), float(mean.max())
                span = (hi - lo) or 1.0
                unit = ((mean - lo) / span).transpose(1, 2, 0)
                mean = resize_image(unit, self.inputs[in_][2:]).transpose(2, 0, 1) * span + lo
        self.mean[in_] = mean

    def set_input_scale(self, in_: str, scale: float) -> None:
        """Multiply the input after the mean is subtracted."""
        self._check_input(in_)
        self.input_scale[in_] = scale


# ---------------------------------------------------------------- images

def load_image(filename: str, color: bool = True) -> np.ndarray:
    """An image file as float32 in [0, 1]: HxWx3 RGB (``color``) or HxWx1 intensity."""
    import cv2

    raw = cv2.imread(str(filename), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise DataError(f"{filename}: cannot read the image (missing file or unknown format)")
    scale = float(np.iinfo(raw.dtype).max) if np.issubdtype(raw.dtype, np.integer) else 1.0
    img = raw.astype(np.float64) / scale
    if img.ndim == 3:
        if img.shape[2] == 4:
            img = img[:, :, :3]
        img = img[:, :, ::-1] if img.shape[2] == 3 else img  # BGR -> RGB
        if not color and img.shape[2] == 3:
            img = img @ _GRAY_WEIGHTS
    if img.ndim == 2:
        img = img[:, :, np.newaxis]
        if color:
            img = np.tile(img, (1, 1, 3))
    return np.ascontiguousarray(img, dtype=np.float32)


def resize_image(im: np.ndarray, new_dims: Sequence[int], interp_order: int = 1) -> np.ndarray:
    """Resize an HxWxK array to ``new_dims`` (height, width) with interpolation of that order."""
    import cv2

    im = np.asarray(im)
    h, w = int(new_dims[0]), int(new_dims[1])
    lo, hi = float(im.min()), float(im.max())
    if hi == lo:  # a constant image (pycaffe's guard against dividing by zero)
        return np.full((h, w, im.shape[-1]), lo, dtype=np.float32)
    flag = getattr(cv2, _INTERPOLATION.get(interp_order, "INTER_LINEAR"))
    src = im.astype(np.float32)
    channels = src.shape[-1]
    # cv2 handles at most 512 channels at once; resize wider arrays in slices
    parts = [cv2.resize(src[:, :, i:i + 512], (w, h), interpolation=flag) for i in range(0, channels, 512)]
    parts = [p[:, :, None] if p.ndim == 2 else p for p in parts]
    return np.concatenate(parts, axis=2).astype(np.float32)


def oversample(images: Sequence[np.ndarray], crop_dims: Sequence[int]) -> np.ndarray:
    """The 4 corner and centre crops of each image, then their mirrors: (10 N, h, w, K)."""
    im_shape = np.array(images[0].shape)
    crop = np.array(crop_dims, dtype=int)
    centre = im_shape[:2] / 2.0
    corners = [(i, j) for i in (0, im_shape[0] - crop[0]) for j in (0, im_shape[1] - crop[1])]
    boxes = [(i, j, i + crop[0], j + crop[1]) for i, j in corners]
    top_left = centre - crop / 2.0
    boxes.append(tuple(int(v) for v in np.concatenate([top_left, top_left + crop])))
    out = np.empty((10 * len(images), crop[0], crop[1], im_shape[-1]), dtype=np.float32)
    ix = 0
    for im in images:
        for y0, x0, y1, x1 in boxes:
            out[ix] = im[y0:y1, x0:x1, :]
            out[ix + 5] = out[ix][:, ::-1, :]
            ix += 1
        ix += 5
    return out
