"""The read stream (Caffe's order: skip once, wrap, reshuffle per epoch, shards) and the
batch builders travelling to worker processes."""
from __future__ import annotations

import pathlib
import pickle

import numpy as np
from google.protobuf import text_format

from caffelike.data.prefetch import ItemStream
from caffelike.layers.data import Data, ImageData
from caffelike.proto import caffe_pb2

GOLDEN = pathlib.Path(__file__).resolve().parents[1] / "golden"


def test_stream_skips_once_then_wraps():
    stream = ItemStream(size=5, seed=0, skip=3)
    assert [stream.item(p) for p in range(9)] == [3, 4, 0, 1, 2, 3, 4, 0, 1]


def test_stream_shards_take_alternate_positions():
    ranks = [ItemStream(size=5, seed=0, rank=r, world=2) for r in range(2)]
    assert [ranks[0].item(p) for p in range(5)] == [0, 2, 4, 1, 3]
    assert [ranks[1].item(p) for p in range(5)] == [1, 3, 0, 2, 4]


def test_shuffled_epochs_are_fresh_permutations():
    stream = ItemStream(size=50, seed=9, shuffle=True)
    epochs = [[stream.item(e * 50 + i) for i in range(50)] for e in range(3)]
    assert all(sorted(e) == list(range(50)) for e in epochs)
    assert epochs[0] != epochs[1] != epochs[2]
    again = ItemStream(size=50, seed=9, shuffle=True)
    assert [again.item(p) for p in range(150)] == sum(epochs, [])


def test_block_shuffle_keeps_blocks_together():
    stream = ItemStream(size=9, seed=1, shuffle=True, blocks=[4, 2, 3])
    order = [stream.item(p) for p in range(9)]
    block_of = [0] * 4 + [1] * 2 + [2] * 3
    runs = [block_of[i] for i in order]
    assert sorted(order) == list(range(9))
    assert len([k for k in range(9) if k == 0 or runs[k] != runs[k - 1]]) == 3


def test_batch_builders_pickle_for_spawned_workers(monkeypatch):
    monkeypatch.chdir(GOLDEN / "data")
    net = text_format.Parse((GOLDEN / "data" / "data_layer.prototxt").read_text(), caffe_pb2.NetParameter())
    data = Data(net.layer[0], [], caffe_pb2.TEST)
    dataset = data.make_dataset()
    ticket = dataset.ticket(1)
    clone = pickle.loads(pickle.dumps(dataset))
    for a, b in zip(clone.build(ticket), dataset.build(ticket)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    monkeypatch.chdir(GOLDEN / "solvers" / "imagedata_png")
    net = text_format.Parse(pathlib.Path("train_val.prototxt").read_text(), caffe_pb2.NetParameter())
    images = ImageData(net.layer[0], [], caffe_pb2.TRAIN).make_dataset()
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(images)).build(images.ticket(0))[0].numpy(),
                                  images.build(images.ticket(0))[0].numpy())
