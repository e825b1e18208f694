"""The forks' image + label-map list layers (issue 16): SegNet's DenseImageData
(alexgkendall/caffe-segnet dense_image_data_layer.cpp, ENet's label_divide_factor from
TimoSaemann/caffe-enet) and HED's ImageLabelmapData (s9xie/hed image_labelmap_data_layer.cpp).

Oracles: the forks' sources (OpenCV reads and resizes: bilinear for images, nearest neighbour
for SegNet's labels; HED's ``gt / 255`` rounded by OpenCV), applied here with cv2 directly.
Random mirror/crop are checked through label maps built from their images, so that a shared
geometry is visible whatever the draw.
"""
from __future__ import annotations

import pathlib

import cv2
import numpy as np
import pytest

import caffelike
from caffelike.errors import DataError, LayerError

DENSE = """name: "dense"
layer {{ name: "data" type: "DenseImageData" top: "data" top: "label"
  {transform}
  dense_image_data_param {{ source: "{source}" root_folder: "{root}/" batch_size: {batch} {extra} }} }}
"""
HED = """name: "hed"
layer {{ name: "data" type: "ImageLabelmapData" top: "data" top: "label"
  {transform}
  image_data_param {{ source: "{source}" root_folder: "{root}/" batch_size: {batch} {extra} }} }}
"""


def _write(tmp: pathlib.Path, sizes, label_of=None, seed: int = 0) -> pathlib.Path:
    """Images i.png and label maps i_l.png of the given sizes, and list.txt naming them."""
    rng = np.random.default_rng(seed)
    lines = []
    for i, (h, w) in enumerate(sizes):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        lab = label_of(img) if label_of else rng.integers(0, 11, (h, w), dtype=np.uint8)
        cv2.imwrite(str(tmp / f"{i}.png"), img)
        cv2.imwrite(str(tmp / f"{i}_l.png"), lab)
        lines.append(f"{i}.png {i}_l.png")
    (tmp / "list.txt").write_text("\n".join(lines) + "\n")
    return tmp / "list.txt"


def _net(tmp: pathlib.Path, template: str, phase=caffelike.TEST, batch: int = 2, extra: str = "",
         transform: str = "", source: pathlib.Path | None = None) -> caffelike.Net:
    path = tmp / "net.prototxt"
    path.write_text(template.format(source=source or tmp / "list.txt", root=tmp, batch=batch,
                                    extra=extra, transform=transform))
    return caffelike.Net(str(path), phase)


def _forward(net: caffelike.Net) -> tuple[np.ndarray, np.ndarray]:
    out = net.forward()
    return np.array(out["data"]), np.array(out["label"])


def test_dense_reads_images_and_label_pixels(tmp_path: pathlib.Path) -> None:
    _write(tmp_path, [(6, 8), (6, 8)])
    net = _net(tmp_path, DENSE, transform="transform_param { mean_value: 10 mean_value: 20 mean_value: 30 scale: 0.5 }")
    data, label = _forward(net)
    assert data.shape == (2, 3, 6, 8) and label.shape == (2, 1, 6, 8)
    for i in range(2):
        img = cv2.imread(str(tmp_path / f"{i}.png")).astype(np.float32)
        np.testing.assert_allclose(data[i], ((img - [10, 20, 30]) * 0.5).transpose(2, 0, 1))
        # labels: pixel values, no mean and no scale (Transform(..., preserve_pixel_vals))
        np.testing.assert_array_equal(label[i, 0], cv2.imread(str(tmp_path / f"{i}_l.png"), 0))


def test_dense_resizes_image_bilinear_and_label_nearest(tmp_path: pathlib.Path) -> None:
    _write(tmp_path, [(9, 7), (9, 7)])
    data, label = _forward(_net(tmp_path, DENSE, extra="new_height: 5 new_width: 4"))
    img = cv2.imread(str(tmp_path / "0.png"))
    lab = cv2.imread(str(tmp_path / "0_l.png"), 0)
    np.testing.assert_array_equal(data[0], cv2.resize(img, (4, 5), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1))
    np.testing.assert_array_equal(label[0, 0], cv2.resize(lab, (4, 5), interpolation=cv2.INTER_NEAREST))


def test_enet_label_divide_factor_shrinks_the_label(tmp_path: pathlib.Path) -> None:
    _write(tmp_path, [(16, 24)])
    data, label = _forward(_net(tmp_path, DENSE, batch=1, extra="new_height: 16 new_width: 24 label_divide_factor: 4"))
    assert data.shape == (1, 3, 16, 24) and label.shape == (1, 1, 4, 6)
    lab = cv2.imread(str(tmp_path / "0_l.png"), 0)
    np.testing.assert_array_equal(label[0, 0], cv2.resize(lab, (6, 4), interpolation=cv2.INTER_NEAREST))


@pytest.mark.parametrize("phase", [caffelike.TRAIN, caffelike.TEST])
def test_dense_mirror_and_crop_move_image_and_label_together(tmp_path: pathlib.Path, phase) -> None:
    _write(tmp_path, [(10, 12)] * 4, label_of=lambda img: img[:, :, 1] % 11)
    net = _net(tmp_path, DENSE, phase, batch=4, extra="mirror: true crop_height: 5 crop_width: 7 shuffle: true")
    seen = set()
    for _ in range(3):
        data, label = _forward(net)
        assert data.shape == (4, 3, 5, 7) and label.shape == (4, 1, 5, 7)
        np.testing.assert_array_equal(label[:, 0], data[:, 1] % 11)
        for i in range(4):
            seen.add(data[i].tobytes())
    assert len(seen) > 4  # random windows/flips in every phase (SegNet draws them in TEST too)


def test_dense_batch_of_one_takes_any_size(tmp_path: pathlib.Path) -> None:
    _write(tmp_path, [(6, 8), (5, 9)])
    net = _net(tmp_path, DENSE, batch=1)
    shapes = [tuple(a.shape) for a in _forward(net)] + [tuple(a.shape) for a in _forward(net)]
    assert shapes == [(1, 3, 6, 8), (1, 1, 6, 8), (1, 3, 5, 9), (1, 1, 5, 9)]


def test_dense_missing_list_names_the_list(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(DataError, match=f"cannot open image list '{missing}'") as info:
        _net(tmp_path, DENSE, source=missing)
    assert "layer 'data' (DenseImageData)" in str(info.value)


def test_dense_missing_image_names_list_file_and_line(tmp_path: pathlib.Path) -> None:
    _write(tmp_path, [(6, 8), (6, 8)])
    (tmp_path / "list.txt").write_text("0.png 0_l.png\n\ngone.png 1_l.png\n")
    net = _net(tmp_path, DENSE, batch=2)
    with pytest.raises(DataError) as info:
        net.forward()
    assert str(info.value).startswith(f"{tmp_path / 'list.txt'}:3: layer 'data' (DenseImageData): cannot read image")
    assert "gone.png" in str(info.value)


def test_dense_refuses_transform_mirror_and_three_fields_a_line(tmp_path: pathlib.Path) -> None:
    _write(tmp_path, [(6, 8)])
    with pytest.raises(LayerError, match="transform_param mirror/crop_size would move the image without its label"):
        _net(tmp_path, DENSE, transform="transform_param { mirror: true }")
    (tmp_path / "list.txt").write_text("0.png 0_l.png extra\n")
    with pytest.raises(DataError, match=r"list.txt:1: .*expected 'image labelmap' \(2 fields\), got 3"):
        _net(tmp_path, DENSE)


def test_hed_labels_are_edges_from_128(tmp_path: pathlib.Path) -> None:
    _write(tmp_path, [(6, 8)], label_of=lambda img: img[:, :, 0])
    data, label = _forward(_net(tmp_path, HED, batch=1, transform="transform_param { mean_value: 104 mean_value: 117 mean_value: 123 }"))
    img = cv2.imread(str(tmp_path / "0.png")).astype(np.float32)
    np.testing.assert_allclose(data[0], (img - [104, 117, 123]).transpose(2, 0, 1))
    gt = cv2.imread(str(tmp_path / "0_l.png"), 0)
    # HED's `cv_gt / 255` on a uint8 Mat: OpenCV rounds the quotient (saturate_cast)
    expected = cv2.divide(gt, np.full_like(gt, 255))
    np.testing.assert_array_equal(label[0, 0], expected)
    assert set(np.unique(label)) <= {0.0, 1.0}


def test_hed_resize_then_transformer_crop_and_mirror_shared(tmp_path: pathlib.Path) -> None:
    _write(tmp_path, [(12, 14)] * 3, label_of=lambda img: np.where(img[:, :, 2] >= 128, 255, 0).astype(np.uint8))
    net = _net(tmp_path, HED, caffelike.TRAIN, batch=3, extra="new_height: 11 new_width: 13",
               transform="transform_param { mirror: true crop_size: 6 }")
    data, label = _forward(net)
    assert data.shape == (3, 3, 6, 6) and label.shape == (3, 1, 6, 6)
    # bilinear resize of a 0/255 map and of the image's red channel, then the same crop/flip
    red = data[:, 2]
    for i in range(3):
        img = cv2.resize(cv2.imread(str(tmp_path / f"{i}.png")), (13, 11))
        gt = cv2.resize(cv2.imread(str(tmp_path / f"{i}_l.png"), 0), (13, 11))
        windows = [(y, x, flip) for y in range(6) for x in range(8) for flip in (False, True)
                   if np.array_equal(red[i], (img[y:y + 6, x:x + 6, 2][:, ::-1] if flip else img[y:y + 6, x:x + 6, 2]))]
        assert windows, "the data is a window of the resized image"
        y, x, flip = windows[0]
        edge = (gt[y:y + 6, x:x + 6] >= 128).astype(np.float32)
        np.testing.assert_array_equal(label[i, 0], edge[:, ::-1] if flip else edge)


def test_hed_missing_label_map_names_list_line(tmp_path: pathlib.Path) -> None:
    _write(tmp_path, [(6, 8)])
    (tmp_path / "list.txt").write_text("0.png missing_l.png\n")
    with pytest.raises(DataError) as info:
        _net(tmp_path, HED, batch=1)
    assert str(info.value).startswith(f"{tmp_path / 'list.txt'}:1: layer 'data' (ImageLabelmapData): cannot read label map")
