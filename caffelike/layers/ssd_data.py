"""SSD's AnnotatedData layer (weiliu89/caffe branch ssd, annotated_data_layer.cpp)."""
from __future__ import annotations

from ..data.sources import KeyValueDB
from ..glog import get_logger
from ..proto import caffe_pb2
from .base import TEST, register_layer
from .data import _BACKENDS, StreamingDataLayer

log = get_logger("data")


def unsupported_augmentations(param: caffe_pb2.LayerParameter) -> list[str]:
    """The fork's augmentations set in ``param`` that caffelike does not implement."""
    t, a = param.transform_param, param.annotated_data_param
    names = [f"transform_param.{name}" for name in ("distort_param", "expand_param", "noise_param")
             if t.HasField(name)]
    if len(a.batch_sampler):
        names.insert(0, "annotated_data_param.batch_sampler")
    return names


@register_layer("AnnotatedData", bottoms=0, tops=(1, 2), is_data=True)
class AnnotatedData(StreamingDataLayer):
    """Reads SSD's AnnotatedDatum records (an image and its labelled boxes) from an LMDB.

    Fork semantics: ``data_param`` names the database as for Data; the first record is read
    at set-up, so a missing database fails there exactly as Data's does. caffelike opens the
    database and then refuses every augmentation it does not implement (batch_sampler,
    distort_param, expand_param, noise_param), naming the field, instead of skipping it;
    reading the records themselves is not implemented yet either (a user error says so).
    """

    param_field = "data_param"

    def __init__(self, param, bottom_shapes, phase=TEST, where=None):
        super().__init__(param, bottom_shapes, phase, where)
        p = param.data_param
        backend = _BACKENDS.get(p.backend, "lmdb")
        self.db = KeyValueDB(p.source, backend, self.where)
        log.info("Opened %s %s", backend, p.source)
        missing = unsupported_augmentations(param)
        if missing:
            raise self.error(f"{', '.join(missing)}: SSD's augmentation is not implemented by "
                             "caffelike; remove the field to read the records without it")
        raise self.error("reading AnnotatedDatum records is not implemented by caffelike yet")
