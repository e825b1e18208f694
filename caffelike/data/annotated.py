"""SSD's AnnotatedDatum records (weiliu89/caffe branch ssd): an image and its labelled boxes,
read from an LMDB and transformed as the fork's AnnotatedDataLayer does without its random
augmentations (annotated_data_layer.cpp, data_transformer.cpp, util/im_transforms.cpp).

Each item gives the transformed image ``(C, H, W)`` and its boxes ``(K, 7)``: group_label,
instance_id, xmin, ymin, xmax, ymax, difficult. A batch's label top is SSD's ``(1, 1, N, 8)``:
the item index followed by those 7 values, every item's boxes in turn; one row of -1 when the
batch holds no box.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from ..errors import DataError, Where
from ..proto import caffe_pb2
from .images import datum_to_image
from .prefetch import BatchDataset, item_rng
from ..io.where import source_where
from .sources import KeyValueDB
from .items import DatumItems
from .transformer import DataTransformer

_INTERP = {caffe_pb2.ResizeParameter.LINEAR: cv2.INTER_LINEAR, caffe_pb2.ResizeParameter.AREA: cv2.INTER_AREA,
           caffe_pb2.ResizeParameter.NEAREST: cv2.INTER_NEAREST, caffe_pb2.ResizeParameter.CUBIC: cv2.INTER_CUBIC,
           caffe_pb2.ResizeParameter.LANCZOS4: cv2.INTER_LANCZOS4}
BOX_COLUMNS = 7


def parse_annotated_datum(key: bytes, value: bytes, where: Where) -> caffe_pb2.AnnotatedDatum:
    """One record as an AnnotatedDatum (a user error names the key when it is not one)."""
    record = caffe_pb2.AnnotatedDatum()
    try:
        record.ParseFromString(value)
    except Exception:  # protobuf's DecodeError differs between runtimes
        raise DataError(f"key '{key.decode(errors='replace')}': value is not an AnnotatedDatum "
                        "record", where) from None
    if not record.HasField("datum"):
        raise DataError(f"key '{key.decode(errors='replace')}': AnnotatedDatum holds no datum", where)
    return record


def keep_box(box: caffe_pb2.NormalizedBBox, emit: caffe_pb2.EmitConstraint | None) -> np.ndarray | None:
    """The fork's TransformAnnotation for one box without a crop: WARP keeps the normalised
    coordinates (clamped to [0, 1]); the emit constraint is tested against the whole image;
    the box is clipped and dropped when nothing of it is left. xmin, ymin, xmax, ymax or None."""
    coords = np.float32([box.xmin, box.ymin, box.xmax, box.ymax])
    if emit is not None:
        if emit.emit_type == caffe_pb2.EmitConstraint.CENTER:
            cx, cy = (coords[0] + coords[2]) / 2, (coords[1] + coords[3]) / 2
            if not (0 <= cx <= 1 and 0 <= cy <= 1):
                return None
        else:  # MIN_OVERLAP: the part of the box inside the image, over the box's area
            inside = np.clip(coords, 0, 1)
            area = (coords[2] - coords[0]) * (coords[3] - coords[1])
            covered = max(0.0, inside[2] - inside[0]) * max(0.0, inside[3] - inside[1])
            if not (area > 0 and covered / area > emit.emit_overlap):
                return None
    if coords[0] >= 1 or coords[2] <= 0 or coords[1] >= 1 or coords[3] <= 0:
        return None
    coords = np.clip(coords, 0, 1)
    if coords[2] <= coords[0] or coords[3] <= coords[1]:
        return None
    return coords


class AnnotatedItems(DatumItems):
    """Data-layer items: AnnotatedDatum records of an LMDB, decoded, resized and transformed
    (the database side is DatumItems')."""

    def __init__(self, db: KeyValueDB, transformer: DataTransformer,
                 param: caffe_pb2.TransformationParameter, where: Where):
        super().__init__(db, transformer, True, where)
        self.resize = param.resize_param if param.HasField("resize_param") else None
        self.emit = param.emit_constraint if param.HasField("emit_constraint") else None

    def record(self, record: tuple[bytes, bytes]) -> tuple[caffe_pb2.AnnotatedDatum, np.ndarray]:
        """The AnnotatedDatum and its (H, W, C) image, resized by resize_param."""
        key, value = record
        where = source_where(self.where, self.db.path)
        anno = parse_annotated_datum(key, value, where)
        img = datum_to_image(anno.datum, self.transformer.force_color, self.transformer.force_gray)
        if img is None:
            raise DataError(f"key '{key.decode(errors='replace')}': the datum's image cannot be "
                            "read", where)
        if self.resize is not None and not anno.datum.encoded:
            raise DataError(f"key '{key.decode(errors='replace')}': resize_param needs encoded "
                            "images (the fork resizes only those; a raw datum aborts it)", where)
        return anno, img

    def _resized(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.resize is None:
            return img
        modes = list(self.resize.interp_mode)
        interp = _INTERP[modes[int(rng.integers(len(modes)))]] if modes else cv2.INTER_LINEAR
        out = cv2.resize(img, (int(self.resize.width), int(self.resize.height)), interpolation=interp)
        return out[:, :, None] if out.ndim == 2 else out

    def boxes(self, anno: caffe_pb2.AnnotatedDatum, mirror: bool) -> np.ndarray:
        """The kept boxes (K, 7) in the record's group and annotation order."""
        rows = []
        for group in anno.annotation_group:
            for a in group.annotation:
                coords = keep_box(a.bbox, self.emit)
                if coords is None:
                    continue
                if mirror:
                    coords = np.float32([1 - coords[2], coords[1], 1 - coords[0], coords[3]])
                rows.append([group.group_label, a.instance_id, *coords, float(a.bbox.difficult)])
        return np.asarray(rows, dtype=np.float32).reshape(-1, BOX_COLUMNS)

    def load(self, record: tuple[bytes, bytes], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        anno, img = self.record(record)
        img = self._resized(img, rng)
        with self._failure_at(record):
            draw = self.transformer.sample(rng, img.shape[0], img.shape[1])
            data = self.transformer.apply(img, draw)
        return data, self.boxes(anno, draw.mirror)

    def output_shape(self, record: tuple[bytes, bytes]) -> tuple[int, int, int]:
        _, img = self.record(record)
        height, width = (int(self.resize.height), int(self.resize.width)) if self.resize else img.shape[:2]
        with self._failure_at(record):
            return self.transformer.output_shape(height, width, img.shape[2])

    def box_count(self, record: tuple[bytes, bytes]) -> int:
        anno, _ = self.record(record)
        return sum(len(g.annotation) for g in anno.annotation_group)


class AnnotatedBatches(BatchDataset):
    """Batches of AnnotatedItems: the data stacked, the boxes in SSD's (1, 1, N, 8) label."""

    def build(self, ticket) -> tuple[torch.Tensor, ...]:
        images, rows = [], []
        for item, (index, position, payload) in enumerate(ticket.items):
            data, boxes = self.loader.load(payload, item_rng(self.stream.seed, position))
            if images and images[0].shape != data.shape:
                what = self.describe(index) if self.describe else f"item {index}"
                raise DataError(f"{what}: gives a {data.shape} image but the batch started with "
                                f"{images[0].shape}; give every image the same size (resize_param)")
            images.append(data)
            rows.append(np.concatenate([np.full((len(boxes), 1), item, np.float32), boxes], axis=1))
        label = np.concatenate(rows) if rows else np.zeros((0, BOX_COLUMNS + 1), np.float32)
        if not len(label):
            label = np.full((1, BOX_COLUMNS + 1), -1, np.float32)
        return torch.from_numpy(np.stack(images)), torch.from_numpy(label.reshape(1, 1, -1, BOX_COLUMNS + 1))
