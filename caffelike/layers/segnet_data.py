"""The forks' image + label-map list data layers (issue 16).

* ``DenseImageData`` (alexgkendall/caffe-segnet, TimoSaemann/caffe-enet): ``dense_image_data_param``;
* ``ImageLabelmapData`` (s9xie/hed): ``image_data_param``, HED's 0/1 edge labels.

Both read ``image labelmap`` lines (whitespace-split) and prefetch like ImageData
(:class:`~caffelike.layers.data.StreamingDataLayer`); data top (N, C, H, W), label top (N, 1, h, w).
With batch_size 1 and no resize or crop, images of any size pass (the forks reshape per batch).
"""
from __future__ import annotations

from ..data.dense_items import DenseItems, EdgeMapItems
from ..data.transformer import DataTransformer
from ..glog import get_logger
from ..io.image_list import read_field_list
from .base import TEST, register_layer
from .data import StreamingDataLayer

log = get_logger("data")


def _open(layer: StreamingDataLayer, p, items_cls: type[DenseItems] | type[EdgeMapItems]):
    """Check the size fields, build the transformer, read the list and the first entry's shapes."""
    if (p.new_height == 0) != (p.new_width == 0):
        raise layer.error("new_height and new_width must be set together")
    transformer = DataTransformer(layer.param.transform_param, layer.phase, layer.where)
    log.info("Opening file %s", p.source)
    lines = read_field_list(p.source, layer.where, "image labelmap")
    items = items_cls(lines, p.source, p, transformer, layer.where)
    log.info("A total of %d examples.", len(items))
    data, label = items.output_shapes(0)
    layer._shapes = [(p.batch_size, *data), (p.batch_size, *label)]
    log.info("output data size: %d,%d,%d,%d", *layer._shapes[0])
    log.info("output label size: %d,%d,%d,%d", *layer._shapes[1])
    return items


@register_layer("DenseImageData", bottoms=0, tops=2, is_data=True)
class DenseImageData(StreamingDataLayer):
    """SegNet's image + label image lists (``dense_image_data_param``).

    Caffe semantics (SegNet's dense_image_data_layer.cpp): label pixels are class indices
    (nearest-neighbour resize, no mean or scale); ``mirror`` and ``crop_height``/``crop_width``
    of dense_image_data_param are random in every phase and shared by image and label; the
    transform_param's own ``mirror``/``crop_size`` are refused (SegNet aborts on them: they
    would move the image without its label); ENet's ``label_divide_factor`` shrinks the label
    (needs new_height/new_width). dense_image_data_param.mean_file is not read (as in the
    forks; use transform_param's). Tests: tests/data/test_dense_image_data.py.
    """

    param_field = "dense_image_data_param"

    def __init__(self, param, bottom_shapes, phase=TEST, where=None):
        super().__init__(param, bottom_shapes, phase, where)
        p, t = param.dense_image_data_param, param.transform_param
        if (p.crop_height == 0) != (p.crop_width == 0):
            raise self.error("crop_height and crop_width must be set together")
        if t.mirror or t.crop_size:
            raise self.error("transform_param mirror/crop_size would move the image without its "
                             "label (SegNet refuses them); use dense_image_data_param's mirror "
                             "and crop_height/crop_width")
        if p.label_divide_factor > 1 and (p.new_height == 0 or p.crop_height):
            raise self.error("label_divide_factor needs new_height/new_width and no "
                             "crop_height/crop_width")
        self.items = _open(self, p, DenseItems)


@register_layer("ImageLabelmapData", bottoms=0, tops=2, is_data=True)
class ImageLabelmapData(StreamingDataLayer):
    """HED's image + edge-map lists (``image_data_param``): label 1 where the map is >= 128.

    Caffe semantics (s9xie/hed image_labelmap_data_layer.cpp): BVLC's transform for the image
    (crop random in TRAIN, centred in TEST; mirror; mean; scale), the same crop and mirror for
    the 0/1 label. Tests: tests/data/test_dense_image_data.py.
    """

    param_field = "image_data_param"

    def __init__(self, param, bottom_shapes, phase=TEST, where=None):
        super().__init__(param, bottom_shapes, phase, where)
        self.items = _open(self, param.image_data_param, EdgeMapItems)
