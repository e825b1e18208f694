"""Item loaders of the forks' image + label-map list layers (issue 16).

* :class:`DenseItems`: SegNet's ``DenseImageData`` (alexgkendall/caffe-segnet
  ``dense_image_data_layer.cpp``; ENet's ``label_divide_factor`` from TimoSaemann/caffe-enet);
* :class:`EdgeMapItems`: HED's ``ImageLabelmapData`` (s9xie/hed ``image_labelmap_data_layer.cpp``).

Both read ``image labelmap`` lines split on whitespace (the forks' ``infile >> a >> b``), with
:func:`~caffelike.io.image_list.read_field_list`; every error names the list file and line.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..errors import DataError, Where
from ..io.image_list import FieldLine
from ..proto import caffe_pb2
from .fork_items import PairItems, _read_map
from .transformer import DataTransformer, Draw


def _resize(img: np.ndarray, height: int, width: int, interpolation: int) -> np.ndarray:
    out = cv2.resize(img, (width, height), interpolation=interpolation)
    return out[:, :, None] if out.ndim == 2 else out


class DenseItems(PairItems):
    """DenseImageData items: an image and its label image, the same random mirror and crop.

    Caffe semantics (SegNet): the image is read with a bilinear ``new_height x new_width``
    resize, the label image as grey with a nearest-neighbour resize (ENet: to the new size
    divided by ``label_divide_factor``); ``dense_image_data_param.mirror`` flips both with
    probability 1/2 and ``crop_height``/``crop_width`` cut the same random window from both,
    in every phase; then the image gets the transformer's mean and scale, the label keeps its
    pixel values. Without a resize or crop, image and label must be the same size.
    """

    def __init__(self, lines: list[FieldLine], source: str, p: caffe_pb2.DenseImageDataParameter,
                 transformer: DataTransformer, where: Where):
        super().__init__(lines, source, p.root_folder, where)
        self.new_height, self.new_width, self.is_color = int(p.new_height), int(p.new_width), p.is_color
        self.crop = (int(p.crop_height), int(p.crop_width))
        self.mirror = bool(p.mirror)
        self.divide = max(1, int(p.label_divide_factor))
        self.transformer = transformer

    def maps(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The image ``(H, W, C)`` and label image ``(h, w, 1)`` of entry ``index``, as read."""
        image, label, _ = self.entries[index]
        where = self._where(index)
        img = _read_map(self.root + image, "image", self.new_height, self.new_width,
                        self.is_color, where)
        lab = _read_map(self.root + label, "label image", 0, 0, False, where)
        if self.new_height > 0:
            lab = _resize(lab, self.new_height // self.divide, self.new_width // self.divide,
                          cv2.INTER_NEAREST)
        if self.divide == 1 and lab.shape[:2] != img.shape[:2]:
            raise DataError(f"label image '{self.root + label}' is {lab.shape[0]}x{lab.shape[1]} "
                            f"but its image is {img.shape[0]}x{img.shape[1]}; expected the same "
                            "size", where)
        return img, lab

    def load(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        img, lab = self.maps(index)
        if self.mirror and rng.integers(2):
            img, lab = img[:, ::-1], lab[:, ::-1]
        ch, cw = self.crop
        if ch > 0:
            height, width = img.shape[:2]
            if height < ch or width < cw or lab.shape[0] < ch or lab.shape[1] < cw:
                raise DataError(f"image of {height}x{width} is smaller than the crop "
                                f"{ch}x{cw} (crop_height x crop_width)", self._where(index))
            h_off, w_off = int(rng.integers(height - ch + 1)), int(rng.integers(width - cw + 1))
            img = img[h_off:h_off + ch, w_off:w_off + cw]
            lab = lab[h_off:h_off + ch, w_off:w_off + cw]
        with self._failure_at(index):
            data = self.transformer.apply(np.ascontiguousarray(img), Draw())
        return data, np.ascontiguousarray(lab.transpose(2, 0, 1), dtype=np.float32)

    def output_shapes(self, index: int = 0) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """The data and label tops' ``(C, H, W)`` from entry ``index``."""
        img, lab = self.maps(index)
        if self.crop[0] > 0:
            return (img.shape[2], *self.crop), (1, *self.crop)
        return (img.shape[2], *img.shape[:2]), (1, *lab.shape[:2])


def edge_labels(gt: np.ndarray) -> np.ndarray:
    """HED's ``cv_gt / 255`` on a uint8 map: OpenCV rounds, so 0 below 128 and 1 from 128 up."""
    return (gt >= 128).astype(np.float32)


class EdgeMapItems(PairItems):
    """ImageLabelmapData items (HED): an image and its edge map, the same crop and mirror.

    Caffe semantics (s9xie/hed): image and grey edge map are read at their size and, with
    ``new_height``/``new_width``, both resized bilinearly; they must be the same size; the
    image gets the transformer's crop (random in TRAIN, centred in TEST), mirror, mean and
    scale; the label is ``edge / 255`` rounded (0 or 1) with the same crop and mirror.
    """

    def __init__(self, lines: list[FieldLine], source: str, p: caffe_pb2.ImageDataParameter,
                 transformer: DataTransformer, where: Where):
        super().__init__(lines, source, p.root_folder, where)
        self.new_height, self.new_width, self.is_color = int(p.new_height), int(p.new_width), p.is_color
        self.transformer = transformer

    def maps(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image, label, _ = self.entries[index]
        where = self._where(index)
        img = _read_map(self.root + image, "image", 0, 0, self.is_color, where)
        gt = _read_map(self.root + label, "label map", 0, 0, False, where)
        if img.shape[:2] != gt.shape[:2]:
            raise DataError(f"label map '{self.root + label}' is {gt.shape[0]}x{gt.shape[1]} but "
                            f"its image is {img.shape[0]}x{img.shape[1]}; expected the same size", where)
        if self.new_height > 0:
            img = _resize(img, self.new_height, self.new_width, cv2.INTER_LINEAR)
            gt = _resize(gt, self.new_height, self.new_width, cv2.INTER_LINEAR)
        return img, gt

    def load(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        img, gt = self.maps(index)
        with self._failure_at(index):
            draw = self.transformer.sample(rng, img.shape[0], img.shape[1])
            data = self.transformer.apply(img, draw)
        label = edge_labels(gt)[:, :, 0]
        crop = self.transformer.crop
        if crop:
            label = label[draw.h_off:draw.h_off + crop, draw.w_off:draw.w_off + crop]
        if draw.mirror:
            label = label[:, ::-1]
        return data, np.ascontiguousarray(label[None])

    def output_shapes(self, index: int = 0) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        img, _ = self.maps(index)
        with self._failure_at(index):
            c, h, w = self.transformer.output_shape(img.shape[0], img.shape[1], img.shape[2])
        return (c, h, w), (1, h, w)
