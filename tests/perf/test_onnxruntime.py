"""The ONNX Runtime engine against real Caffe's outputs (tests/golden/nets, NETS.md §1)."""
from __future__ import annotations

import pytest

from caffelike.accel import OnnxRuntimeEngine
from caffelike.net.fold import optimize_net

from .golden_nets import assert_close_scaled, golden_net


@pytest.mark.parametrize("case", ["lenet", "simpleconv3"])
def test_onnxruntime_outputs_match_caffe(case):
    net, inputs, expected = golden_net(case)
    optimize_net(net)
    engine = OnnxRuntimeEngine(net, threads=1)
    out = engine.run(**inputs)
    for name, value in expected.items():
        assert_close_scaled(out[name], value, f"{case} {name} (onnxruntime)")
