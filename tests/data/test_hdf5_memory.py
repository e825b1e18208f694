"""HDF5Data, HDF5Output and MemoryData: order, wrap-around, shuffle, shards, errors.

Semantics from Caffe's hdf5_data_layer.cpp (rows of the datasets named by the tops, files in
list order, shuffle = file order and rows permuted, wrap to the first file), hdf5_output_layer
(datasets "data" and "label") and memory_data_layer.cpp (batches of the arrays, wrapping,
count a multiple of batch_size, no transform).
"""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from google.protobuf import text_format

from caffelike.errors import DataError, LayerError
from caffelike.layers import LAYERS
from caffelike.layers.data import HDF5Data, HDF5Output, MemoryData
from caffelike.proto import caffe_pb2

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST


def param(text: str) -> caffe_pb2.LayerParameter:
    return text_format.Parse(text, caffe_pb2.LayerParameter())


@pytest.fixture
def h5_list(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for f, rows in enumerate((4, 3)):
        ids = np.arange(rows) + 10 * f
        with h5py.File(f"part{f}.h5", "w") as h5:
            h5["data"] = np.repeat(ids[:, None, None], 6, axis=1).reshape(rows, 2, 3).astype(np.float64)
            h5["label"] = ids.astype(np.int32)
    (tmp_path / "list.txt").write_text("part0.h5\npart1.h5\n")
    return "list.txt"


def hdf5(source: str, batch: int, extra: str = "") -> caffe_pb2.LayerParameter:
    return param(f'name: "h" type: "HDF5Data" top: "data" top: "label" '
                 f'hdf5_data_param {{ source: "{source}" batch_size: {batch} {extra} }}')


def test_rows_in_file_order_with_wrap(h5_list):
    layer = HDF5Data(hdf5(h5_list, 3), [], TRAIN)
    assert layer.top_shapes([]) == [(3, 2, 3), (3,)]
    labels = []
    for _ in range(4):
        data, label = layer.forward()
        assert data.dtype == torch.float32
        assert torch.equal(data[:, 0, 0], label)
        labels += label.int().tolist()
    assert labels == [0, 1, 2, 3, 10, 11, 12, 0, 1, 2, 3, 10]


def test_shuffle_keeps_files_contiguous(h5_list):
    layer = HDF5Data(hdf5(h5_list, 7, "shuffle: true"), [], TRAIN)
    layer.set_seed(4)
    passes = [layer.forward()[1].int().tolist() for _ in range(3)]
    for labels in passes:
        assert sorted(labels) == [0, 1, 2, 3, 10, 11, 12]
        first_file = [x < 10 for x in labels]
        assert first_file in ([True] * 4 + [False] * 3, [False] * 3 + [True] * 4)
    assert len({tuple(p) for p in passes}) > 1


def test_shards_and_workers(h5_list):
    got = []
    for rank in range(2):
        layer = HDF5Data(hdf5(h5_list, 2), [], TRAIN)
        layer.set_shard(rank, 2)
        layer.set_num_workers(1)
        got.append(layer.forward()[1].int().tolist() + layer.forward()[1].int().tolist())
        layer.close()
    assert got == [[0, 2, 10, 12], [1, 3, 11, 0]]


def test_hdf5_errors(tmp_path, monkeypatch, h5_list):
    (tmp_path / "bad.txt").write_text("part0.h5\nmissing.h5\n")
    with pytest.raises(DataError, match=r"^bad\.txt:2: layer 'h' \(HDF5Data\): cannot open HDF5 file 'missing\.h5'"):
        HDF5Data(hdf5("bad.txt", 2), [], TRAIN)
    with pytest.raises(DataError, match=r"^nolist\.txt: layer 'h' \(HDF5Data\): cannot open HDF5 file list"):
        HDF5Data(hdf5("nolist.txt", 2), [], TRAIN)
    p = param('name: "h" type: "HDF5Data" top: "data" top: "weights" '
              'hdf5_data_param { source: "list.txt" batch_size: 2 }')
    with pytest.raises(DataError, match=r"list\.txt:1: .*has no dataset 'weights'"):
        HDF5Data(p, [], TRAIN)
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(DataError, match="list is empty"):
        HDF5Data(hdf5("empty.txt", 2), [], TRAIN)


def test_hdf5_output_appends_batches(tmp_path):
    out = tmp_path / "out.h5"
    layer = HDF5Output(param(f'name: "o" type: "HDF5Output" bottom: "data" bottom: "label" '
                             f'hdf5_output_param {{ file_name: "{out}" }}'), [(2, 3), (2,)], TEST)
    assert LAYERS.get("HDF5Output").bottoms == (2, 2) and layer.top_shapes([(2, 3), (2,)]) == []
    a, b = torch.arange(6.0).reshape(2, 3), torch.tensor([1.0, 0.0])
    assert layer.forward(a, b) == []
    layer.forward(a + 10, b)
    with h5py.File(out, "r") as h5:
        np.testing.assert_array_equal(h5["data"][()], np.concatenate([a.numpy(), a.numpy() + 10]))
        np.testing.assert_array_equal(h5["label"][()], [1, 0, 1, 0])


def memory(batch=2, c=1, h=2, w=2) -> MemoryData:
    return MemoryData(param(f'name: "m" type: "MemoryData" top: "data" top: "label" '
                            f'memory_data_param {{ batch_size: {batch} channels: {c} height: {h} width: {w} }}'),
                      [], TEST)


def test_memory_data_serves_the_arrays():
    layer = memory()
    assert LAYERS.get("MemoryData").is_data and layer.top_shapes([]) == [(2, 1, 2, 2), (2,)]
    data = np.arange(4 * 4, dtype=np.float32).reshape(4, 1, 2, 2)
    labels = np.array([5, 6, 7, 8], np.float32)
    layer.set_input_arrays(data, labels)
    got = [layer.forward() for _ in range(3)]
    np.testing.assert_array_equal(got[0][0].numpy(), data[:2])
    np.testing.assert_array_equal(got[1][1].numpy(), labels[2:])
    np.testing.assert_array_equal(got[2][0].numpy(), data[:2])  # wraps around
    layer.set_input_arrays(data, labels.reshape(4, 1, 1, 1))  # pycaffe's 4-d labels; resets
    np.testing.assert_array_equal(layer.forward()[1].numpy(), labels[:2])
    layer.set_shard(1, 2)
    np.testing.assert_array_equal(layer.forward()[1].numpy(), labels[[1, 3]])


def test_memory_data_errors():
    layer = memory()
    with pytest.raises(LayerError, match=r"layer 'm' \(MemoryData\): no arrays to serve"):
        layer.forward()
    with pytest.raises(LayerError, match=r"expected \(N, 1, 2, 2\)"):
        layer.set_input_arrays(np.zeros((2, 3, 2, 2), np.float32), np.zeros(2, np.float32))
    with pytest.raises(LayerError, match="not a positive multiple of batch_size 2"):
        layer.set_input_arrays(np.zeros((3, 1, 2, 2), np.float32), np.zeros(3, np.float32))
    with pytest.raises(LayerError, match="one label per image"):
        layer.set_input_arrays(np.zeros((2, 1, 2, 2), np.float32), np.zeros(4, np.float32))
