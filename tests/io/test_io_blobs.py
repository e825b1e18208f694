"""BlobProto <-> ndarray and mean files (rules of Caffe's Blob::FromProto, src/caffe/blob.cpp)."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest

from caffelike.errors import WeightsError
from caffelike.io import array_to_blob, blob_to_array, read_mean_file, write_mean_file
from caffelike.io.blobs import blob_shape, legacy_shape_fits
from caffelike.proto import caffe_pb2

CORPUS = pathlib.Path(__file__).resolve().parents[1] / "data" / "corpus"
MEANS = ["natanielruiz__net-archive/places205-alexnet/places205CNN_mean.binaryproto",
         "natanielruiz__net-archive/hybrid-cnn-places/hybridCNN_mean.binaryproto"]


def test_shape_field() -> None:
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend([2, 3])
    blob.data.extend(range(6))
    array = blob_to_array(blob)
    assert array.dtype == np.float32 and array.shape == (2, 3)
    assert array[1, 2] == 5


def test_legacy_dims_win_over_shape() -> None:
    # blob.cpp: any of num/channels/height/width present -> 4-D legacy shape
    blob = caffe_pb2.BlobProto(num=1, channels=1, height=2, width=3)
    blob.data.extend(range(6))
    assert blob_shape(blob) == (1, 1, 2, 3)
    assert blob_to_array(blob).shape == (1, 1, 2, 3)


def test_partial_legacy_dims_default_to_zero() -> None:
    blob = caffe_pb2.BlobProto(width=3)
    assert blob_shape(blob) == (0, 0, 0, 3)


def test_double_data_wins() -> None:
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.append(2)
    blob.data.extend([1, 2])
    blob.double_data.extend([0.1, 0.2])
    assert blob_to_array(blob, dtype=None).dtype == np.float64
    np.testing.assert_array_equal(blob_to_array(blob), np.float32([0.1, 0.2]))


def test_scalar_blob() -> None:
    blob = caffe_pb2.BlobProto()
    blob.shape.SetInParent()
    blob.data.append(4.0)
    assert blob_to_array(blob).shape == ()


def test_count_mismatch_is_an_error() -> None:
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend([2, 2])
    blob.data.extend([1, 2, 3])
    with pytest.raises(WeightsError, match=r"holds 3 data values; expected 4"):
        blob_to_array(blob)


def test_diff() -> None:
    blob = array_to_blob(np.ones((2, 2)), diff=np.full((2, 2), 3.0))
    np.testing.assert_array_equal(blob_to_array(blob, diff=True), np.full((2, 2), 3, np.float32))
    assert blob_to_array(array_to_blob(np.ones(2)), diff=True).tolist() == [0, 0]


def test_array_to_blob_round_trip() -> None:
    array = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    blob = array_to_blob(array)
    assert list(blob.shape.dim) == [2, 3, 4] and not blob.HasField("num")
    np.testing.assert_array_equal(blob_to_array(blob), array)
    legacy = array_to_blob(array, legacy_4d=True)
    assert (legacy.num, legacy.channels, legacy.height, legacy.width) == (1, 2, 3, 4)


def test_legacy_shape_fits() -> None:
    # Blob::ShapeEquals: legacy dims compare against the net shape padded with leading 1s
    assert legacy_shape_fits((1, 1, 1, 32), (32,))
    assert legacy_shape_fits((1, 1, 64, 1024), (64, 1024))
    assert not legacy_shape_fits((1, 1, 1, 32), (16, 2))
    assert not legacy_shape_fits((32,), (32,))


@pytest.mark.parametrize("name", MEANS)
def test_real_mean_files(name: str, tmp_path: pathlib.Path) -> None:
    path = CORPUS / name
    mean = read_mean_file(path)
    assert mean.shape == (3, 256, 256) and mean.dtype == np.float32
    blob = caffe_pb2.BlobProto.FromString(path.read_bytes())
    np.testing.assert_array_equal(mean.ravel(), np.asarray(blob.data, np.float32))
    out = tmp_path / "mean.binaryproto"
    write_mean_file(mean, out)
    # written as Caffe's compute_image_mean writes it: legacy num=1 dims + float data
    assert out.read_bytes() == path.read_bytes()


def _write_blob(path: pathlib.Path, blob: caffe_pb2.BlobProto) -> pathlib.Path:
    path.write_bytes(blob.SerializeToString())
    return path


def test_mean_file_is_the_first_image_of_a_4d_blob(tmp_path: pathlib.Path) -> None:
    # DataTransformer (data_transformer.cpp) reads data_mean_ from offset 0 with
    # channels()/height()/width() = axes 1..3, whatever num is
    images = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    legacy = caffe_pb2.BlobProto(num=2, channels=3, height=4, width=5)
    legacy.data.extend(images.ravel().tolist())
    np.testing.assert_array_equal(read_mean_file(_write_blob(tmp_path / "a", legacy)), images[0])
    shaped = caffe_pb2.BlobProto()
    shaped.shape.dim.extend([1, 3, 4, 5])
    shaped.double_data.extend(images[0].ravel().tolist())
    mean = read_mean_file(_write_blob(tmp_path / "b", shaped))
    assert mean.dtype == np.float32
    np.testing.assert_array_equal(mean, images[0])


def test_mean_file_needs_four_axes(tmp_path: pathlib.Path) -> None:
    # Blob::LegacyShape counts axes from the front: a (3, 4, 5) blob would be read as
    # channels 4, height 5, width 1, which no image matches; more than 4 axes is a CHECK failure
    for dims in ([3, 4, 5], [1, 1, 3, 4, 5]):
        blob = caffe_pb2.BlobProto()
        blob.shape.dim.extend(dims)
        blob.data.extend([0.0] * int(np.prod(dims)))
        path = _write_blob(tmp_path / "m.binaryproto", blob)
        with pytest.raises(WeightsError, match=r"m\.binaryproto: mean blob has shape .*leading axis of 1"):
            read_mean_file(path)


def test_mean_file_errors(tmp_path: pathlib.Path) -> None:
    empty = tmp_path / "empty.binaryproto"
    empty.write_bytes(b"")
    with pytest.raises(WeightsError, match=r"empty.binaryproto: not a binary BlobProto"):
        read_mean_file(empty)
    with pytest.raises(WeightsError, match=r"cannot read mean file"):
        read_mean_file(tmp_path / "missing.binaryproto")
    with pytest.raises(WeightsError, match=r"must be \(C, H, W\)"):
        write_mean_file(np.zeros((2, 2)), tmp_path / "x.binaryproto")
