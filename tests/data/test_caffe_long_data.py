"""The book fork's (Caffe_Long) data layers: ImageSegData, ImageProbData, ImageRegressionData.

Golden: tests/golden/caffe_long/data/<case> (copied from ../shared/golden/caffe_long/data; see
tests/golden/caffe_long/README.md): the fork's batches of a fresh TEST net, run from the case
folder. Tolerances from that README: pixels ``atol = 1.01 * scale`` (JPEG decoders may differ
by one grey level), labels exactly (Prob labels ``rtol = 1e-6``).

TRAIN-phase checks use no Caffe RNG: the image and label map hold the same grey values, so
whatever the random resize, crop and mirror, the label top must equal the data top's first
channel (the fork moves both through one geometry, nearest-neighbour resizes, no blending);
expected values otherwise come from the fork's formulas (data_transformer.cpp).
"""
from __future__ import annotations

import json
import pathlib

import cv2
import numpy as np
import pytest
from google.protobuf import text_format

import caffelike
from caffelike.data.label_maps import resized_size
from caffelike.errors import DataError, LayerError
from caffelike.layers import LAYERS
from caffelike.layers.caffe_long_data import ImageSegData
from caffelike.proto import caffe_pb2

TESTS = pathlib.Path(__file__).resolve().parents[1]
GOLDEN = TESTS / "golden" / "caffe_long" / "data"
CASES = ["ImageSegData__test_crop48_mean", "ImageSegData__test_newhw_bilinear_labels",
         "ImageSegData__test_pad_crop64", "ImageProbData__test_crop48",
         "ImageRegressionData__test_crop40_3floats"]
TYPES = ("ImageSegData", "ImageProbData", "ImageRegressionData")


def _scale(case: pathlib.Path) -> float:
    net = text_format.Parse((case / "net.prototxt").read_text(), caffe_pb2.NetParameter())
    return float(net.layer[0].transform_param.scale)


@pytest.mark.parametrize("type_name", TYPES)
def test_registered_as_data_layers(type_name):
    info = LAYERS.get(type_name)
    assert info.is_data and info.bottoms == (0, 0) and info.tops == (2, 2)


@pytest.mark.parametrize("name", CASES)
def test_golden_batches(name, monkeypatch):
    case = GOLDEN / name
    meta = json.loads((case / "case.json").read_text())
    golden = np.load(case / "data.npz")
    monkeypatch.chdir(case)  # the case's list and image paths are relative to its folder
    net = caffelike.Net("net.prototxt", caffelike.TEST)
    for top, shape in meta["tops"].items():
        assert net.blobs[top].data.shape == tuple(shape)
    atol = 1.01 * _scale(case)
    for b in range(meta["batches"]):
        net.forward()
        np.testing.assert_allclose(net.blobs["data"].data, golden[f"batch{b}/data"], rtol=0, atol=atol)
        label = net.blobs["label"].data
        if meta["type"] == "ImageProbData":
            np.testing.assert_allclose(label, golden[f"batch{b}/label"], rtol=1e-6, atol=0)
        else:
            np.testing.assert_array_equal(label, golden[f"batch{b}/label"])


def test_golden_pad_labels_are_255_and_padded_pixels_0(monkeypatch):
    """Crop 64 > the 60/61-pixel images: bottom/right padding (offset 0), label 255, data 0."""
    golden = np.load(GOLDEN / "ImageSegData__test_pad_crop64" / "data.npz")
    label, data = golden["batch0/label"], golden["batch0/data"]
    assert (label[:, :, 61:, :] == 255).all() and (label[:, :, :, 61:] == 255).all()
    assert (data[:, :, 61:, :] == 0).all()


@pytest.mark.parametrize("workers", [0, 2])
def test_seg_workers_give_the_same_batches(workers, monkeypatch):
    case = GOLDEN / "ImageSegData__test_crop48_mean"
    monkeypatch.chdir(case)
    net = text_format.Parse((case / "net.prototxt").read_text(), caffe_pb2.NetParameter())
    layer = ImageSegData(net.layer[0], [], caffelike.TEST)
    layer.set_num_workers(workers)
    golden = np.load(case / "data.npz")
    try:
        for b in range(2):
            data, label = layer.forward()
            np.testing.assert_allclose(data.numpy(), golden[f"batch{b}/data"], rtol=0, atol=1.01)
            np.testing.assert_array_equal(label.numpy(), golden[f"batch{b}/label"])
    finally:
        layer.close()


# -- TRAIN-phase geometry, pinned without Caffe's RNG ------------------------------------------
VALUES = np.array([0, 1, 2, 7, 40, 200], dtype=np.uint8)


def _write_pairs(folder: pathlib.Path, sizes, seed=0) -> None:
    """PNG images whose three channels equal their label map (values from VALUES only)."""
    rng = np.random.default_rng(seed)
    lines = []
    for i, (h, w) in enumerate(sizes):
        grey = VALUES[rng.integers(len(VALUES), size=(h, w))]
        cv2.imwrite(str(folder / f"im{i}.png"), np.dstack([grey] * 3))
        cv2.imwrite(str(folder / f"lab{i}.png"), grey)
        lines.append(f"im{i}.png lab{i}.png")
    (folder / "list.txt").write_text("\n".join(lines) + "\n")


def _net(folder: pathlib.Path, type_name: str, transform: str, extra: str = "", batch: int = 4,
         phase: str = "TRAIN") -> str:
    text = (f'name: "t"\nlayer {{\n  name: "data"\n  type: "{type_name}"\n  top: "data"\n'
            f'  top: "label"\n  include {{ phase: {phase} }}\n'
            f'  transform_param {{ {transform} }}\n'
            f'  image_data_param {{ source: "list.txt" batch_size: {batch} {extra} }}\n}}\n')
    (folder / "net.prototxt").write_text(text)
    return "net.prototxt"


def _batches(net, n):
    for _ in range(n):
        net.forward()
        yield net.blobs["data"].data.copy(), net.blobs["label"].data.copy()


@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_resize_crop_mirror_move_label_with_image(tmp_path, monkeypatch, phase):
    """The random short-side resize (drawn in TEST too; below crop_size it pads), crop and
    mirror: label == data, except where padded (label 255, data mean - mean = 0)."""
    _write_pairs(tmp_path, [(30, 41), (37, 29), (33, 33), (45, 31), (29, 52)])
    monkeypatch.chdir(tmp_path)
    net = caffelike.Net(_net(tmp_path, "ImageSegData", "crop_size: 24 mirror: true "
                             "min_side_min: 12 min_side_max: 40 mean_value: 0", phase=phase),
                        getattr(caffelike, phase))
    channels_differ = padded = False
    for data, label in _batches(net, 8):
        assert label.shape == (4, 1, 24, 24)
        pad = label[:, 0] == 255
        padded |= bool(pad.any())
        expected = np.where(pad, 0, label[:, 0])
        np.testing.assert_array_equal(expected, data[:, 0])  # one geometry, no blending
        assert np.isin(label[:, 0][~pad], VALUES).all()
        channels_differ |= bool((data[:, 0] != data[:, 1]).any())
    assert not channels_differ and padded  # all channels move together


@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_mirror_flips_image_and_label_alike(tmp_path, monkeypatch, phase):
    """No crop, no resize: each item is its own map or its left-right flip, label and data
    alike; in TEST too (the fork's segmentation transform draws the mirror in every phase)."""
    _write_pairs(tmp_path, [(12, 17)] * 4)
    monkeypatch.chdir(tmp_path)
    grey = [cv2.imread(str(tmp_path / f"lab{i}.png"), cv2.IMREAD_GRAYSCALE) for i in range(4)]
    net = caffelike.Net(_net(tmp_path, "ImageSegData", "mirror: true", phase=phase),
                        getattr(caffelike, phase))
    flips = set()
    for data, label in _batches(net, 8):
        for i in range(4):
            flip = bool((label[i, 0] != grey[i]).any())
            expected = grey[i][:, ::-1] if flip else grey[i]
            np.testing.assert_array_equal(label[i, 0], expected)
            np.testing.assert_array_equal(data[i, 0], expected)
            flips.add(flip)
    assert flips == {True, False}


def test_train_crop_larger_than_image_pads_label_with_255(tmp_path, monkeypatch):
    _write_pairs(tmp_path, [(20, 26), (26, 21)])
    monkeypatch.chdir(tmp_path)
    net = caffelike.Net(_net(tmp_path, "ImageSegData", "crop_size: 30 mirror: true "
                             "mean_value: 10 mean_value: 20 mean_value: 30", batch=2),
                        caffelike.TRAIN)
    for data, label in _batches(net, 4):
        for i, (h, w) in enumerate([(20, 26), (26, 21)]):
            pad = label[i, 0] == 255
            rows, cols = np.nonzero(~pad)
            assert rows.max() == h - 1 and rows.min() == 0  # offset 0: pad rows at the bottom
            assert cols.max() - cols.min() == w - 1 and pad.sum() == 30 * 30 - h * w
            assert (data[i][:, pad] == 0).all()  # padded with the mean, then mean subtracted


def test_train_prob_labels_are_pixels_times_0_0039(tmp_path, monkeypatch):
    _write_pairs(tmp_path, [(30, 34), (31, 30)])
    monkeypatch.chdir(tmp_path)
    net = caffelike.Net(_net(tmp_path, "ImageProbData", "crop_size: 24 mirror: true", batch=2),
                        caffelike.TRAIN)
    for data, label in _batches(net, 3):
        expected = (data[:, :1].astype(np.float64) * 0.0039).astype(np.float32)
        np.testing.assert_array_equal(label, expected)


def test_newhw_resizes_labels_bilinearly(tmp_path, monkeypatch):
    """The fork reads the label map with ReadImageToCVMat(new_height, new_width): cv::resize's
    default bilinear interpolation, so labels blend (golden ImageSegData__test_newhw_bilinear_labels)."""
    _write_pairs(tmp_path, [(30, 34)])
    monkeypatch.chdir(tmp_path)
    net = caffelike.Net(_net(tmp_path, "ImageSegData", "", "new_height: 17 new_width: 23", batch=1,
                             phase="TEST"), caffelike.TEST)
    net.forward()
    grey = cv2.imread(str(tmp_path / "lab0.png"), cv2.IMREAD_GRAYSCALE)
    expected = cv2.resize(grey, (23, 17), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(net.blobs["label"].data[0, 0], expected)
    assert not np.isin(net.blobs["label"].data, VALUES).all()


@pytest.mark.parametrize("hw, side, expected", [
    ((60, 61), 52, (52, int(np.float32(61) * (np.float32(52) / np.float32(60))))),
    ((61, 60), 52, (int(np.float32(61) * (np.float32(52) / np.float32(60))), 52)),
    ((60, 60), 52, (int(np.float32(60) * (np.float32(52) / np.float32(60))), 52)),
    ((100, 150), 64, (64, int(np.float32(150) * (np.float32(64) / np.float32(100))))),
])
def test_short_side_size_is_the_forks_truncated_float_formula(hw, side, expected):
    assert resized_size(*hw, side) == expected


# -- bad input -------------------------------------------------------------------------------
def _error(tmp_path, monkeypatch, type_name, lines, transform="crop_size: 8", extra="",
           phase="TEST", exc=DataError):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    path = _net(tmp_path, type_name, transform, extra, batch=2, phase=phase)
    with pytest.raises(exc) as info:
        net = caffelike.Net(path, caffelike.TRAIN if phase == "TRAIN" else caffelike.TEST)
        for _ in range(3):
            net.forward()
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.fixture
def pairs(tmp_path):
    _write_pairs(tmp_path, [(12, 12), (12, 12), (14, 12)])
    return tmp_path


def test_missing_image_names_list_line(pairs, monkeypatch):
    message = _error(pairs, monkeypatch, "ImageSegData",
                     ["im0.png lab0.png", "im1.png lab1.png", "nope.png lab2.png"])
    assert message.startswith("list.txt:3: layer 'data' (ImageSegData): cannot read image 'nope.png'")
    assert "no such file" in message


def test_missing_label_map_names_list_line(pairs, monkeypatch):
    message = _error(pairs, monkeypatch, "ImageProbData", ["im0.png lab0.png", "im1.png nolabel.png"])
    assert message.startswith("list.txt:2: layer 'data' (ImageProbData): cannot read label map "
                              "'nolabel.png'")


def test_first_line_missing_image_fails_at_set_up(pairs, monkeypatch):
    message = _error(pairs, monkeypatch, "ImageSegData", ["gone.png lab0.png", "im1.png lab1.png"])
    assert message.startswith("list.txt:1: layer 'data' (ImageSegData): cannot read image 'gone.png'")


@pytest.mark.parametrize("bad", ["im1.png", "im1.png lab1.png extra.png"])
def test_seg_line_with_wrong_field_count(pairs, monkeypatch, bad):
    message = _error(pairs, monkeypatch, "ImageSegData", ["im0.png lab0.png", "", bad])
    assert message.startswith("list.txt:3: layer 'data' (ImageSegData): expected 'image labelmap' "
                              "(2 fields)")


def test_label_map_of_another_size(pairs, monkeypatch):
    message = _error(pairs, monkeypatch, "ImageSegData", ["im0.png lab0.png", "im1.png lab2.png"])
    assert message.startswith("list.txt:2: layer 'data' (ImageSegData): label map 'lab2.png' is "
                              "14x12 but its image is 12x12")


def test_images_of_another_size_without_crop(pairs, monkeypatch):
    message = _error(pairs, monkeypatch, "ImageSegData",
                     ["im0.png lab0.png", "im2.png lab2.png"], transform="")
    assert message.startswith("list.txt:2: layer 'data' (ImageSegData): image 'im2.png' gives 14x12")


def test_padding_needs_mean_values(pairs, monkeypatch):
    message = _error(pairs, monkeypatch, "ImageSegData", ["im0.png lab0.png"],
                     transform="crop_size: 16 mean_value: 1 mean_value: 2")
    assert message.startswith("list.txt:1: layer 'data' (ImageSegData): image 'im0.png' of 12x12 "
                              "(after any resize) is padded up to crop_size 16")


def test_test_phase_resize_without_mirror_is_refused(pairs, monkeypatch):
    """The fork aborts (Check failed: rng_): the resize draws its size even in TEST."""
    message = _error(pairs, monkeypatch, "ImageSegData", ["im0.png lab0.png"],
                     transform="crop_size: 8 min_side_min: 8 min_side_max: 10", exc=LayerError)
    assert "layer 'data' (ImageSegData)" in message and "rng_" in message


@pytest.mark.parametrize("line, fragment", [
    ("im1.png 1.5 2", "expected 'image' and 3 float targets (label_size), got 2 targets"),
    ("im1.png 1.5 2 x3", "target 'x3' is not a number"),
    ("im1.png 1 2 3 4", "got 4 targets; the first line has 3"),
])
def test_regression_line_errors(pairs, monkeypatch, line, fragment):
    message = _error(pairs, monkeypatch, "ImageRegressionData", ["im0.png 0.5 -1 2e1", line],
                     extra="label_size: 3")
    assert message.startswith("list.txt:2: layer 'data' (ImageRegressionData): ")
    assert fragment in message


def test_regression_missing_image_names_list_line(pairs, monkeypatch):
    message = _error(pairs, monkeypatch, "ImageRegressionData",
                     ["im0.png 0.5", "missing.png 1.5"], extra="label_size: 1")
    assert message.startswith("list.txt:2: layer 'data' (ImageRegressionData): cannot read image "
                              "'missing.png'")


def test_regression_targets_are_floats_as_parsed(pairs, monkeypatch):
    monkeypatch.chdir(pairs)
    (pairs / "list.txt").write_text("im0.png 0.5 -1 2e1 9\nim1.png -0 .25 3 9\n")
    net = caffelike.Net(_net(pairs, "ImageRegressionData", "", "label_size: 3", batch=3,
                             phase="TEST"), caffelike.TEST)
    net.forward()
    assert net.blobs["label"].data.shape == (3, 3, 1, 1)
    np.testing.assert_array_equal(net.blobs["label"].data[:, :, 0, 0],
                                  np.float32([[0.5, -1, 20], [-0.0, 0.25, 3], [0.5, -1, 20]]))


# -- TRAIN-phase contrast/brightness and colour shift (image only) -------------------------------
def test_train_colour_augmentations_touch_the_image_only(tmp_path, monkeypatch):
    _write_pairs(tmp_path, [(30, 34), (31, 30), (33, 36), (30, 30)])
    monkeypatch.chdir(tmp_path)
    net = caffelike.Net(_net(tmp_path, "ImageSegData", "crop_size: 24 mirror: true "
                             "contrast_brightness_adjustment: true max_color_shift: 30 "
                             "apply_probability: 1"), caffelike.TRAIN)
    changed = False
    for data, label in _batches(net, 4):
        assert np.isin(label, VALUES).all()  # labels keep their values
        for i in range(4):
            for c in range(3):  # the same grey value maps to the same pixel value: one geometry
                for v in np.unique(label[i, 0]):
                    assert len(np.unique(data[i, c][label[i, 0] == v])) == 1
            changed |= bool((data[i, 0] != label[i, 0]).any())
    assert changed


def test_contrast_and_shift_saturate_as_opencv():
    from caffelike.data.label_maps import SegDraw, adjust_colours

    img = np.random.default_rng(3).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    np.testing.assert_array_equal(adjust_colours(img, SegDraw(contrast=(1.13, 4))),
                                  cv2.convertScaleAbs(img, alpha=1.13, beta=4))
    np.testing.assert_array_equal(adjust_colours(img, SegDraw(shift=(3, 20, 7))),
                                  cv2.add(img, (3, 20, 7, 0)))
    np.testing.assert_array_equal(adjust_colours(img, SegDraw(shift=(-3, -20, -7))),
                                  cv2.subtract(img, (3, 20, 7, 0)))


def test_train_colour_augmentations_need_the_forks_generator(pairs, monkeypatch):
    message = _error(pairs, monkeypatch, "ImageProbData", ["im0.png lab0.png"],
                     transform="max_color_shift: 10", phase="TRAIN", exc=LayerError)
    assert "layer 'data' (ImageProbData)" in message and "rng_" in message


def test_deformed_resize_threshold_defaults_to_the_forks_2():
    from caffelike.data.label_maps import SegGeometry

    param = text_format.Parse("use_deformed_resize: true min_side_min: 20 min_side_max: 30",
                              caffe_pb2.TransformationParameter())
    seg = SegGeometry.from_param(param, caffelike.TRAIN)
    assert seg.deformed_th == 2.0
    rng = np.random.default_rng(0)
    sizes = {seg.sample(rng, 40, 50).size for _ in range(50)}
    assert all(h != w for h, w in sizes)  # keep-aspect resizes only: never the s x s one
    param.deformed_resize_th = 0.0
    sizes = {SegGeometry.from_param(param, caffelike.TRAIN).sample(rng, 40, 50).size for _ in range(20)}
    assert all(h == w for h, w in sizes)
