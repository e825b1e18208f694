"""Caffe's DataTransformer plus the book's augmentations, split into "sample" and "apply".

Order (Caffe's ``data_transformer.cpp`` for crop/mirror/mean/scale, the book's listing for
the resize and rotation, the book fork's (Caffe_Long) ``data_transformer.cpp`` for the rest):
short-side or deformed square resize (both phases, when ``min_side_min > 0``) -> rotation
(TRAIN, ``max_rotation_angle > 0``) -> colour shift -> contrast/brightness -> smoothing (the
three TRAIN only, each applied with ``apply_probability``; :mod:`.photometric`) -> crop
(random in TRAIN, centre in TEST) -> mirror -> subtract mean (file, at the crop offset; or
per-channel values) -> multiply scale.

:meth:`DataTransformer.sample` draws every random choice for one image from an explicit
``numpy.random.Generator`` into a :class:`Draw`; :meth:`DataTransformer.apply` is then a pure
function of the image and the draw, so tests pin a transform and workers get seeded
generators. Images are ``(H, W, C)`` uint8 BGR arrays (OpenCV order); the result is a float32
``(C, H, W)`` array computed with Caffe's float arithmetic ``(pixel - mean) * scale``.

Caffe semantics kept on purpose: ``mirror: true`` flips at random in TEST too (Caffe draws
``Rand(2)`` in both phases; only the crop offset depends on the phase), unless a fork field
is set (below).

The book's extensions follow the book's listing where the author's fork differs:
rotation comes after the resize (the fork rotates first); ``deformed_resize_th`` defaults to
0.5 (the fork's caffe.proto says 2, i.e. never); resizes are bilinear (the fork passes
INTER_NEAREST into cv::resize's scale slot, so it runs bilinear too). Not in the book, so our
choice: a square image takes its height as the short side (60x60 at s = 52 -> 52x53, as the
book's example), the rotated canvas is the bounding box rounded to the nearest pixel, and
TEST uses ``s = min_side_min`` when there is no crop.

The fork's other fields (Caffe_Long, ``caffe.proto`` fields 8-26), as its transformer does:

* ``max_color_shift`` > 0: with probability ``apply_probability`` add or subtract (one coin)
  ``b, g, r`` drawn each in ``[0, max_color_shift]``, uint8-saturated;
* ``contrast_brightness_adjustment``: with probability ``apply_probability``, every pixel
  becomes ``saturate(alpha * v + beta)``, ``alpha`` uniform in ``[min_contrast, max_contrast)``,
  ``beta`` an integer in ``[-max_brightness_shift, max_brightness_shift]``;
* ``smooth_filtering`` with ``max_smooth > 1``: with probability ``apply_probability`` one of
  four filters drawn uniformly (Gaussian, box mean, median, box mean of twice the size) with
  an odd kernel ``1 + 2 * Rand(int(max_smooth / 2))``;
* ``min_scaling_factor``/``max_scaling_factor``, ``min_side``, ``crop_h``/``crop_w`` are parsed
  and have no effect: the fork never reads them (goldens ``ImageData__min_side40_is_ignored``,
  ``ImageData__crop_h_w_ignored_center_crop48``); ``debug_params`` logs the TRAIN draws.

A ``transform_param`` that sets any fork field (number > 7) runs as the fork's transformer in
two more ways: ``mirror`` flips in TRAIN only, and without a crop a later image of a batch
larger than the batch's first one is cut to its top-left part (``apply(..., fit=...)``; a
smaller one is an error, where the fork aborts). Without a fork field every choice is BVLC's.
The photometric steps apply to uint8 images. The fork runs its augmentations (and its
TRAIN-only mirror) on decoded images only, not on raw Datums; caffelike treats every image
alike, as it does for the book's resize and rotation.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import DataError, LayerError, WeightsError, Where
from ..io.blobs import read_mean_file
from ..glog import get_logger
from ..proto import caffe_pb2
from . import photometric

TRAIN = caffe_pb2.TRAIN
log = get_logger("data")

#: TransformationParameter fields that BVLC Caffe lacks (the book fork's, numbers 8-26; SSD's
#: policies, 1560 on, are read by AnnotatedData and keep BVLC's mirror).
FORK_FIELDS = tuple(f.name for f in caffe_pb2.TransformationParameter.DESCRIPTOR.fields
                    if 8 <= f.number <= 26)


class TransformFailure(Exception):
    """An image that this transform cannot process (too small for the crop, wrong channels).

    Internal: callers re-raise it as a DataError naming the list line or DB key.
    """


@dataclass(frozen=True)
class Draw:
    """Every random choice for one image; with it, :meth:`DataTransformer.apply` is deterministic.

    ``side`` is the book's short side ``s`` (0: no resize); ``deformed`` means an ``s x s``
    resize; ``angle`` is the rotation in degrees (counter-clockwise, OpenCV's convention);
    ``h_off``/``w_off`` are the crop offsets in the resized, rotated image. The fork's
    photometric steps: ``color_shift`` (b, g, r; None: not applied), added or, with
    ``color_subtract``, subtracted; ``contrast`` (alpha; None: not applied) with
    ``brightness`` (beta); ``smooth`` (kind 0..3 of :data:`.photometric.SMOOTH_KINDS`; None:
    not applied) with ``smooth_size``.
    """

    side: int = 0
    deformed: bool = False
    angle: int = 0
    mirror: bool = False
    h_off: int = 0
    w_off: int = 0
    color_shift: tuple[int, int, int] | None = None
    color_subtract: bool = False
    contrast: float | None = None
    brightness: int = 0
    smooth: int | None = None
    smooth_size: int = 0


def short_side_size(height: int, width: int, side: int) -> tuple[int, int]:
    """The book's keep-aspect resize: the short side becomes ``side``; the long side is
    ``ceil(long / k)`` with ``k = short / side`` in double precision (60x60 at 52 -> 52x53).

    For a square image the height is taken as the short side.
    """
    if height <= width:
        k = height / side
        return side, int(math.ceil(width / k))
    k = width / side
    return int(math.ceil(height / k)), side


def rotated_size(height: int, width: int, angle: int) -> tuple[int, int]:
    """Height and width of the bounding box of a ``height x width`` image rotated by ``angle``
    degrees, rounded to the nearest integer."""
    rad = math.radians(angle)
    c, s = abs(math.cos(rad)), abs(math.sin(rad))
    return int(round(height * c + width * s)), int(round(height * s + width * c))


def rotate_bound(img: np.ndarray, angle: int) -> np.ndarray:
    """Rotate about the image centre onto a canvas enlarged to the rotated bounding box;
    uncovered corners are 0; bilinear interpolation."""
    if angle % 360 == 0:
        return img
    h, w = img.shape[:2]
    nh, nw = rotated_size(h, w, angle)
    m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), float(angle), 1.0)
    m[0, 2] += (nw - w) / 2.0
    m[1, 2] += (nh - h) / 2.0
    out = cv2.warpAffine(img, m, (nw, nh), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out[:, :, None] if out.ndim == 2 else out


class DataTransformer:
    """One layer's ``transform_param`` in one phase (picklable: it travels to workers)."""

    def __init__(self, param: caffe_pb2.TransformationParameter, phase: int,
                 where: Where | None = None):
        self.phase = phase
        self.where = where
        self.crop = int(param.crop_size)
        self.mirror = bool(param.mirror)
        self.scale = np.float32(param.scale)
        self.force_color = bool(param.force_color)
        self.force_gray = bool(param.force_gray)
        self.max_angle = int(param.max_rotation_angle)
        self.side_min = int(param.min_side_min)
        self.side_max = int(param.min_side_max)
        self.deformed = bool(param.use_deformed_resize)
        self.deformed_th = float(param.deformed_resize_th)
        self.mean_values = np.asarray(param.mean_value, dtype=np.float32)
        self.mean_file: np.ndarray | None = None  # (H, W, C) float32
        # the fork's fields (see the module docstring)
        self.fork = any(param.HasField(name) for name in FORK_FIELDS)
        train = phase == TRAIN
        self.max_color = int(param.max_color_shift) if train else 0
        self.contrast = bool(param.contrast_brightness_adjustment) and train
        self.contrast_range = (float(param.min_contrast), float(param.max_contrast))
        self.max_brightness = int(param.max_brightness_shift)
        self.smooth = bool(param.smooth_filtering) and param.max_smooth > 1 and train
        self.smooth_sizes = int(np.float32(param.max_smooth) / np.float32(2))
        self.apply_threshold = float(np.float32(1) - np.float32(param.apply_probability))
        self.debug = bool(param.debug_params) and train
        self._validate(param)
        if param.HasField("mean_file"):
            self.mean_file = self._load_mean(param.mean_file)

    # -- construction ---------------------------------------------------------------------
    def _error(self, message: str) -> LayerError:
        return LayerError(message, self.where)

    def _validate(self, param: caffe_pb2.TransformationParameter) -> None:
        if param.HasField("mean_file") and len(param.mean_value):
            raise self._error("cannot specify mean_file and mean_value at the same time")
        if self.force_color and self.force_gray:
            raise self._error("cannot set both force_color and force_gray")
        if self.side_min > 0:
            if self.side_min < self.crop:
                raise self._error(f"min_side_min ({self.side_min}) must be >= crop_size "
                                  f"({self.crop})")
            if self.side_max < self.side_min:
                raise self._error(f"min_side_max ({self.side_max}) must be >= min_side_min "
                                  f"({self.side_min})")
        if self.contrast and self.contrast_range[0] > self.contrast_range[1]:
            raise self._error(f"min_contrast ({self.contrast_range[0]:g}) must be <= "
                              f"max_contrast ({self.contrast_range[1]:g})")
        if self.smooth and self.smooth_sizes < 1:
            raise self._error(f"smooth_filtering needs max_smooth >= 2 (got "
                              f"{param.max_smooth:g}; the fork aborts on Rand(0))")

    def _load_mean(self, path: str) -> np.ndarray:
        if not os.path.isfile(path):
            raise DataError(f"cannot open mean_file '{path}' (relative paths are relative to "
                            f"the current directory {os.getcwd()})", self.where)
        try:
            chw = read_mean_file(path)
        except WeightsError as exc:
            raise DataError(f"mean_file '{path}' is not a valid BlobProto: {exc.message}",
                            self.where) from None
        return np.ascontiguousarray(chw.transpose(1, 2, 0))

    # -- sampling -------------------------------------------------------------------------
    @property
    def resizes(self) -> bool:
        """Whether the book's short-side resize is active."""
        return self.side_min > 0

    def test_side(self) -> int:
        """The TEST-phase short side: ``crop_size`` (``min_side_min`` when there is no crop)."""
        return self.crop if self.crop > 0 else self.side_min

    def geometry_size(self, height: int, width: int, draw: Draw) -> tuple[int, int]:
        """Image size after the resize and rotation of ``draw`` (before the crop)."""
        if draw.side:
            height, width = (draw.side, draw.side) if draw.deformed else \
                short_side_size(height, width, draw.side)
        if draw.angle:
            height, width = rotated_size(height, width, draw.angle)
        return height, width

    def sample(self, rng: np.random.Generator, height: int, width: int) -> Draw:
        """Draw the random choices for a ``height x width`` image.

        Draw order: side (TRAIN), deformed-resize u, angle (TRAIN), mirror (TRAIN only under
        the fork's fields), then in TRAIN for each enabled photometric step its coin u and,
        when ``u > 1 - apply_probability``, its parameters (colour shift: b, g, r, sign;
        contrast: alpha, beta; smoothing: kind, size), then the crop offsets (TRAIN).
        """
        side, deformed, angle = 0, False, 0
        if self.resizes:
            side = int(rng.integers(self.side_min, self.side_max + 1)) if self.phase == TRAIN \
                else self.test_side()
            if self.deformed:
                deformed = bool(rng.random() >= self.deformed_th)
        if self.max_angle > 0 and self.phase == TRAIN:
            angle = int(rng.integers(-self.max_angle, self.max_angle + 1))
        mirrors = self.mirror and (self.phase == TRAIN or not self.fork)
        mirror = bool(rng.integers(2)) if mirrors else False
        photo = self._sample_photometric(rng)
        h_off = w_off = 0
        if self.crop:
            gh, gw = self.geometry_size(height, width, Draw(side, deformed, angle))
            if gh < self.crop or gw < self.crop:
                raise TransformFailure(f"image of {gh}x{gw} is smaller than crop_size {self.crop}")
            if self.phase == TRAIN:
                h_off = int(rng.integers(gh - self.crop + 1))
                w_off = int(rng.integers(gw - self.crop + 1))
            else:
                h_off, w_off = (gh - self.crop) // 2, (gw - self.crop) // 2
        draw = Draw(side, deformed, angle, mirror, h_off, w_off, **photo)
        if self.debug:
            log.info("transform draws (debug_params): %s", draw)
        return draw

    def _coin(self, rng: np.random.Generator) -> bool:
        """The fork's ``caffe_rng_uniform(0, 1) > 1 - apply_probability`` (in float32)."""
        return bool(np.float32(rng.random()) > np.float32(self.apply_threshold))

    def _sample_photometric(self, rng: np.random.Generator) -> dict:
        """The photometric fields of a Draw (empty when no step is enabled)."""
        photo: dict = {}
        if self.max_color > 0 and self._coin(rng):
            b, g, r = (int(v) for v in rng.integers(self.max_color + 1, size=3))
            photo["color_shift"] = (b, g, r)
            photo["color_subtract"] = bool(rng.integers(2))
        if self.contrast and self._coin(rng):
            low, high = self.contrast_range
            photo["contrast"] = float(np.float32(low + (high - low) * rng.random()))
            photo["brightness"] = int(rng.integers(-self.max_brightness, self.max_brightness + 1))
        if self.smooth and self._coin(rng):
            photo["smooth"] = int(rng.integers(4))
            photo["smooth_size"] = 1 + 2 * int(rng.integers(self.smooth_sizes))
        return photo

    # -- applying -------------------------------------------------------------------------
    def geometry(self, img: np.ndarray, draw: Draw) -> np.ndarray:
        """Apply the draw's resize and rotation (bilinear) to an ``(H, W, C)`` image."""
        if draw.side:
            h, w = img.shape[:2]
            nh, nw = (draw.side, draw.side) if draw.deformed else short_side_size(h, w, draw.side)
            if (nh, nw) != (h, w):
                out = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
                img = out[:, :, None] if out.ndim == 2 else out
        if draw.angle:
            img = rotate_bound(img, draw.angle)
        return img

    @staticmethod
    def photometric(img: np.ndarray, draw: Draw, segmentation: bool = False) -> np.ndarray:
        """Apply the draw's colour shift, contrast/brightness and smoothing, in the fork's
        order, to a uint8 ``(H, W, C)`` image (other dtypes pass unchanged).

        ``segmentation``: the order of the fork's TransformImageSeg/TransformImageProb,
        contrast/brightness before the colour shift and no smoothing.
        """
        if img.dtype != np.uint8:
            return img
        if draw.contrast is not None and segmentation:
            img = photometric.contrast_brightness(img, draw.contrast, draw.brightness)
        if draw.color_shift is not None:
            img = photometric.color_shift(img, draw.color_shift, draw.color_subtract)
        if draw.contrast is not None and not segmentation:
            img = photometric.contrast_brightness(img, draw.contrast, draw.brightness)
        if draw.smooth is not None and not segmentation:
            img = photometric.smooth(img, draw.smooth, draw.smooth_size)
        return img

    def apply(self, img: np.ndarray, draw: Draw,
              fit: tuple[int, int] | None = None) -> np.ndarray:
        """Transform one ``(H, W, C)`` image with fixed choices into a float32 ``(C, h, w)`` array.

        ``fit`` (the fork's batches, no crop): the ``(h, w)`` of the batch's first image; a
        larger image is cut to its top-left ``h x w`` part before the mirror, as the fork's
        copy loop does.
        """
        img = self.photometric(self.geometry(img, draw), draw)
        height, width, channels = img.shape
        if self.crop:
            if height < self.crop or width < self.crop:
                raise TransformFailure(f"image of {height}x{width} is smaller than crop_size {self.crop}")
            h0, w0, ch, cw = draw.h_off, draw.w_off, self.crop, self.crop
            if not (0 <= h0 <= height - ch and 0 <= w0 <= width - cw):
                raise TransformFailure(f"crop offset ({h0}, {w0}) outside a {height}x{width} image")
        elif fit is not None:
            h0, w0, (ch, cw) = 0, 0, fit
            if height < ch or width < cw:
                raise TransformFailure(f"image of {height}x{width} is smaller than the batch's "
                                       f"first image ({ch}x{cw}); give every image the same size "
                                       "(new_height/new_width or crop_size)")
        else:
            h0, w0, ch, cw = 0, 0, height, width
        patch = img[h0:h0 + ch, w0:w0 + cw].astype(np.float32)
        if self.mean_file is not None:
            if self.mean_file.shape != img.shape:
                raise TransformFailure(
                    f"mean_file of {self._chw(self.mean_file.shape)} does not match the image "
                    f"{self._chw(img.shape)} (before the crop)")
            patch -= self.mean_file[h0:h0 + ch, w0:w0 + cw]
        elif self.mean_values.size:
            if self.mean_values.size not in (1, channels):
                raise TransformFailure(f"give either 1 mean_value or as many as channels "
                                       f"({channels}), got {self.mean_values.size}")
            patch -= self.mean_values
        patch *= self.scale
        if draw.mirror:
            patch = patch[:, ::-1]
        return np.ascontiguousarray(patch.transpose(2, 0, 1))

    def __call__(self, img: np.ndarray, rng: np.random.Generator,
                 fit: tuple[int, int] | None = None) -> np.ndarray:
        """Sample, then apply."""
        return self.apply(img, self.sample(rng, img.shape[0], img.shape[1]), fit)

    @property
    def fits_to_first(self) -> bool:
        """Whether a batch cuts larger later images to its first image's size (the fork's
        transformer without a crop) instead of refusing them (BVLC's)."""
        return self.fork and not self.crop

    def output_shape(self, height: int, width: int, channels: int) -> tuple[int, int, int]:
        """Caffe's InferBlobShape: ``(C, crop, crop)`` with a crop, else the image size
        (after the TEST-phase resize when the book's resize is on)."""
        if self.crop:
            if not self.resizes and (height < self.crop or width < self.crop):
                raise TransformFailure(f"image of {height}x{width} is smaller than crop_size {self.crop}")
            return channels, self.crop, self.crop
        if self.resizes:
            draw = Draw(side=self.test_side(), deformed=self.deformed and self.deformed_th <= 0)
            height, width = self.geometry_size(height, width, draw)
        return channels, height, width

    @staticmethod
    def _chw(shape: tuple[int, ...]) -> str:
        h, w, c = shape
        return f"{c}x{h}x{w}"
