"""caffelike.io's pycaffe helpers, against pycaffe's documented behaviour (python/caffe/io.py,
python/caffe/test/test_io.py) and the book's mouth images."""
from __future__ import annotations

import pathlib

import cv2
import numpy as np
import pytest

import caffelike as caffe
from caffelike.io import pycaffe_io as cio

ROOT = pathlib.Path(__file__).resolve().parents[2]
MOUTH = ROOT / "data" / "mouth"
MEAN = np.array([104.008, 116.669, 122.675])


# --- proto conversions (python/caffe/test/test_io.py) -------------------------------------

def test_blobproto_old_and_new_format() -> None:
    blob = caffe.proto.caffe_pb2.BlobProto()
    blob.data.extend(np.arange(100.0).tolist())
    blob.num, blob.channels, blob.height, blob.width = (1, 1, 10, 10)
    assert caffe.io.blobproto_to_array(blob).shape == (1, 1, 10, 10)
    blob = caffe.proto.caffe_pb2.BlobProto()
    blob.data.extend(np.arange(100.0).tolist())
    blob.shape.dim.extend([10, 10])
    arr = caffe.io.blobproto_to_array(blob)
    assert arr.shape == (10, 10) and arr[3, 4] == 34.0


def test_blobproto_no_shape_and_scalar() -> None:
    blob = caffe.proto.caffe_pb2.BlobProto()
    blob.data.extend([0.0] * 100)
    with pytest.raises(ValueError):
        caffe.io.blobproto_to_array(blob)
    blob = caffe.proto.caffe_pb2.BlobProto()
    blob.data.append(123.0)
    assert caffe.io.blobproto_to_array(blob) == 123


def test_array_blobproto_round_trip_with_diff() -> None:
    a = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    blob = caffe.io.array_to_blobproto(a, diff=2 * a)
    assert list(blob.shape.dim) == [2, 3, 4]
    np.testing.assert_array_equal(caffe.io.blobproto_to_array(blob), a)
    np.testing.assert_array_equal(caffe.io.blobproto_to_array(blob, return_diff=True), 2 * a)
    s = caffe.io.arraylist_to_blobprotovector_str([a, a[0]])
    back = caffe.io.blobprotovector_str_to_arraylist(s)
    assert [b.shape for b in back] == [(2, 3, 4), (3, 4)]


def test_datum_round_trip_and_label_size() -> None:
    u8 = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    d = caffe.io.array_to_datum(u8, label=1)
    assert (d.channels, d.height, d.width, d.label) == (2, 3, 4, 1) and len(d.data) == 24
    out = caffe.io.datum_to_array(d)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, u8)
    f = caffe.io.array_to_datum(np.ones((10, 10, 3)))
    assert len(f.float_data) == 300 and not f.data
    assert caffe.io.datum_to_array(f).shape == (10, 10, 3)
    d1 = caffe.io.array_to_datum(np.ones((10, 10, 3)), label=1)
    assert len(d1.SerializeToString()) > len(f.SerializeToString())
    with pytest.raises(ValueError):
        caffe.io.array_to_datum(np.ones((3, 3)))


# --- images -------------------------------------------------------------------------------

def test_load_image_rgb_float_in_unit_range() -> None:
    path = MOUTH / "1" / "46smile.jpg"
    img = caffe.io.load_image(str(path))
    bgr = cv2.imread(str(path))
    assert img.dtype == np.float32 and img.shape == bgr.shape
    np.testing.assert_allclose(img, bgr[:, :, ::-1] / 255.0, atol=1e-7)
    gray = caffe.io.load_image(str(path), color=False)
    assert gray.shape == bgr.shape[:2] + (1,)
    # skimage's rgb2gray weights (0.2125, 0.7154, 0.0721), as pycaffe's as_grey loading
    expect = (bgr[:, :, ::-1] / 255.0) @ np.array([0.2125, 0.7154, 0.0721])
    np.testing.assert_allclose(gray[:, :, 0], expect, atol=1e-6)


def test_load_image_gray_png_tiles_to_rgb(tmp_path: pathlib.Path) -> None:
    g = (np.arange(20, dtype=np.uint8) * 10).reshape(4, 5)
    cv2.imwrite(str(tmp_path / "g.png"), g)
    img = caffe.io.load_image(str(tmp_path / "g.png"))
    assert img.shape == (4, 5, 3)
    np.testing.assert_allclose(img[:, :, 1], g / 255.0, atol=1e-7)


def test_load_image_missing_file_is_user_error(tmp_path: pathlib.Path) -> None:
    from caffelike.errors import DataError
    with pytest.raises(DataError, match="nope.jpg"):
        caffe.io.load_image(str(tmp_path / "nope.jpg"))


def test_resize_image_shapes_and_constant() -> None:
    im = np.random.default_rng(1).random((60, 61, 3)).astype(np.float32)
    out = caffe.io.resize_image(im, (48, 48))
    assert out.shape == (48, 48, 3) and out.dtype == np.float32
    assert im.min() <= out.min() and out.max() <= im.max()
    wide = np.random.default_rng(1).random((6, 6, 7)).astype(np.float32)
    assert caffe.io.resize_image(wide, (3, 4)).shape == (3, 4, 7)
    const = np.full((5, 5, 1), 0.25, np.float32)
    np.testing.assert_array_equal(caffe.io.resize_image(const, (2, 3)), np.full((2, 3, 1), 0.25))
    # order 0 = nearest neighbour: upsampling by 2 repeats every pixel
    small = np.arange(4, dtype=np.float32).reshape(2, 2, 1)
    np.testing.assert_array_equal(caffe.io.resize_image(small, (4, 4), interp_order=0)[:, :, 0],
                                  np.repeat(np.repeat(small[:, :, 0], 2, 0), 2, 1))


def test_oversample_corners_centre_mirrors() -> None:
    im = np.arange(5 * 6 * 2, dtype=np.float32).reshape(5, 6, 2)
    crops = caffe.io.oversample([im, im + 1000], (3, 4))
    assert crops.shape == (20, 3, 4, 2)
    # python/caffe/io.py: corners (0,0), (0,W-w), (H-h,0), (H-h,W-w), then the centre box
    expect = [im[0:3, 0:4], im[0:3, 2:6], im[2:5, 0:4], im[2:5, 2:6], im[1:4, 1:5]]
    for k, e in enumerate(expect):
        np.testing.assert_array_equal(crops[k], e)
        np.testing.assert_array_equal(crops[k + 5], e[:, ::-1])
    np.testing.assert_array_equal(crops[10], im[0:3, 0:4] + 1000)


# --- Transformer ----------------------------------------------------------------------------

def test_transformer_book_flow_on_a_mouth_image() -> None:
    """The book's start_test preprocessing: cv2 BGR image, nearest resize to 48, mean, HWC->CHW."""
    img = cv2.imread(str(MOUTH / "1" / "46smile.jpg"))
    img = cv2.resize(img, (48, 48), interpolation=cv2.INTER_NEAREST)
    t = caffe.io.Transformer({"data": (1, 3, 48, 48)})
    t.set_mean("data", MEAN)
    t.set_transpose("data", (2, 0, 1))
    out = t.preprocess("data", img)
    assert out.shape == (3, 48, 48) and out.dtype == np.float32
    expect = img.astype(np.float32).transpose(2, 0, 1) - MEAN[:, None, None].astype(np.float64)
    np.testing.assert_allclose(out, expect, rtol=0, atol=1e-4)
    back = t.deprocess("data", out)
    np.testing.assert_allclose(back, img, atol=1e-3)


def test_transformer_order_of_steps() -> None:
    """preprocess = transpose, channel swap, raw scale, mean, input scale (python/caffe/io.py)."""
    rng = np.random.default_rng(2)
    img = rng.random((4, 5, 3)).astype(np.float32)
    mean = np.array([10.0, 20.0, 30.0])
    t = caffe.io.Transformer({"data": [2, 3, 4, 5]})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255.0)
    t.set_mean("data", mean)
    t.set_input_scale("data", 0.5)
    out = t.preprocess("data", img)
    expect = ((img.transpose(2, 0, 1)[[2, 1, 0]] * 255.0) - mean[:, None, None]) * 0.5
    np.testing.assert_allclose(out, expect, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(t.deprocess("data", out), img, atol=1e-5)
    assert img.max() <= 1.0  # the caller's array is untouched


def test_transformer_resizes_and_elementwise_mean() -> None:
    t = caffe.io.Transformer({"data": (1, 3, 8, 8)})
    t.set_transpose("data", (2, 0, 1))
    mean = np.stack([np.full((16, 16), v) for v in (1.0, 2.0, 3.0)])
    t.set_mean("data", mean)  # resized to 8x8 (normalised, resized, rescaled)
    assert t.mean["data"].shape == (3, 8, 8)
    out = t.preprocess("data", np.zeros((20, 10, 3), np.float32))
    assert out.shape == (3, 8, 8)
    np.testing.assert_allclose(out[:, 0, 0], [-1.0, -2.0, -3.0], atol=1e-5)


def test_transformer_errors() -> None:
    t = caffe.io.Transformer({"data": (1, 3, 8, 8)})
    with pytest.raises(Exception, match="not one of the net inputs"):
        t.preprocess("image", np.zeros((8, 8, 3)))
    with pytest.raises(Exception, match="Transpose|transpose"):
        t.set_transpose("data", (1, 0))
    with pytest.raises(Exception, match="channel"):
        t.set_channel_swap("data", (1, 0))
    with pytest.raises(Exception, match="mean"):
        t.set_mean("data", np.zeros(4))
