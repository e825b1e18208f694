"""optimize_net (BatchNorm/Scale folding, ReLU fusion) and ``Net(optimize=True)``'s compiled
forward against real Caffe's outputs.

Expected values: tests/golden/nets (Caffe's own forward of these deploy nets, NETS.md §1).
"""
from __future__ import annotations

import numpy as np
import pytest

import caffelike
from caffelike.net.fold import FusedLayer, PassThrough, find_chains, optimize_net, refold

from .golden_nets import GOLDEN, assert_close_scaled, golden_net

# case -> the fewest chains each net must fold (checked so a silent no-op cannot pass)
CASES = {"lenet": 1, "simpleconv3": 3, "squeezenet_v1_1": 20, "book_mobilenet_faceseg": 20,
         "cifar10_quick": 1}


@pytest.mark.parametrize("case", sorted(CASES))
def test_optimized_outputs_match_caffe(case):
    net, inputs, expected = golden_net(case)
    before = {name: [b.data.copy() for b in blobs] for name, blobs in net.params.items()}
    optimize_net(net)
    fused = [m for _, m in net.graph.pairs() if isinstance(m, FusedLayer)]
    assert len(fused) >= CASES[case]
    out = net.forward(**inputs)
    for name, value in expected.items():
        assert_close_scaled(out[name], value, f"{case} {name}")
    # the pycaffe view keeps the original (unfolded) parameters
    for name, blobs in net.params.items():
        for blob, old in zip(blobs, before[name]):
            np.testing.assert_array_equal(blob.data, old)


def test_batchnorm_scale_relu_are_absorbed():
    net, _, _ = golden_net("simpleconv3")
    chains = find_chains(net.graph)
    kinds = [[net.plan.layers[i].type for i in c.members] for c in chains]
    assert ["Convolution", "BatchNorm", "Scale", "ReLU"] in kinds
    optimize_net(net)
    optimize_net(net)  # a second call finds nothing new
    assert sum(isinstance(m, FusedLayer) for _, m in net.graph.pairs()) == len(chains)
    assert sum(isinstance(m, PassThrough) for _, m in net.graph.pairs()) == sum(len(c.members) - 1 for c in chains)


def test_weights_loaded_after_optimize_are_refolded():
    net, inputs, expected = golden_net("simpleconv3")
    optimize_net(net)
    for blobs in net.params.values():  # spoil through the setter, run, then load the real weights
        for b in blobs:
            b.data = np.full(b.shape, 0.5, np.float32)
    net.forward(**inputs)
    net.copy_from(str(GOLDEN / "simpleconv3" / "weights.caffemodel"))
    out = net.forward(**inputs)
    for name, value in expected.items():
        assert_close_scaled(out[name], value, f"simpleconv3 {name}")


def test_refold_sees_writes_through_numpy_views():
    net, inputs, expected = golden_net("simpleconv3")
    saved = {name: [b.data.copy() for b in blobs] for name, blobs in net.params.items()}
    optimize_net(net)
    for blobs in net.params.values():
        for b in blobs:
            b.data[...] = 0.5
    refold(net)
    net.forward(**inputs)
    for name, blobs in net.params.items():
        for b, a in zip(blobs, saved[name]):
            b.data[...] = a
    refold(net)
    out = net.forward(**inputs)
    for name, value in expected.items():
        assert_close_scaled(out[name], value, f"simpleconv3 {name}")


def test_compiled_forward_matches_caffe(tmp_path, monkeypatch):
    # Net(optimize=True) on the CPU: Inductor's compiled outputs (forced here, whatever the
    # timing says) against Caffe's own, and an inner blob read afterwards (layer by layer)
    from caffelike.net.compiled import CompiledForward

    monkeypatch.setattr(CompiledForward, "prefer_compiled", staticmethod(lambda c, p: True))
    net, inputs, expected = golden_net("squeezenet_v1_1")
    weights = str(tmp_path / "w.caffemodel")
    net.save(weights)
    fast = caffelike.Net(str(GOLDEN / "squeezenet_v1_1" / "net.prototxt"), caffelike.TEST,
                         weights=weights, optimize=True)
    out = fast.forward(**inputs)
    assert fast._compiled._module is not None  # the compiled module served this pass
    for name, value in expected.items():
        assert_close_scaled(out[name], value, f"compiled {name}")
    plain = net.forward(**inputs)
    inner = "fire9/concat"
    assert_close_scaled(fast.blobs[inner].data, net.blobs[inner].data, inner)
    assert set(plain) == set(out)
