"""``Net(..., optimize=True)``'s compiled forward on the CPU (caffelike.net.compiled).

The reference is the same net without ``optimize`` (its layer-by-layer pass, whose values the
golden net tests pin to Caffe's). Compiling takes seconds, so the net is tiny and each test
compiles at most twice.
"""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import caffelike
from caffelike.net.compiled import CompiledForward

NET = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 12 dim: 12 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 6 kernel_size: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "sc1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool1" top: "ip" inner_product_param { num_output: 4
  weight_filler { type: "gaussian" std: 0.2 } } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""


@pytest.fixture
def files(tmp_path):
    proto = tmp_path / "tiny.prototxt"
    proto.write_text(NET)
    torch.manual_seed(0)
    net = caffelike.Net(str(proto), caffelike.TEST)
    mean, var, factor = net.params["bn1"]
    mean.data[...] = np.linspace(-1, 1, 6)
    var.data[...] = np.linspace(0.5, 2, 6)
    factor.data[...] = 1.0
    net.params["sc1"][0].data[...] = np.linspace(0.5, 1.5, 6)
    weights = tmp_path / "tiny.caffemodel"
    net.save(str(weights))
    return str(proto), str(weights)


@pytest.fixture
def always_compiled(monkeypatch):
    monkeypatch.setattr(CompiledForward, "prefer_compiled", staticmethod(lambda c, p: True))


def _x(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((2, 3, 12, 12)).astype(np.float32)


def _close(a: np.ndarray, b: np.ndarray, what: str) -> None:
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=what)


def test_outputs_compiled_and_every_other_blob_readable(files, always_compiled, caplog):
    fast = caffelike.Net(files[0], caffelike.TEST, weights=files[1], optimize=True)
    plain = caffelike.Net(files[0], caffelike.TEST, weights=files[1])
    with caplog.at_level(logging.INFO, logger="caffelike.optimize"):
        out = fast.forward(data=_x())
    assert "using the compiled one" in caplog.text
    want = plain.forward(data=_x())
    _close(out["prob"], want["prob"], "prob")
    for name in ("pool1", "ip", "conv1"):  # computed layer by layer on this first read
        _close(fast.blobs[name].data, plain.blobs[name].data, name)
    out = fast.forward(data=_x(2))  # a blob read before is refreshed by each pass
    plain.forward(data=_x(2))
    _close(fast.blobs["ip"].data, plain.blobs["ip"].data, "ip after the second pass")


def test_weight_changes_are_seen(files, always_compiled):
    fast = caffelike.Net(files[0], caffelike.TEST, weights=files[1], optimize=True)
    plain = caffelike.Net(files[0], caffelike.TEST, weights=files[1])
    fast.forward(data=_x())
    held = fast.params["ip"][0].data  # a live view: the layer-by-layer pass serves
    held[...] *= -1.0
    plain.params["ip"][0].data[...] *= -1.0
    _close(fast.forward(data=_x())["prob"], plain.forward(data=_x())["prob"], "prob with a held view")
    del held
    with torch.no_grad():  # a torch write, no view alive: compiled again with the new weights
        fast.graph.module(fast.plan.layer_index("sc1")).blobs[1].add_(0.5)
        plain.graph.module(plain.plan.layer_index("sc1")).blobs[1].add_(0.5)
    _close(fast.forward(data=_x())["prob"], plain.forward(data=_x())["prob"], "prob after a torch write")


def test_a_compiler_failure_keeps_the_layer_by_layer_pass(files, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", broken)
    fast = caffelike.Net(files[0], caffelike.TEST, weights=files[1], optimize=True)
    plain = caffelike.Net(files[0], caffelike.TEST, weights=files[1])
    with caplog.at_level(logging.WARNING, logger="caffelike.optimize"):
        out = fast.forward(data=_x())
        fast.forward(data=_x())
    assert caplog.text.count("compiled forward is unavailable here (RuntimeError: no C++ compiler)") == 1
    _close(out["prob"], plain.forward(data=_x())["prob"], "prob")


def test_a_changed_global_torch_setting_recompiles_instead_of_failing(files, always_compiled):
    # the steady-state call skips Dynamo's guards; a global setting they cover (here
    # deterministic algorithms; autocast is another) makes Dynamo refuse to run under that
    # stance, and the layer-by-layer pass (which follows the setting) serves instead
    fast = caffelike.Net(files[0], caffelike.TEST, weights=files[1], optimize=True)
    plain = caffelike.Net(files[0], caffelike.TEST, weights=files[1])
    fast.forward(data=_x())
    torch.use_deterministic_algorithms(True)
    try:
        out = fast.forward(data=_x())
    finally:
        torch.use_deterministic_algorithms(False)
    _close(out["prob"], plain.forward(data=_x())["prob"], "prob")


def test_the_inputs_of_a_pending_pass_are_the_forwards_own(files, always_compiled):
    """The compiled pass reads an input blob no script holds without copying it; the blobs
    computed later (on first read) still come from that forward's inputs, whatever is written
    to the input blob in between, by pycaffe or through an array a script holds."""
    fast = caffelike.Net(files[0], caffelike.TEST, weights=files[1], optimize=True)
    plain = caffelike.Net(files[0], caffelike.TEST, weights=files[1])
    fast.forward(data=_x(1))
    fast.blobs["data"].data[...] = _x(2)  # written before conv1 was computed
    plain.forward(data=_x(1))
    _close(fast.blobs["conv1"].data, plain.blobs["conv1"].data, "conv1 of the first inputs")
    _close(fast.blobs["data"].data, _x(2), "the input blob shows what was written")
    fast.forward(data=_x(3))
    plain.forward(data=_x(3))
    _close(fast.blobs["pool1"].data, plain.blobs["pool1"].data, "pool1 of the third inputs")
    held = fast.blobs["data"].data  # a script holds the input array: each pass copies it
    held[...] = _x(4)
    fast.forward()
    held[...] = _x(5)
    plain.forward(data=_x(4))
    _close(fast.blobs["ip"].data, plain.blobs["ip"].data, "ip of the inputs at forward time")
