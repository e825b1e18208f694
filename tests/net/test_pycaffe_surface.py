"""pycaffe's Net surface on the real LeNet (tests/golden/nets/lenet): reshape, forward_all,
blob views, and the torch surface the solver uses (run, objective, learnable_params)."""
from __future__ import annotations

import numpy as np
import torch

import caffelike
from caffelike.net import Net

from .conftest import GOLDEN, assert_close_scaled

LENET = GOLDEN / "nets" / "lenet"


def _net() -> Net:
    return Net(str(LENET / "net.prototxt"), str(LENET / "weights.caffemodel"), caffelike.TEST)


def test_blob_views_write_through_and_reshape():
    net = _net()
    data = np.load(LENET / "data.npz")
    x, expected = data["input__data"], data["output__prob"]
    net.blobs["data"].data[...] = x
    out = net.forward()
    assert_close_scaled(out["prob"], expected, "prob")
    net.blobs["data"].reshape(3, 1, 28, 28)
    net.reshape()
    assert net.blobs["prob"].shape == (3, 10) and net.blobs["conv1"].shape == (3, 20, 24, 24)
    out = net.forward(data=x[:3])
    assert_close_scaled(out["prob"], expected[:3], "prob after reshape")
    assert (net.blobs["data"].num, net.blobs["data"].channels, net.blobs["data"].height,
            net.blobs["data"].width, net.blobs["data"].count) == (3, 1, 28, 28, 3 * 784)


def test_forward_all_pads_the_last_batch():
    net = _net()
    data = np.load(LENET / "data.npz")
    out = net.forward_all(data=np.concatenate([data["input__data"], data["input__data"][:6]]))
    assert out["prob"].shape == (70, 10)
    assert_close_scaled(out["prob"][:64], data["output__prob"], "forward_all")
    assert_close_scaled(out["prob"][64:], data["output__prob"][:6], "forward_all tail")


def test_run_is_the_torch_path():
    net = _net()
    data = np.load(LENET / "data.npz")
    blobs = net.run({"data": torch.from_numpy(data["input__data"])})
    assert_close_scaled(blobs["prob"].detach().numpy(), data["output__prob"], "run")
    assert net.output_names == ["prob"] and net.loss_weights == {}
    assert float(net.objective(blobs)) == 0.0
    infos = net.learnable_params
    assert [(p.layer, p.index, p.lr_mult, p.decay_mult) for p in infos] == [
        ("conv1", 0, 1.0, 1.0), ("conv1", 1, 2.0, 1.0), ("conv2", 0, 1.0, 1.0), ("conv2", 1, 2.0, 1.0),
        ("ip1", 0, 1.0, 1.0), ("ip1", 1, 2.0, 1.0), ("ip2", 0, 1.0, 1.0), ("ip2", 1, 2.0, 1.0)]
    assert infos[0].tensor is net.graph.module(1).blobs[0]
    net.to("cpu")
    assert list(net.params) == ["conv1", "conv2", "ip1", "ip2"]


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_forward_copies_a_blob_only_when_read_yet_held_arrays_follow():
    # pycaffe's blob arrays are views of the blob: one taken before a forward sees its result.
    net = _net()
    data = np.load(LENET / "data.npz")
    x, expected = data["input__data"], data["output__prob"]
    held = net.blobs["prob"].data
    net.forward(data=x)
    assert_close_scaled(held, expected, "held prob")
    assert not net.blobs["conv1"].copies_eagerly  # never read: no copy of it per forward
    net.forward(data=x[::-1])
    assert_close_scaled(held, expected[::-1], "held prob after a second forward")
    assert_close_scaled(_softmax(net.blobs["ip2"].data), expected[::-1], "ip2 read late")


def test_partial_forwards_keep_the_other_blobs_and_reshape_keeps_them():
    # Caffe's ForwardFromTo leaves the blobs after `end` as they were (unread ones included).
    net = _net()
    data = np.load(LENET / "data.npz")
    x, expected = data["input__data"], data["output__prob"]
    net.forward(data=x)
    net.forward(data=x[::-1], end="relu1")
    assert_close_scaled(_softmax(net.blobs["ip2"].data), expected, "ip2 (never read) of the first forward")
    assert_close_scaled(net.blobs["prob"].data, expected, "prob of the first forward")
    net.forward(start="ip2")
    assert_close_scaled(net.blobs["prob"].data, expected[::-1], "prob from the second forward's ip1")
    net.forward(data=x)
    net.reshape()  # same shapes: Caffe keeps every blob's data
    assert not net.blobs["conv1"].copies_eagerly  # kept for a later read, not copied per forward
    assert_close_scaled(_softmax(net.blobs["ip2"].data), expected, "ip2 (never read) after reshape")


def test_reshape_after_forward_gives_the_new_shapes():
    net = _net()
    net.forward(data=np.load(LENET / "data.npz")["input__data"])
    net.blobs["data"].reshape(3, 1, 28, 28)
    net.reshape()  # a new shape: the last pass's (old-shaped) values must not come back
    assert net.blobs["ip2"].data.shape == (3, 10) and net.blobs["conv1"].data.shape == (3, 20, 24, 24)
