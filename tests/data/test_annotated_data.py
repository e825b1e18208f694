"""SSD's AnnotatedData layer (weiliu89/caffe ssd, annotated_data_layer.cpp), issue 16.

Oracles: the fork's source by hand (TransformAnnotation: WARP keeps normalised boxes, clamped;
the emit constraint; clipping; the mirror flips x), OpenCV's resize for the image, and the
Data layer's own error for a missing database.
"""
from __future__ import annotations

import pathlib

import cv2
import lmdb
import numpy as np
import pytest

import caffelike
from caffelike.errors import DataError, LayerError
from caffelike.io import parse_text_proto
from caffelike.layers.base import TEST, TRAIN
from caffelike.layers.data import Data
from caffelike.layers.ssd_data import AnnotatedData
from caffelike.proto import caffe_pb2

IMAGE = pathlib.Path(__file__).resolve().parents[1] / "data" / "mouth" / "109smile.jpg"
MEAN, SCALE = 127.5, np.float32(0.007843)

# per record: (group_label, instance_id, xmin, ymin, xmax, ymax, difficult) boxes
RECORDS = [
    [(3, 0, 0.1, 0.2, 0.5, 0.6, False), (3, 1, -0.2, 0.5, 0.3, 1.2, True), (7, 0, 0.6, 0.1, 0.9, 0.4, False)],
    [(5, 0, 1.1, 0.2, 1.4, 0.5, False),  # centre outside the image: not emitted
     (2, 4, 0.2, 0.3, 0.4, 0.9, False)],
    [],
]


def _write_db(path: pathlib.Path, records=RECORDS, encoded: bool = True) -> None:
    img = cv2.imread(str(IMAGE))
    with lmdb.open(str(path), map_size=1 << 24) as env, env.begin(write=True) as txn:
        for i, boxes in enumerate(records):
            anno = caffe_pb2.AnnotatedDatum(type=caffe_pb2.AnnotatedDatum.BBOX)
            sized = cv2.resize(img, (60 + 10 * i, 50))
            if encoded:
                anno.datum.data = cv2.imencode(".jpg", sized)[1].tobytes()
                anno.datum.encoded = True
            else:
                anno.datum.channels, anno.datum.height, anno.datum.width = 3, 50, 60 + 10 * i
                anno.datum.data = sized.transpose(2, 0, 1).tobytes()
            groups: dict[int, caffe_pb2.AnnotationGroup] = {}
            for label, instance, x0, y0, x1, y1, difficult in boxes:
                if label not in groups:
                    groups[label] = anno.annotation_group.add(group_label=label)
                a = groups[label].annotation.add(instance_id=instance)
                a.bbox.xmin, a.bbox.ymin, a.bbox.xmax, a.bbox.ymax = x0, y0, x1, y1
                a.bbox.difficult = difficult
            txn.put(f"{i:08d}".encode(), anno.SerializeToString())


def _layer(source: str, phase=TEST, extra: str = "", batch: int = 3, tops: str = 'top: "data" top: "label"'):
    text = (f'name: "d" type: "AnnotatedData" {tops} data_param {{ source: "{source}" batch_size: {batch} '
            f'backend: LMDB }} transform_param {{ mean_value: {MEAN} scale: {SCALE} {extra} }}')
    return AnnotatedData(parse_text_proto(text, caffe_pb2.LayerParameter), [], phase)


RESIZE = "resize_param { resize_mode: WARP height: 24 width: 32 interp_mode: LINEAR } emit_constraint { emit_type: CENTER }"


def _expected_boxes(item: int) -> list[list[float]]:
    """The fork's label rows of one record, no mirror (emit CENTER, clamp, clip, by group)."""
    rows = []
    for label, instance, x0, y0, x1, y1, difficult in RECORDS[item]:
        if not (0 <= (x0 + x1) / 2 <= 1 and 0 <= (y0 + y1) / 2 <= 1):
            continue
        rows.append([item, label, instance, *np.clip([x0, y0, x1, y1], 0, 1), float(difficult)])
    return rows


def test_missing_lmdb_fails_as_the_data_layer(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    errors = []
    for layer_type, cls in (("Data", Data), ("AnnotatedData", AnnotatedData)):
        with pytest.raises(DataError) as info:
            cls(parse_text_proto(f'name: "d" type: "{layer_type}" top: "data" data_param {{ source: "trainval_lmdb/" '
                                 "batch_size: 2 backend: LMDB }", caffe_pb2.LayerParameter), [], TRAIN)
        errors.append(str(info.value))
    assert errors[1] == errors[0].replace("(Data)", "(AnnotatedData)")
    assert "cannot open LMDB 'trainval_lmdb/'" in errors[1]


def test_reads_records_resizes_and_writes_ssd_labels(tmp_path) -> None:
    _write_db(tmp_path / "db")
    layer = _layer(str(tmp_path / "db"), extra=RESIZE)
    assert layer.top_shapes([]) == [(3, 3, 24, 32), (1, 1, 3, 8)]
    data, label = (t.numpy() for t in layer.forward())
    img = cv2.imread(str(IMAGE))
    for i in range(3):  # JPEG round trip: decode what was written, as the layer does
        encoded = cv2.imencode(".jpg", cv2.resize(img, (60 + 10 * i, 50)))[1]
        resized = cv2.resize(cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED), (32, 24), interpolation=cv2.INTER_LINEAR)
        expected = ((resized.astype(np.float32) - np.float32(MEAN)) * SCALE).transpose(2, 0, 1)
        np.testing.assert_allclose(data[i], expected, rtol=0, atol=1e-6)
    expected_rows = _expected_boxes(0) + _expected_boxes(1) + _expected_boxes(2)
    assert label.shape == (1, 1, len(expected_rows), 8) == (1, 1, 4, 8)
    np.testing.assert_allclose(label[0, 0], expected_rows, rtol=0, atol=1e-7)


@pytest.mark.parametrize("phase", [TRAIN, TEST])
def test_mirror_flips_image_and_boxes_together(tmp_path, phase) -> None:
    """data_transformer.cpp: ``do_mirror = mirror && Rand(2)`` in every phase (BVLC's rule, not
    the book fork's TRAIN-only mirror)."""
    _write_db(tmp_path / "db")
    layer = _layer(str(tmp_path / "db"), phase, extra="mirror: true " + RESIZE, batch=1)
    layer.set_seed(1)
    plain = _layer(str(tmp_path / "db"), TEST, extra=RESIZE, batch=1)
    plain_data, plain_label = (t.numpy() for t in plain.forward())
    flips = set()
    for _ in range(24):  # the stream wraps: item 0 again every third batch
        data, label = (t.numpy() for t in layer.forward())
        if label[0, 0, 0, 1] != 3:  # not item 0
            continue
        flipped = np.array_equal(data, plain_data[..., ::-1])
        assert flipped or np.array_equal(data, plain_data)
        boxes = plain_label[0, 0].copy()
        if flipped:
            boxes[:, [3, 5]] = 1 - plain_label[0, 0][:, [5, 3]]
        np.testing.assert_allclose(label[0, 0], boxes, rtol=0, atol=1e-7)
        flips.add(flipped)
    assert flips == {True, False}


def test_batch_without_boxes_gives_one_row_of_minus_one(tmp_path) -> None:
    _write_db(tmp_path / "db", records=[[], [(1, 0, 1.2, 1.2, 1.5, 1.5, False)]])
    layer = _layer(str(tmp_path / "db"), extra=RESIZE, batch=2)
    assert layer.top_shapes([])[1] == (1, 1, 1, 8)
    data, label = (t.numpy() for t in layer.forward())
    assert data.shape == (2, 3, 24, 32)
    np.testing.assert_array_equal(label, np.full((1, 1, 1, 8), -1))


@pytest.mark.parametrize("extra,field", [
    ("distort_param { brightness_prob: 0.5 }", "transform_param.distort_param"),
    ("expand_param { prob: 0.5 }", "transform_param.expand_param"),
    ("noise_param { prob: 0.5 }", "transform_param.noise_param"),
    ("crop_size: 16", "transform_param.crop_size"),
    ("resize_param { resize_mode: FIT_SMALL_SIZE height: 24 width: 32 }", "resize_mode (only WARP)"),
])
def test_unimplemented_augmentations_are_refused_by_name(tmp_path, extra: str, field: str) -> None:
    _write_db(tmp_path / "db")
    with pytest.raises(LayerError) as info:
        _layer(str(tmp_path / "db"), TRAIN, extra=extra)
    assert field in str(info.value) and "layer 'd' (AnnotatedData)" in str(info.value)


def test_batch_sampler_is_refused_by_name(tmp_path) -> None:
    _write_db(tmp_path / "db")
    text = (f'name: "d" type: "AnnotatedData" top: "data" top: "label" data_param {{ source: "{tmp_path / "db"}" '
            "batch_size: 2 backend: LMDB } annotated_data_param { batch_sampler { max_sample: 1 max_trials: 1 } }")
    with pytest.raises(LayerError, match="annotated_data_param.batch_sampler"):
        AnnotatedData(parse_text_proto(text, caffe_pb2.LayerParameter), [], TRAIN)


def test_raw_datum_with_resize_is_refused(tmp_path) -> None:
    _write_db(tmp_path / "db", encoded=False)
    with pytest.raises(DataError, match="resize_param needs encoded images"):
        _layer(str(tmp_path / "db"), extra=RESIZE)
    layer = _layer(str(tmp_path / "db"), batch=1)  # without resize: the raw image as it is
    data, label = (t.numpy() for t in layer.forward())
    assert data.shape == (1, 3, 50, 60) and label.shape == (1, 1, 3, 8)  # no emit_constraint: all 3 kept


def test_in_a_net_with_the_ssd_wiring(tmp_path, monkeypatch) -> None:
    """An AnnotatedData net as MobileNetSSD_test starts: data and label tops, a PriorBox on the data."""
    _write_db(tmp_path / "db")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.prototxt").write_text(
        'layer { name: "data" type: "AnnotatedData" top: "data" top: "label" data_param { source: "db" '
        f'batch_size: 2 backend: LMDB }} transform_param {{ mean_value: 127.5 {RESIZE} }} }}\n'
        'layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" pooling_param { pool: MAX kernel_size: 8 stride: 8 } }\n'
        'layer { name: "prior" type: "PriorBox" bottom: "pool" bottom: "data" top: "prior" '
        "prior_box_param { min_size: 8 aspect_ratio: 2 variance: 0.1 } }\n")
    net = caffelike.Net("net.prototxt", caffelike.TEST)
    out = net.forward()
    assert np.array(out["prior"]).shape == (1, 2, 3 * 4 * 3 * 4)
    assert np.array(net.blobs["label"].data).shape[3] == 8
