"""Every single-layer golden case run through the Net (pycaffe style), as real Caffe ran it.

Golden data: tests/golden/layers (LAYERS.md). Forward: feed ``in/*``, compare ``out/*``.
Backward, ``force_backward`` cases: set ``topdiff/*`` on the tops and call ``net.backward()``,
which must follow Caffe's need-backward rules to give ``bottomdiff/*`` and ``paramdiff/*``.
The cases without force_backward (Filter, Embed, BatchReindex, 3-bottom InfogainLoss) hold
layer-level gradients (Caffe aborts on them at net level): at net level no layer runs
backward, and at layer level the module's gradient with their ``propagate_down`` mask is
compared.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import caffelike
from caffelike.net import Net

from .conftest import GOLDEN, assert_close_scaled, load_json

LAYERS = GOLDEN / "layers"
CASES = sorted(p.name for p in LAYERS.iterdir() if p.is_dir() and not p.name.startswith("filler__"))
EXACT = {"Concat", "Slice", "Crop", "Reshape", "Flatten", "ArgMax", "Split", "Tile", "BatchReindex",
         "Filter", "Silence"}


def _check(actual, expected, exact: bool, what: str) -> None:
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} vs {expected.shape}"
    if exact:
        np.testing.assert_array_equal(actual, expected, err_msg=what)
    else:
        assert_close_scaled(actual, expected, what)


def _setup(case: str):
    d = LAYERS / case
    meta = load_json(d / "case.json")
    data = dict(np.load(d / "data.npz"))
    phase = caffelike.TRAIN if meta["phase"] == "TRAIN" else caffelike.TEST
    weights = d / "weights.caffemodel"
    net = Net(str(d / "net.prototxt"), phase, weights=str(weights) if weights.exists() else None)
    for name in net.inputs:
        net.blobs[name].data[...] = data[f"in/{name}"]
    return net, meta, data


@pytest.mark.parametrize("case", CASES)
def test_layer_case_through_the_net(case):
    net, meta, data = _setup(case)
    exact = meta["type"] in EXACT
    net.forward()
    for top in meta["tops"]:
        _check(net.blobs[top].data, data[f"out/{top}"], exact, f"{case} out/{top}")
    if not meta["backward"]:
        return
    layer = meta["layer_name"]
    if not meta["force_backward"]:
        assert not any(l.need_backward for l in net.plan.layers), "Caffe runs no layer backward here"
        return
    for top in meta["tops"]:
        if f"topdiff/{top}" in data:
            net.blobs[top].diff[...] = data[f"topdiff/{top}"]
    net.backward()
    for bottom in meta["backward_bottoms"]:
        _check(net.blobs[bottom].diff, data[f"bottomdiff/{bottom}"], False, f"{case} bottomdiff/{bottom}")
    if meta["param_grads"]:
        for i, blob in enumerate(net.params[layer]):
            if f"paramdiff/{i}" in data:
                _check(blob.diff, data[f"paramdiff/{i}"], False, f"{case} paramdiff/{i}")


LAYER_LEVEL = [c for c in CASES if not load_json(LAYERS / c / "case.json")["force_backward"]
               and load_json(LAYERS / c / "case.json")["backward"]]


@pytest.mark.parametrize("case", LAYER_LEVEL)
def test_layer_level_gradients(case):
    """Caffe's ``layer->Backward(top, propagate_down, bottom)`` with the case's mask."""
    net, meta, data = _setup(case)
    index = net._layer_names.index(meta["layer_name"])
    lay, module = net.plan.layers[index], net.graph.module(index)
    bottoms = [torch.from_numpy(data[f"in/{b}"]).requires_grad_(bool(meta["propagate_down"][b]))
               for b in lay.bottoms]
    tops = module(*bottoms)
    diffs = [torch.from_numpy(data[f"topdiff/{t}"]) for t in lay.tops]
    pairs = [(t, g) for t, g in zip(tops, diffs) if t.requires_grad]
    torch.autograd.backward([t for t, _ in pairs], [g.reshape(t.shape) for t, g in pairs])
    for b, name in zip(bottoms, lay.bottoms):
        if name in meta["backward_bottoms"]:
            _check(b.grad.numpy(), data[f"bottomdiff/{name}"], False, f"{case} bottomdiff/{name}")
    if meta["param_grads"]:
        for i, p in enumerate(module.blobs):
            if f"paramdiff/{i}" in data:
                _check(p.grad.numpy(), data[f"paramdiff/{i}"], False, f"{case} paramdiff/{i}")
