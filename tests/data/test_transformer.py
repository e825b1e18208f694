"""DataTransformer: Caffe's crop/mirror/mean/scale arithmetic and the book's augmentations.

Expected values come from the formulas of Caffe's src/caffe/data_transformer.cpp
(``top[(c*h + y)*w + x'] = (pixel(c, h_off + y, w_off + x) - mean) * scale`` with
``x' = w - 1 - x`` when mirrored, mean_file indexed at the source pixel, TRAIN offsets
``Rand(H - crop + 1)``, TEST offsets ``(H - crop) / 2``) and from the issue's spec of the
book's extensions (short side s in [min_side_min, min_side_max] in TRAIN, s = crop_size in
TEST, long side ceil(long / (short / s)), deformed s x s when u >= th, rotation in
[-max, +max] on a canvas enlarged to the bounding box).
"""
from __future__ import annotations

import math
import os

import numpy as np
import pytest

from caffelike.data.transformer import (DataTransformer, Draw, TransformFailure, rotated_size,
                                        short_side_size)
from caffelike.errors import DataError, LayerError, Where
from caffelike.proto import caffe_pb2

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST


def make(phase=TRAIN, **fields) -> DataTransformer:
    param = caffe_pb2.TransformationParameter()
    for name, value in fields.items():
        if isinstance(value, list):
            getattr(param, name).extend(value)
        else:
            setattr(param, name, value)
    return DataTransformer(param, phase, Where(file="net.prototxt", line=3, layer="data",
                                               type="ImageData"))


def caffe_reference(img, crop, h_off, w_off, mirror, scale, mean_values=None, mean_file=None):
    """Caffe's Transform(cv::Mat) loops, written out element by element (float32)."""
    height, width, channels = img.shape
    ch, cw = (crop, crop) if crop else (height, width)
    out = np.zeros((channels, ch, cw), np.float32)
    scale = np.float32(scale)
    for c in range(channels):
        for y in range(ch):
            for x in range(cw):
                pixel = np.float32(img[h_off + y, w_off + x, c])
                if mean_file is not None:
                    value = (pixel - np.float32(mean_file[c, h_off + y, w_off + x])) * scale
                elif mean_values is not None:
                    value = (pixel - np.float32(mean_values[c])) * scale
                else:
                    value = pixel * scale
                out[c, y, cw - 1 - x if mirror else x] = value
    return out


@pytest.fixture
def img() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (9, 11, 3), dtype=np.uint8)


@pytest.mark.parametrize("mirror", [False, True])
def test_crop_mirror_mean_values_scale(img, mirror):
    t = make(TRAIN, crop_size=5, mirror=True, mean_value=[104.0, 117.0, 123.0], scale=0.017)
    out = t.apply(img, Draw(mirror=mirror, h_off=3, w_off=6))
    ref = caffe_reference(img, 5, 3, 6, mirror, 0.017, mean_values=[104.0, 117.0, 123.0])
    assert out.dtype == np.float32 and out.shape == (3, 5, 5)
    np.testing.assert_array_equal(out, ref)


def test_single_mean_value_is_replicated(img):
    out = make(TEST, mean_value=[100.0]).apply(img, Draw())
    np.testing.assert_array_equal(out, caffe_reference(img, 0, 0, 0, False, 1.0, [100.0] * 3))


def test_mean_file_is_subtracted_at_the_crop_offset(img, tmp_path):
    mean = np.random.default_rng(3).uniform(0, 255, (3, 9, 11)).astype(np.float32)
    blob = caffe_pb2.BlobProto(num=1, channels=3, height=9, width=11)
    blob.data.extend(mean.ravel().tolist())
    path = tmp_path / "mean.binaryproto"
    path.write_bytes(blob.SerializeToString())
    t = make(TRAIN, crop_size=4, mirror=True, mean_file=str(path), scale=0.5)
    out = t.apply(img, Draw(mirror=True, h_off=2, w_off=5))
    np.testing.assert_array_equal(out, caffe_reference(img, 4, 2, 5, True, 0.5, mean_file=mean))


def test_mean_file_size_mismatch_and_missing_file(img, tmp_path):
    blob = caffe_pb2.BlobProto(num=1, channels=3, height=2, width=2)
    blob.data.extend([0.0] * 12)
    path = tmp_path / "small.binaryproto"
    path.write_bytes(blob.SerializeToString())
    with pytest.raises(TransformFailure, match="mean_file of 3x2x2 does not match the image 3x9x11"):
        make(TEST, mean_file=str(path)).apply(img, Draw())
    with pytest.raises(DataError, match=r"net\.prototxt:3: layer 'data' \(ImageData\): cannot open mean_file"):
        make(TEST, mean_file=str(tmp_path / "nope.binaryproto"))


def test_mean_file_of_three_axes_is_refused_naming_the_file(tmp_path):
    # Caffe reads channels/height/width as axes 1..3 of the mean blob (Blob::LegacyShape)
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend([3, 9, 11])
    blob.data.extend([0.0] * 3 * 9 * 11)
    path = tmp_path / "chw.binaryproto"
    path.write_bytes(blob.SerializeToString())
    with pytest.raises(DataError, match=r"layer 'data' \(ImageData\): mean_file '.*chw\.binaryproto' "
                                        r"is not a valid BlobProto: mean blob has shape \(3, 9, 11\)"):
        make(TEST, mean_file=str(path))


def test_test_phase_centre_crop_and_train_offsets_in_range(img):
    draw = make(TEST, crop_size=4).sample(np.random.default_rng(0), 9, 11)
    assert (draw.h_off, draw.w_off) == ((9 - 4) // 2, (11 - 4) // 2)
    t = make(TRAIN, crop_size=4)
    offsets = {(d.h_off, d.w_off) for d in (t.sample(np.random.default_rng(s), 9, 11) for s in range(2000))}
    assert {h for h, _ in offsets} == set(range(9 - 4 + 1))
    assert {w for _, w in offsets} == set(range(11 - 4 + 1))


def test_mirror_is_drawn_in_test_phase_too():
    # data_transformer.cpp: do_mirror = param_.mirror() && Rand(2), whatever the phase.
    t = make(TEST, mirror=True)
    flips = [t.sample(np.random.default_rng(s), 5, 5).mirror for s in range(400)]
    assert 0.35 < np.mean(flips) < 0.65
    assert not any(make(TEST).sample(np.random.default_rng(s), 5, 5).mirror for s in range(50))


def test_crop_larger_than_image_is_an_error(img):
    with pytest.raises(TransformFailure, match="smaller than crop_size 10"):
        make(TRAIN, crop_size=10).sample(np.random.default_rng(0), 9, 11)


def test_conflicting_parameters_name_the_layer():
    with pytest.raises(LayerError, match=r"layer 'data' \(ImageData\): cannot specify mean_file and mean_value"):
        make(TRAIN, mean_file="m.binaryproto", mean_value=[1.0])
    with pytest.raises(LayerError, match="force_color and force_gray"):
        make(TRAIN, force_color=True, force_gray=True)


# -- the book's extensions ------------------------------------------------------------------

def test_short_side_arithmetic_of_the_book():
    assert short_side_size(60, 60, 52) == (52, 53)  # the book's example: 60x60 at s = 52
    k = 60 / 48
    assert short_side_size(60, 80, 48) == (48, int(math.ceil(80 / k)))
    assert short_side_size(80, 60, 48) == (int(math.ceil(80 / k)), 48)
    assert short_side_size(61, 60, 48) == (int(math.ceil(61 / (60 / 48))), 48)


def test_min_side_validation_names_the_layer():
    with pytest.raises(LayerError, match=r"layer 'data' \(ImageData\): min_side_min \(40\) must be >= crop_size \(48\)"):
        make(TRAIN, crop_size=48, min_side_min=40, min_side_max=64)
    with pytest.raises(LayerError, match=r"min_side_max \(50\) must be >= min_side_min \(56\)"):
        make(TRAIN, crop_size=48, min_side_min=56, min_side_max=50)


def test_pinned_short_side_resize_sizes():
    img = np.full((60, 60, 3), 200, np.uint8)
    t = make(TRAIN, min_side_min=48, min_side_max=64)
    assert t.apply(img, Draw(side=52)).shape == (3, 52, 53)
    wide = np.full((40, 70, 3), 200, np.uint8)
    out = t.apply(wide, Draw(side=50))
    assert out.shape == (3, 50, int(math.ceil(70 / (40 / 50))))
    assert t.apply(wide, Draw(side=50, deformed=True)).shape == (3, 50, 50)


def test_test_phase_side_is_crop_size_and_resize_happens():
    t = make(TEST, crop_size=48, min_side_min=56, min_side_max=64)
    draw = t.sample(np.random.default_rng(1), 60, 80)
    assert draw.side == 48 and draw.angle == 0
    assert (draw.h_off, draw.w_off) == (0, (64 - 48) // 2)  # 60x80 -> 48x64, centre crop


def test_rotated_canvas_is_the_bounding_box():
    img = np.full((40, 60, 3), 255, np.uint8)
    t = make(TRAIN, max_rotation_angle=30)
    for angle in (30, -17, 90, 5):
        out = t.apply(img, Draw(angle=angle))
        rad = math.radians(angle)
        want_h = round(40 * abs(math.cos(rad)) + 60 * abs(math.sin(rad)))
        want_w = round(40 * abs(math.sin(rad)) + 60 * abs(math.cos(rad)))
        assert out.shape == (3, want_h, want_w) == (3, *rotated_size(40, 60, angle))
        if angle % 90:
            assert out[:, 0, 0].tolist() == [0, 0, 0]  # the corners are filled with 0
    assert np.array_equal(t.apply(img[:, :, :1], Draw(angle=90))[0], np.full((60, 40), 255, np.float32))


def test_rotation_comes_after_the_resize():
    img = np.full((60, 60, 3), 9, np.uint8)
    t = make(TRAIN, min_side_min=52, min_side_max=52, max_rotation_angle=20)
    out = t.apply(img, Draw(side=52, angle=20))
    assert out.shape == (3, *rotated_size(52, 53, 20))


def test_rotation_and_side_only_in_train():
    t = make(TEST, crop_size=40, min_side_min=44, min_side_max=60, max_rotation_angle=20)
    draws = [t.sample(np.random.default_rng(s), 60, 60) for s in range(100)]
    assert {d.side for d in draws} == {40} and {d.angle for d in draws} == {0}


def test_sampling_ranges_are_uniform_over_the_integers():
    t = make(TRAIN, crop_size=40, min_side_min=44, min_side_max=52, max_rotation_angle=6)
    rng = np.random.default_rng(123)
    n = 13000
    draws = [t.sample(rng, 60, 60) for _ in range(n)]
    sides = np.bincount([d.side for d in draws], minlength=53)[44:]
    angles = np.bincount([d.angle + 6 for d in draws], minlength=13)
    for counts in (sides, angles):
        assert len(counts) in (9, 13) and counts.min() > 0
        expect = n / len(counts)
        assert np.abs(counts - expect).max() < 5 * math.sqrt(expect)  # ~5 sigma
    assert min(d.side for d in draws) == 44 and max(d.side for d in draws) == 52
    assert min(d.angle for d in draws) == -6 and max(d.angle for d in draws) == 6


@pytest.mark.parametrize("phase", [TRAIN, TEST])
def test_deformed_resize_probability(phase):
    n = 8000
    t = make(phase, crop_size=40, min_side_min=44, min_side_max=52, use_deformed_resize=True,
             deformed_resize_th=0.3)
    rng = np.random.default_rng(5)
    rate = np.mean([t.sample(rng, 60, 61).deformed for _ in range(n)])
    assert abs(rate - 0.7) < 5 * math.sqrt(0.21 / n)  # P(u >= 0.3) = 0.7
    always = make(phase, crop_size=40, min_side_min=44, min_side_max=52,
                  use_deformed_resize=True, deformed_resize_th=0.0)
    assert all(always.sample(np.random.default_rng(s), 60, 61).deformed for s in range(200))


def test_sampling_is_a_pure_function_of_the_generator():
    t = make(TRAIN, crop_size=40, mirror=True, min_side_min=44, min_side_max=52,
             max_rotation_angle=10, use_deformed_resize=True)
    a = [t.sample(np.random.default_rng([9, i]), 60, 60) for i in range(20)]
    b = [t.sample(np.random.default_rng([9, i]), 60, 60) for i in range(20)]
    assert a == b and len(set(a)) > 10


def test_output_shape_like_infer_blob_shape():
    assert make(TRAIN, crop_size=7).output_shape(9, 11, 3) == (3, 7, 7)
    assert make(TEST).output_shape(9, 11, 1) == (1, 9, 11)


def test_transformer_is_picklable(tmp_path):
    import pickle

    t = make(TRAIN, crop_size=4, mean_value=[1.0, 2.0, 3.0])
    clone = pickle.loads(pickle.dumps(t))
    img = np.zeros((9, 11, 3), np.uint8)
    assert np.array_equal(clone.apply(img, Draw(h_off=1)), t.apply(img, Draw(h_off=1)))
    assert os.path.exists(tmp_path)
