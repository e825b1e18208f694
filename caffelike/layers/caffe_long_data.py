"""The book fork's (longpeng2008/Caffe_Long) image-list data layers.

* ``ImageSegData``: ``image labelmap`` lines -> data ``(N, C, H, W)``, label ``(N, 1, H, W)``;
* ``ImageProbData``: the same, label values times 0.0039;
* ``ImageRegressionData``: ``image f1 ... fK`` lines -> data, label ``(N, label_size, 1, 1)``.

All read ``image_data_param`` (``source``, ``batch_size``, ``shuffle``, ``rand_skip``,
``new_height``/``new_width``, ``is_color``, ``root_folder``; ``label_size``) and prefetch like
ImageData (:class:`~caffelike.layers.data.StreamingDataLayer`). The fork's list files are
split on whitespace, so paths cannot hold spaces. Golden: tests/golden/caffe_long/data.
"""
from __future__ import annotations

from ..data.fork_items import LabelMapItems, RegressionItems
from ..data.label_maps import PROB_SCALE, SegGeometry
from ..data.transformer import DataTransformer
from ..io.image_list import read_field_list, read_image_list
from ..glog import get_logger
from ..proto import caffe_pb2
from .base import TEST, TRAIN, register_layer
from .data import StreamingDataLayer

log = get_logger("data")


def _check_list_param(layer: StreamingDataLayer, p: caffe_pb2.ImageDataParameter) -> None:
    """The image_data_param checks the fork's set-up makes (CHECK failures there)."""
    if (p.new_height == 0) != (p.new_width == 0):
        raise layer.error("new_height and new_width must be set together")


def _image_transformer_param(param: caffe_pb2.TransformationParameter) -> caffe_pb2.TransformationParameter:
    """``param`` without the geometry that the label-map transform does itself (resizes,
    rotation): what :meth:`DataTransformer.apply` needs for the image's crop, mean, scale, mirror."""
    image = caffe_pb2.TransformationParameter()
    image.CopyFrom(param)
    for name in ("min_side_min", "min_side_max", "use_deformed_resize", "max_rotation_angle"):
        image.ClearField(name)
    return image


class _LabelMapData(StreamingDataLayer):
    """ImageSegData and ImageProbData: an image and its label map, one geometry for both.

    Caffe semantics (the fork's TransformImageSeg/TransformImageProb): the short-side or
    deformed resize is nearest-neighbour and random in every phase; a crop larger than the
    image pads it at the bottom/right with mean_value and the label with 255; no mean or
    scale on labels; ``new_height``/``new_width`` resize the label map bilinearly (labels
    blend); no rotation; TRAIN contrast/brightness and colour shift touch the image only. The label top keeps the set-up size: without crop_size every image
    must give the first image's size.
    """

    param_field = "image_data_param"
    factor: float | None = None

    def __init__(self, param, bottom_shapes, phase=TEST, where=None):
        super().__init__(param, bottom_shapes, phase, where)
        p, t = param.image_data_param, param.transform_param
        _check_list_param(self, p)
        seg = SegGeometry.from_param(t, phase)
        self._check_geometry(seg)
        transformer = DataTransformer(_image_transformer_param(t), phase, self.where)
        log.info("Opening file %s", p.source)
        lines = read_field_list(p.source, self.where, "image labelmap")
        self.items = LabelMapItems(lines, p.source, p.root_folder, p.new_height, p.new_width,
                                   p.is_color, transformer, seg, self.factor, self.where)
        log.info("A total of %d images.", len(self.items))
        c, h, w = self.items.output_shape(0)
        self.items.shape = (h, w)
        self._shapes = [(p.batch_size, c, h, w), (p.batch_size, 1, h, w)]
        log.info("output data size: %d,%d,%d,%d", *self._shapes[0])
        log.info("output label size: %d,%d,%d,%d", *self._shapes[1])

    def _check_geometry(self, seg: SegGeometry) -> None:
        deformed = seg.deformed and seg.deformed_th < 1.0
        if deformed or seg.resizes:
            if seg.side_min <= 0 or seg.side_max < seg.side_min:
                raise self.error(f"min_side_min ({seg.side_min}) must be > 0 and min_side_max "
                                 f"({seg.side_max}) >= min_side_min for the resize")
            if deformed and seg.side_min < seg.crop:
                raise self.error(f"min_side_min ({seg.side_min}) must be >= crop_size ({seg.crop}) "
                                 "for use_deformed_resize")
        if (deformed or seg.resizes or seg.photometric) and not seg.has_rng:
            what = "min_side_min/min_side_max draw a random size in every phase" \
                if deformed or seg.resizes else "contrast/colour augmentations draw at random"
            needs = "mirror: true or crop_size" if self.phase == TRAIN else "mirror: true"
            raise self.error(f"{what}, and the fork has no generator for them without {needs} "
                             "(it aborts: Check failed: rng_); set it or drop them")


@register_layer("ImageSegData", bottoms=0, tops=2, is_data=True)
class ImageSegData(_LabelMapData):
    """Image + segmentation label map lists (Caffe_Long); label values unchanged (255 = ignore).

    Golden: ImageSegData__test_crop48_mean, __test_pad_crop64, __test_newhw_bilinear_labels.
    """


@register_layer("ImageProbData", bottoms=0, tops=2, is_data=True)
class ImageProbData(_LabelMapData):
    """Image + probability map lists (Caffe_Long): label = pixel * 0.0039 (not 1/255).

    Golden: ImageProbData__test_crop48.
    """

    factor = PROB_SCALE


@register_layer("ImageRegressionData", bottoms=0, tops=2, is_data=True)
class ImageRegressionData(StreamingDataLayer):
    """Image + ``label_size`` float targets per line (Caffe_Long); label top (N, label_size, 1, 1).

    Caffe semantics: the image goes through the fork's classification transform (as
    ImageData's); targets are parsed as floats; every line has as many numbers as the first.
    Golden: ImageRegressionData__test_crop40_3floats.
    """

    param_field = "image_data_param"

    def __init__(self, param, bottom_shapes, phase=TEST, where=None):
        super().__init__(param, bottom_shapes, phase, where)
        p = param.image_data_param
        if p.label_size < 1:
            raise self.error("image_data_param.label_size must be at least 1")
        transformer = DataTransformer(param.transform_param, phase, self.where)
        _check_list_param(self, p)
        log.info("Opening file %s", p.source)
        entries = read_image_list(p.source, self.where, labels=int(p.label_size), label_type=float)
        log.info("A total of %d images.", len(entries))
        self.items = RegressionItems(entries, p.source, p.root_folder, p.new_height,
                                     p.new_width, p.is_color, transformer, self.where)
        shape = self.items.output_shape(0)
        self._shapes = [(p.batch_size, *shape), (p.batch_size, int(p.label_size), 1, 1)]
        log.info("output data size: %d,%d,%d,%d", *self._shapes[0])
