"""WindowData: the R-CNN window file format and Caffe's window sampling (window_data_layer.cpp:
batch = (batch_size - num_fg) background windows then num_fg foreground ones, each window
cv::resize'd (bilinear) to crop_size, (pixel - mean) * window_data_param.scale)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from google.protobuf import text_format

from caffelike.errors import DataError, LayerError
from caffelike.layers.data import WindowData
from caffelike.proto import caffe_pb2

TRAIN = caffe_pb2.TRAIN


@pytest.fixture
def window_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    img = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    cv2.imwrite("a.png", img)
    (tmp_path / "windows.txt").write_text(
        "# 0\na.png\n3\n30\n40\n3\n"
        "2 0.9 5 4 24 20\n"    # foreground, class 2
        "1 0.3 0 0 9 9\n"      # background (overlap < 0.5)
        "1 0.45 30 20 39 29\n"  # background
    )
    return img


def window_layer(extra: str = "", transform: str = "crop_size: 8", batch: int = 8) -> WindowData:
    p = text_format.Parse(
        f'name: "w" type: "WindowData" top: "data" top: "label" '
        f'window_data_param {{ source: "windows.txt" batch_size: {batch} fg_fraction: 0.25 {extra} }} '
        f'transform_param {{ {transform} }}', caffe_pb2.LayerParameter())
    return WindowData(p, [], TRAIN)


def test_batch_holds_background_then_foreground(window_file):
    layer = window_layer()
    assert layer.top_shapes([]) == [(8, 3, 8, 8), (8,)]
    data, label = layer.forward()
    assert label.tolist() == [0.0] * 6 + [2.0] * 2  # num_fg = int(8 * 0.25) = 2


def test_warp_crop_values(window_file):
    layer = window_layer(extra="scale: 0.5", transform="crop_size: 8 mean_value: 10 mean_value: 20 mean_value: 30")
    data, label = layer.forward()
    roi = window_file[4:21, 5:25]  # the foreground box, corners inclusive
    warped = cv2.resize(roi, (8, 8), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    want = ((warped - np.array([10, 20, 30], np.float32)) * np.float32(0.5)).transpose(2, 0, 1)
    np.testing.assert_array_equal(data[7].numpy(), want)


def test_context_pad_outside_the_image_stays_zero(window_file):
    layer = window_layer(extra="context_pad: 2")
    data, label = layer.forward()
    # each background window grows past a corner of the image, and that border stays 0:
    # (0, 0, 9, 9) past the top-left one, (30, 20, 39, 29) past the bottom-right one
    backgrounds = [d for d, lab in zip(data.numpy(), label.tolist()) if lab == 0]
    assert len(backgrounds) == 6
    for d in backgrounds:
        top_left = (d[:, 0, :] == 0).all() and (d[:, :, 0] == 0).all()
        bottom_right = (d[:, -1, :] == 0).all() and (d[:, :, -1] == 0).all()
        assert top_left != bottom_right and d[:, 4, 4].any()


def test_window_file_errors(window_file, tmp_path):
    (tmp_path / "windows.txt").write_text("# 0\na.png\n3\n30\n40\n1\n0 0.9 1 1 5 5\n")
    with pytest.raises(DataError, match=r"^windows\.txt:7: layer 'w' \(WindowData\): foreground window .* has class 0"):
        window_layer()
    (tmp_path / "windows.txt").write_text("# 0\na.png\n3\n30\n40\n2\n1 0.9 1 1 5 5\n")
    with pytest.raises(DataError, match=r"windows\.txt:7: .*file ends where a window line was expected"):
        window_layer()
    (tmp_path / "windows.txt").write_text("# 0\nmissing.png\n3\n30\n40\n2\n1 0.9 1 1 5 5\n0 0.1 1 1 5 5\n")
    with pytest.raises(DataError, match="cannot read image 'missing.png'"):
        window_layer().forward()
    with pytest.raises(LayerError, match="needs transform_param.crop_size"):
        window_layer(transform="")
