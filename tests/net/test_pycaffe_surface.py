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
