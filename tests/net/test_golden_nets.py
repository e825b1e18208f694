"""Whole deploy nets against real Caffe: outputs in full, and every blob after every layer.

Golden data: tests/golden/nets (see tests/golden/NETS.md §1). Weights are the real
caffemodels, or regenerated with ``scheme_v1`` (checked against the sha256 Caffe recorded
before use).
"""
from __future__ import annotations

import functools
import hashlib

import numpy as np
import pytest

import caffelike
from caffelike.net import Net

from .conftest import GOLDEN, assert_close_scaled, load_json
from .weight_schemes import scheme_v1

CASES = sorted(p.name for p in (GOLDEN / "nets").iterdir() if p.is_dir())


@functools.lru_cache(maxsize=None)
def _golden_net(case: str) -> tuple[Net, dict, dict, np.lib.npyio.NpzFile]:
    d = GOLDEN / "nets" / case
    meta = load_json(d / "case.json")
    golden = load_json(d / "blobs.json")
    if meta["weights"]["kind"] == "caffemodel":
        net = Net(str(d / "net.prototxt"), caffelike.TEST, weights=str(d / meta["weights"]["file"]))
    else:
        assert meta["weights"]["kind"] == "scheme_v1"
        net = Net(str(d / "net.prototxt"), caffelike.TEST, fill=False)
        weights = scheme_v1(net, meta["weights"]["seed"], meta["weights"]["gain"])
        expected = {p["layer"]: [b["sha256"] for b in p["blobs"]] for p in golden["params"]}
        for name, arrays in weights.items():
            got = [hashlib.sha256(a.astype("<f4").tobytes()).hexdigest() for a in arrays]
            assert got == expected[name], f"scheme_v1 regeneration differs for {name}"
            for blob, a in zip(net.params[name], arrays):
                blob.data[...] = a
    return net, meta, golden, np.load(d / "data.npz")


def _key(name: str) -> str:
    return name.replace("/", "__SLASH__")


def _check_summary(actual: np.ndarray, summary: dict, what: str) -> None:
    assert list(actual.shape) == summary["shape"], f"{what}: shape"
    scale = max(1.0, abs(summary["min"]), abs(summary["max"]))
    flat = actual.ravel()
    assert_close_scaled(flat[:len(summary["first32"])], np.array(summary["first32"]), f"{what} first32")
    for stat, value in (("mean", flat.mean(dtype=np.float64)), ("std", flat.std(dtype=np.float64)),
                        ("min", flat.min()), ("max", flat.max()),
                        ("abs_mean", np.abs(flat).mean(dtype=np.float64))):
        assert abs(value - summary[stat]) <= 1e-5 * scale + 1e-4 * abs(summary[stat]), \
            f"{what} {stat}: {value} vs {summary[stat]}"


@pytest.mark.parametrize("case", CASES)
def test_params_match_caffe(case):
    net, _, golden, _ = _golden_net(case)
    assert list(net.params) == [p["layer"] for p in golden["params"]]
    for p in golden["params"]:
        for blob, summary in zip(net.params[p["layer"]], p["blobs"]):
            assert list(blob.shape) == summary["shape"]
            np.testing.assert_allclose(blob.data.ravel()[:8], summary["first8"], rtol=0, atol=0)


@pytest.mark.parametrize("case", CASES)
def test_outputs_and_blobs_match_caffe(case):
    net, meta, golden, data = _golden_net(case)
    inputs = {name: data[f"input__{_key(name)}"] for name in net.inputs}
    out = net.forward(**inputs)
    assert sorted(out) == sorted(golden["outputs"])
    for name in golden["outputs"]:
        assert_close_scaled(out[name], data[f"output__{_key(name)}"], f"{case} output {name}")
    ours = set(net.blobs)
    for name, summary in golden["blobs"].items():
        if name not in ours:  # blobs of the Split layers Caffe inserts for fan-out
            assert "_split_" in name, name
            continue
        _check_summary(net.blobs[name].data, summary, f"{case} blob {name}")


@pytest.mark.parametrize("case", CASES)
def test_every_layer_top_matches_caffe(case):
    """Layer by layer (pycaffe's _forward(i, i)), so in-place intermediate values are checked too."""
    net, _, golden, data = _golden_net(case)
    for name in net.inputs:
        net.blobs[name].data[...] = data[f"input__{_key(name)}"]
    ours = set(net._layer_names)
    for layer in golden["layers"]:
        if layer["name"] not in ours:
            assert layer["type"] == "Split"
            continue
        net.forward(start=layer["name"], end=layer["name"])
        for top, summary in zip(layer["tops"], layer["top_stats"]):
            _check_summary(net.blobs[top].data, summary, f"{case} layer {layer['name']} top {top}")


def test_whole_forward_fuses_batchnorm_scale_without_changing_the_graph():
    # pycaffe's whole forward runs BatchNorm + in-place Scale as one kernel (the blobs above are
    # Caffe's), on the CPU folded into the packed convolution before them; the layers themselves,
    # which partial forwards and backward run, stay as built.
    from caffelike.layers.base import Delegating
    from caffelike.layers.normalization import FusedBatchNormScale
    from caffelike.net.packed import PackedConv

    net = _golden_net("simpleconv3")[0]
    assert any(isinstance(step[1], FusedBatchNormScale) or
               (isinstance(step[1], PackedConv) and len(step[1]._affine) == 2)
               for step in net._whole_pass_steps())
    assert not any(isinstance(module, Delegating) for _, module in net.graph.pairs())
