"""The book fork's (Caffe_Long) joint transform of an image and its label map.

``TransformImageSeg``/``TransformImageProb`` in the fork's ``data_transformer.cpp`` move a
label map through the same geometry as its image, in this order:

1. resize (every phase, both maps with nearest-neighbour): a square ``s x s`` one when
   ``use_deformed_resize`` and a U(0,1) draw is ``>= deformed_resize_th``, else, when
   ``min_side_min`` and ``min_side_max`` are both set, the short side becomes ``s`` and the
   other side ``int(side * float(s / short))`` (truncated; a square image keeps its height
   as the long side); ``s`` is drawn from ``[min_side_min, min_side_max]`` even in TEST;
1b. TRAIN only, the image alone: contrast/brightness (``contrast_brightness_adjustment``,
   with probability ``apply_probability``: ``pixel * alpha + beta`` rounded and saturated),
   then a colour shift (``max_color_shift > 0``, same probability: one ``(b, g, r)`` added to
   or subtracted from every pixel, saturated); this order is the segmentation transform's own;
2. pad at the bottom/right up to ``crop_size``: the image with ``mean_value`` (rounded to
   uint8, as ``cv::Scalar`` into an 8-bit image), the label map with :data:`IGNORE_LABEL`;
3. crop (random in TRAIN, centre in TEST), the same window on both maps;
4. mirror (``mirror: true`` flips at random in every phase), both maps alike.

The image's crop, mean, scale and mirror then run through
:meth:`DataTransformer.apply`; the label map gets no mean and no scale (the Prob layer
multiplies by :data:`PROB_SCALE`). The ``new_height``/``new_width`` resize happens earlier,
at reading, and is bilinear for the label map too (labels blend: golden
``ImageSegData__test_newhw_bilinear_labels``).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..proto import caffe_pb2
from .transformer import Draw

TRAIN = caffe_pb2.TRAIN

IGNORE_LABEL = 255
"""The fork's label value for pixels padded in by a crop larger than the label map."""

FORK_DEFORMED_TH = 2.0
"""The fork's caffe.proto default of ``deformed_resize_th``: a U(0,1) draw never reaches it."""

PROB_SCALE = 0.0039
"""ImageProbData's label factor (not 1/255: 255 becomes 0.9945), applied in double precision."""


@dataclass(frozen=True)
class SegDraw:
    """Every random choice for one image/label pair.

    ``size`` is the (height, width) after the resize (None: no resize); ``contrast`` the
    ``(alpha, beta)`` of the brightness step (None: off); ``shift`` the colour shift added to
    the image's channels (negative: subtracted; None: off); ``pad`` the rows and columns added
    at the bottom/right; ``h_off``/``w_off`` the crop window (in the padded map).
    """

    size: tuple[int, int] | None = None
    pad: tuple[int, int] = (0, 0)
    mirror: bool = False
    h_off: int = 0
    w_off: int = 0
    contrast: tuple[float, int] | None = None
    shift: tuple[int, int, int] | None = None

    def image_draw(self) -> Draw:
        """The draw :meth:`DataTransformer.apply` runs on the resized, padded image."""
        return Draw(mirror=self.mirror, h_off=self.h_off, w_off=self.w_off)


@dataclass(frozen=True)
class SegGeometry:
    """The fields of ``transform_param`` that the fork's segmentation transform reads, besides
    the mean and scale (which :class:`DataTransformer` applies to the image)."""

    phase: int
    crop: int = 0
    mirror: bool = False
    side_min: int = 0
    side_max: int = 0
    deformed: bool = False
    deformed_th: float = FORK_DEFORMED_TH
    brightness: bool = False
    contrast_range: tuple[float, float] = (0.8, 1.2)
    max_brightness: int = 5
    max_shift: int = 0
    apply_probability: float = 0.5

    @classmethod
    def from_param(cls, param: caffe_pb2.TransformationParameter, phase: int) -> "SegGeometry":
        """Read the fields of ``param`` (validation is the layer's job: see ``has_rng``).

        An unset ``deformed_resize_th`` is the fork's default 2 (never deformed), not the
        book's 0.5 that caffelike's schema gives the classification transform."""
        threshold = float(param.deformed_resize_th) if param.HasField("deformed_resize_th") \
            else FORK_DEFORMED_TH
        return cls(phase, int(param.crop_size), bool(param.mirror), int(param.min_side_min),
                   int(param.min_side_max), bool(param.use_deformed_resize),
                   threshold, bool(param.contrast_brightness_adjustment),
                   (float(param.min_contrast), float(param.max_contrast)),
                   int(param.max_brightness_shift), int(param.max_color_shift),
                   float(param.apply_probability))

    @property
    def photometric(self) -> bool:
        """Whether a TRAIN image may get the contrast/brightness step or the colour shift."""
        return self.phase == TRAIN and self.apply_probability > 0 and \
            (self.brightness or self.max_shift > 0)

    @property
    def resizes(self) -> bool:
        """Whether the short-side resize is on (both bounds set, as the fork tests it)."""
        return self.side_min > 0 and self.side_max > 0

    @property
    def has_rng(self) -> bool:
        """Whether the fork creates the transformer's generator (``InitRand``): only with
        ``mirror``, or a crop in TRAIN; any other random draw aborts (``Check failed: rng_``)."""
        return self.mirror or (self.phase == TRAIN and self.crop > 0)

    def sample(self, rng: np.random.Generator, height: int, width: int) -> SegDraw:
        """Draw resize, contrast/brightness, colour shift, crop offsets and mirror for a
        ``height x width`` pair."""
        size = None
        if self.deformed and rng.random() >= self.deformed_th:
            side = int(rng.integers(self.side_min, self.side_max + 1))
            size = (side, side)
        elif self.resizes:
            side = int(rng.integers(self.side_min, self.side_max + 1))
            size = resized_size(height, width, side)
        if size is not None:
            height, width = size
        contrast = shift = None
        threshold = 1.0 - self.apply_probability
        if self.phase == TRAIN and self.brightness and rng.random() > threshold:
            alpha = float(np.float32(rng.uniform(*self.contrast_range)))
            contrast = (alpha, int(rng.integers(-self.max_brightness, self.max_brightness + 1)))
        if self.phase == TRAIN and self.max_shift > 0 and rng.random() > threshold:
            bgr = rng.integers(self.max_shift + 1, size=3)
            sign = -1 if rng.integers(2) else 1
            shift = tuple(int(sign * v) for v in bgr)
        pad = (max(self.crop - height, 0), max(self.crop - width, 0))
        height, width = height + pad[0], width + pad[1]
        h_off = w_off = 0
        if self.crop:
            if self.phase == TRAIN:
                h_off = int(rng.integers(height - self.crop + 1))
                w_off = int(rng.integers(width - self.crop + 1))
            else:
                h_off, w_off = (height - self.crop) // 2, (width - self.crop) // 2
        mirror = bool(rng.integers(2)) if self.mirror else False
        return SegDraw(size, pad, mirror, h_off, w_off, contrast, shift)

    def output_size(self, height: int, width: int, draw: SegDraw) -> tuple[int, int]:
        """Height and width of the maps this draw gives from a ``height x width`` pair."""
        if self.crop:
            return self.crop, self.crop
        return draw.size if draw.size is not None else (height, width)


def resized_size(height: int, width: int, side: int) -> tuple[int, int]:
    """The fork's short-side size: the short side becomes ``side``, the other is truncated
    ``int(other * float32(side / short))``; a square image scales its height (``h < w`` is false)."""
    if height < width:
        return side, int(np.float32(width) * (np.float32(side) / np.float32(height)))
    return int(np.float32(height) * (np.float32(side) / np.float32(width))), side


def _hwc(img: np.ndarray) -> np.ndarray:
    return img[:, :, None] if img.ndim == 2 else img


def pad_value(mean_values: np.ndarray, channels: int) -> tuple[int, ...]:
    """The image's pad colour: each channel's mean_value as ``saturate_cast<uchar>`` rounds it."""
    values = np.broadcast_to(np.asarray(mean_values, dtype=np.float64), (channels,))
    return tuple(int(v) for v in np.clip(np.rint(values), 0, 255))


def adjust_colours(img: np.ndarray, draw: SegDraw) -> np.ndarray:
    """The image-only TRAIN steps of ``draw``: ``saturate(round(pixel * alpha + beta))`` (float
    arithmetic, as ``cv::Mat::convertTo``), then the saturated colour shift (a grey image
    takes the blue value, as ``cv::Scalar`` into one channel)."""
    if draw.contrast is not None:
        alpha, beta = draw.contrast
        value = img.astype(np.float32) * np.float32(alpha) + np.float32(beta)
        img = np.clip(np.rint(value), 0, 255).astype(np.uint8)
    if draw.shift is not None:
        shift = np.asarray(draw.shift[:img.shape[2]], dtype=np.int16)
        img = np.clip(img.astype(np.int16) + shift, 0, 255).astype(np.uint8)
    return img


def geometry(img: np.ndarray, draw: SegDraw, fill: tuple[int, ...], *, image: bool = False) -> np.ndarray:
    """Resize (nearest), then (``image``: :func:`adjust_colours`), then pad an ``(H, W, C)``
    uint8 map as ``draw`` says; the crop and the mirror are left to
    :meth:`DataTransformer.apply` (image) and :func:`label_blob` (label)."""
    if draw.size is not None and draw.size != img.shape[:2]:
        img = _hwc(cv2.resize(img, (draw.size[1], draw.size[0]), interpolation=cv2.INTER_NEAREST))
    if image:
        img = adjust_colours(img, draw)
    ph, pw = draw.pad
    if ph or pw:
        value = [float(v) for v in fill] + [0.0] * (4 - len(fill))
        img = _hwc(cv2.copyMakeBorder(img, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=value))
    return img


def label_blob(label: np.ndarray, draw: SegDraw, crop: int, factor: float | None = None) -> np.ndarray:
    """The label top of one item: the resized, padded ``(H, W, 1)`` label map cropped and
    mirrored like its image, as float32 ``(1, h, w)``; pixel values unchanged, or times
    ``factor`` in double precision (ImageProbData's :data:`PROB_SCALE`)."""
    if crop:
        label = label[draw.h_off:draw.h_off + crop, draw.w_off:draw.w_off + crop]
    if draw.mirror:
        label = label[:, ::-1]
    chw = np.ascontiguousarray(label.transpose(2, 0, 1))
    if factor is None:
        return chw.astype(np.float32)
    return (chw.astype(np.float64) * factor).astype(np.float32)
