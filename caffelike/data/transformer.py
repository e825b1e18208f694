"""Caffe's DataTransformer plus the book's augmentations, split into "sample" and "apply".

Order (Caffe's ``data_transformer.cpp`` for crop/mirror/mean/scale, the book's listing for
the rest): short-side or deformed square resize (both phases, when ``min_side_min > 0``) ->
rotation (TRAIN, ``max_rotation_angle > 0``) -> crop (random in TRAIN, centre in TEST) ->
mirror -> subtract mean (file, at the crop offset; or per-channel values) -> multiply scale.

:meth:`DataTransformer.sample` draws every random choice for one image from an explicit
``numpy.random.Generator`` into a :class:`Draw`; :meth:`DataTransformer.apply` is then a pure
function of the image and the draw, so tests pin a transform and workers get seeded
generators. Images are ``(H, W, C)`` uint8 BGR arrays (OpenCV order); the result is a float32
``(C, H, W)`` array computed with Caffe's float arithmetic ``(pixel - mean) * scale``.

Caffe semantics kept on purpose: ``mirror: true`` flips at random in TEST too (Caffe draws
``Rand(2)`` in both phases; only the crop offset depends on the phase).

The book's extensions follow the book's listing where the author's fork differs:
rotation comes after the resize (the fork rotates first); ``deformed_resize_th`` defaults to
0.5 (the fork's caffe.proto says 2, i.e. never); resizes are bilinear (the fork passes
INTER_NEAREST into cv::resize's scale slot, so it runs bilinear too). Not in the book, so our
choice: a square image takes its height as the short side (60x60 at s = 52 -> 52x53, as the
book's example), the rotated canvas is the bounding box rounded to the nearest pixel, and
TEST uses ``s = min_side_min`` when there is no crop.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import DataError, LayerError, WeightsError, Where
from ..io.blobs import read_mean_file
from ..proto import caffe_pb2

TRAIN = caffe_pb2.TRAIN


class TransformFailure(Exception):
    """An image that this transform cannot process (too small for the crop, wrong channels).

    Internal: callers re-raise it as a DataError naming the list line or DB key.
    """


@dataclass(frozen=True)
class Draw:
    """Every random choice for one image; with it, :meth:`DataTransformer.apply` is deterministic.

    ``side`` is the book's short side ``s`` (0: no resize); ``deformed`` means an ``s x s``
    resize; ``angle`` is the rotation in degrees (counter-clockwise, OpenCV's convention);
    ``h_off``/``w_off`` are the crop offsets in the resized, rotated image.
    """

    side: int = 0
    deformed: bool = False
    angle: int = 0
    mirror: bool = False
    h_off: int = 0
    w_off: int = 0


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

        Draw order: side (TRAIN), deformed-resize u, angle (TRAIN), mirror, crop offsets (TRAIN).
        """
        side, deformed, angle = 0, False, 0
        if self.resizes:
            side = int(rng.integers(self.side_min, self.side_max + 1)) if self.phase == TRAIN \
                else self.test_side()
            if self.deformed:
                deformed = bool(rng.random() >= self.deformed_th)
        if self.max_angle > 0 and self.phase == TRAIN:
            angle = int(rng.integers(-self.max_angle, self.max_angle + 1))
        mirror = bool(rng.integers(2)) if self.mirror else False
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
        return Draw(side, deformed, angle, mirror, h_off, w_off)

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

    def apply(self, img: np.ndarray, draw: Draw) -> np.ndarray:
        """Transform one ``(H, W, C)`` image with fixed choices into a float32 ``(C, h, w)`` array."""
        img = self.geometry(img, draw)
        height, width, channels = img.shape
        if self.crop:
            if height < self.crop or width < self.crop:
                raise TransformFailure(f"image of {height}x{width} is smaller than crop_size {self.crop}")
            h0, w0, ch, cw = draw.h_off, draw.w_off, self.crop, self.crop
            if not (0 <= h0 <= height - ch and 0 <= w0 <= width - cw):
                raise TransformFailure(f"crop offset ({h0}, {w0}) outside a {height}x{width} image")
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

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Sample, then apply."""
        return self.apply(img, self.sample(rng, img.shape[0], img.shape[1]))

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
