"""Item loaders of the book fork's (Caffe_Long) image-list data layers.

* :class:`LabelMapItems` (ImageSegData, ImageProbData): ``image labelmap`` lines; the label
  map is read as a grey image with the same ``new_height``/``new_width`` (bilinear) resize
  and moved through the image's geometry (:mod:`.label_maps`).
* :class:`RegressionItems` (ImageRegressionData): ``image f1 ... fK`` lines (read by
  :func:`~caffelike.io.image_list.read_image_list` with ``labels=K, label_type=float``); K float targets.

Both read the list with :func:`~caffelike.io.image_list.read_field_list` (whitespace-split,
as the fork's ``iss >> field``); every error names the list file and line.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import numpy as np

from ..errors import DataError, Where
from ..io.image_list import FieldLine, ListEntry
from ..io.where import source_where
from .images import read_image
from .items import ImageListItems
from .label_maps import IGNORE_LABEL, SegDraw, SegGeometry, geometry, label_blob, pad_value
from .paths import paths_are_strict, strict_path_error
from .transformer import DataTransformer, TransformFailure

# What C++'s ``iss >> float`` reads as a whole token (no inf/nan, no digit separators).


def _read_map(path: str, kind: str, new_height: int, new_width: int, is_color: bool,
              where: Where) -> np.ndarray:
    img = read_image(path, new_height, new_width, is_color)
    if img is None:
        hint = "" if os.path.isabs(path) else f" (relative to {os.getcwd()})"
        reason = "no such file" if not os.path.exists(path) else "not a readable image"
        raise DataError(f"cannot read {kind} '{path}'{hint}: {reason}", where)
    return img


class PairItems:
    """``image labelmap`` entries of a list file (2 whitespace-split fields a line), with their
    file:line locations; the base of every image + label-map loader (this fork's and others')."""

    def __init__(self, lines: list[FieldLine], source: str, root: str, where: Where):
        self.source, self.root, self.where = source, root, where
        for line in lines:
            if len(line.fields) != 2:
                raise DataError(f"expected 'image labelmap' (2 fields), got {len(line.fields)}: "
                                f"'{' '.join(line.fields)}'", source_where(where, source, line.line))
        self.entries = [(line.fields[0], line.fields[1], line.line) for line in lines]
        for index, (image, label, _) in enumerate(self.entries if paths_are_strict() else ()):
            refusal = strict_path_error(root, image) or strict_path_error(root, label)
            if refusal:
                raise DataError(refusal, self._where(index))

    def __len__(self) -> int:
        return len(self.entries)

    def _where(self, index: int) -> Where:
        return source_where(self.where, self.source, self.entries[index][2])

    def describe(self, index: int) -> str:
        return f"{self.source}:{self.entries[index][2]}: image '{self.root + self.entries[index][0]}'"

    def fetch(self, index: int) -> int:
        return index

    @contextlib.contextmanager
    def _failure_at(self, index: int) -> Iterator[None]:
        try:
            yield
        except TransformFailure as exc:
            raise DataError(f"image '{self.root + self.entries[index][0]}': {exc}",
                            self._where(index)) from None


class LabelMapItems(PairItems):
    """ImageSegData/ImageProbData items: an image and its label map, transformed together.

    ``factor`` multiplies the label values (None for ImageSegData; ImageProbData's 0.0039).
    ``shape`` (set by the layer from the first item) is the size every item must give, as the
    fork's label blob keeps its set-up size.
    """

    def __init__(self, lines: list[FieldLine], source: str, root: str, new_height: int,
                 new_width: int, is_color: bool, transformer: DataTransformer,
                 geometry: SegGeometry, factor: float | None, where: Where):
        super().__init__(lines, source, root, where)
        self.new_height, self.new_width, self.is_color = new_height, new_width, is_color
        self.transformer, self.geometry, self.factor = transformer, geometry, factor
        self.shape: tuple[int, int] | None = None

    def maps(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The image ``(H, W, C)`` and label map ``(H, W, 1)`` of entry ``index``, as read."""
        image, label, _ = self.entries[index]
        where = self._where(index)
        img = _read_map(self.root + image, "image", self.new_height, self.new_width,
                        self.is_color, where)
        lab = _read_map(self.root + label, "label map", self.new_height, self.new_width, False, where)
        if img.shape[:2] != lab.shape[:2]:
            raise DataError(f"label map '{self.root + label}' is {lab.shape[0]}x{lab.shape[1]} but "
                            f"its image is {img.shape[0]}x{img.shape[1]}; expected the same size", where)
        return img, lab

    def load(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        img, lab = self.maps(index)
        draw = self.geometry.sample(rng, img.shape[0], img.shape[1])
        return self.transform(index, img, lab, draw)

    def transform(self, index: int, img: np.ndarray, lab: np.ndarray,
                  draw: SegDraw) -> tuple[np.ndarray, np.ndarray]:
        """The data and label arrays of entry ``index`` for fixed choices ``draw``."""
        size = self.geometry.output_size(img.shape[0], img.shape[1], draw)
        if self.shape is not None and size != self.shape:
            raise DataError(f"image '{self.root + self.entries[index][0]}' gives {size[0]}x{size[1]} "
                            f"maps but the layer was set up for {self.shape[0]}x{self.shape[1]} "
                            "(from the first image); give every image the same size, or set "
                            "crop_size or new_height/new_width", self._where(index))
        fill = (0,) * img.shape[2]
        if any(draw.pad):
            fill = self._pad_fill(index, draw.size or img.shape[:2], img.shape[2])
        with self._failure_at(index):
            data = self.transformer.apply(geometry(img, draw, fill, image=True), draw.image_draw())
        label = label_blob(geometry(lab, draw, (IGNORE_LABEL,)), draw, self.geometry.crop,
                           self.factor)
        return data, label

    def _pad_fill(self, index: int, size: tuple[int, int], channels: int) -> tuple[int, ...]:
        means = self.transformer.mean_values
        if means.size not in (1, channels):
            raise DataError(f"image '{self.root + self.entries[index][0]}' of {size[0]}x{size[1]} "
                            f"(after any resize) is padded up to crop_size {self.geometry.crop} "
                            f"with mean_value, which the fork reads per channel; expected 1 or "
                            f"{channels} mean_value(s), got {means.size}", self._where(index))
        return pad_value(means, channels)

    def output_shape(self, index: int = 0) -> tuple[int, int, int]:
        """The data top's ``(C, H, W)`` from entry ``index`` (crop_size, else the read size)."""
        img, _ = self.maps(index)
        crop = self.geometry.crop
        return (img.shape[2], crop, crop) if crop else (img.shape[2], img.shape[0], img.shape[1])


class RegressionItems(ImageListItems):
    """ImageRegressionData items: an image transformed like ImageData's, and its float targets
    as a ``(label_size, 1, 1)`` array."""

    def load(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        data, _ = super().load(index, rng)
        return data, np.asarray(self.entries[index].labels, dtype=np.float32).reshape(-1, 1, 1)
