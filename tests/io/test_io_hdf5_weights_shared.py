"""``load_weights`` on an HDF5 weights file whose layer lacks a shared blob.

Caffe's Net::ToHDF5 (src/caffe/net.cpp) writes ``data/<layer>/<i>`` only for the blobs a
layer owns, so a layer sharing blob 0 with an earlier layer has no dataset "0". Such a file
cannot become a plain list of arrays: it is a one-line WeightsError naming file and layer.
"""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from caffelike.errors import WeightsError
from caffelike.io import load_weights


def test_hdf5_weights_with_a_shared_blob_left_out(tmp_path) -> None:
    path = tmp_path / "shared.caffemodel.h5"
    with h5py.File(path, "w") as h5:
        data = h5.create_group("data")
        data.create_group("ip1").create_dataset("0", data=np.ones((2, 3), np.float32))
        data.create_group("ip2").create_dataset("1", data=np.ones((2,), np.float32))
    with pytest.raises(WeightsError) as info:
        load_weights(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: layer 'ip2': blob 0 is not stored")


def test_hdf5_weights_all_blobs_stored(tmp_path) -> None:
    path = tmp_path / "plain.caffemodel.h5"
    with h5py.File(path, "w") as h5:
        group = h5.create_group("data").create_group("ip")
        group.create_dataset("0", data=np.arange(6, dtype=np.float64).reshape(2, 3))
        group.create_dataset("1", data=np.array([7.0, 8.0]))
    weights = load_weights(path)
    assert list(weights) == ["ip"]
    np.testing.assert_array_equal(weights["ip"][0], np.arange(6, dtype=np.float32).reshape(2, 3))
    assert weights["ip"][1].dtype == np.float32
