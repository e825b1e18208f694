"""SSD's AnnotatedData layer (weiliu89/caffe branch ssd, annotated_data_layer.cpp)."""
from __future__ import annotations

from ..data.annotated import AnnotatedBatches, AnnotatedItems
from ..data.sources import KeyValueDB
from ..data.transformer import DataTransformer
from ..glog import get_logger
from ..proto import caffe_pb2
from .base import TEST, register_layer
from .data import _BACKENDS, StreamingDataLayer

log = get_logger("data")


def unsupported_fields(param: caffe_pb2.LayerParameter) -> list[str]:
    """The fork's AnnotatedData settings in ``param`` that caffelike does not implement."""
    t, a = param.transform_param, param.annotated_data_param
    names = [f"transform_param.{name}" for name in ("distort_param", "expand_param", "noise_param")
             if t.HasField(name)]
    names += [f"transform_param.{name}" for name in ("crop_size", "crop_h", "crop_w") if getattr(t, name)]
    if t.HasField("resize_param") and t.resize_param.resize_mode != caffe_pb2.ResizeParameter.WARP:
        names.append("transform_param.resize_param.resize_mode (only WARP)")
    if len(a.batch_sampler):
        names.insert(0, "annotated_data_param.batch_sampler")
    return names


@register_layer("AnnotatedData", bottoms=0, tops=(1, 2), is_data=True)
class AnnotatedData(StreamingDataLayer):
    """Reads SSD's AnnotatedDatum records (an image and its labelled boxes) from an LMDB.

    Fork semantics: ``data_param`` names the database as for Data and the first record is read
    at set-up, so a missing database fails there exactly as Data's does. Images go through
    ``resize_param`` (WARP, interpolation drawn among ``interp_mode``), then mean/scale and the
    random ``mirror`` (which also flips the boxes); boxes are clamped to the image, filtered by
    ``emit_constraint`` and dropped when nothing is left. Label top (1, 1, N, 8): item, group
    label, instance id, xmin, ymin, xmax, ymax, difficult; one row of -1 when no box. The
    random augmentations (batch_sampler, distort_param, expand_param, noise_param), crops and
    the other resize modes are not implemented: a user error names the field instead of
    skipping it. Records need an AnnotationType (BBOX), as the fork's SSD data has.
    """

    param_field = "data_param"
    batches = AnnotatedBatches

    def __init__(self, param, bottom_shapes, phase=TEST, where=None):
        super().__init__(param, bottom_shapes, phase, where)
        p = param.data_param
        self.prefetch = int(p.prefetch) if p.prefetch else 4
        backend = _BACKENDS.get(p.backend, "lmdb")
        db = KeyValueDB(p.source, backend, self.where)
        log.info("Opened %s %s", backend, p.source)
        missing = unsupported_fields(param)
        if missing:
            raise self.error(f"{', '.join(missing)}: not implemented by caffelike (SSD's "
                             "augmentation); remove the field to read the records without it")
        transformer = DataTransformer(param.transform_param, phase, self.where)
        self.items = AnnotatedItems(db, transformer, param.transform_param, self.where)
        first = db.get(0)
        anno, _ = self.items.record(first)
        has_type = anno.HasField("type") or param.annotated_data_param.HasField("anno_type")
        if len(param.top) > 1 and not has_type:
            raise self.error("the records hold no AnnotationType (plain Datum labels): not "
                             "implemented by caffelike; AnnotatedData reads BBOX annotations")
        self._shapes = [(p.batch_size, *self.items.output_shape(first))]
        if len(param.top) > 1:
            self._shapes.append((1, 1, max(self.items.box_count(first), 1), 8))
        log.info("output data size: %d,%d,%d,%d", *self._shapes[0])
