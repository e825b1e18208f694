"""Golden deploy nets (tests/golden/nets, NETS.md §1) built with their real or scheme_v1 weights."""
from __future__ import annotations

import hashlib
import json
import pathlib

import numpy as np

import caffelike
from caffelike.net import Net
from net.weight_schemes import scheme_v1  # tests/ is on sys.path (rootdir-relative packages)

GOLDEN = pathlib.Path(__file__).resolve().parents[1] / "golden" / "nets"


def golden_net(case: str) -> tuple[Net, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(TEST net with the case's weights, inputs, Caffe's outputs) for one golden case."""
    d = GOLDEN / case
    meta = json.loads((d / "case.json").read_text())
    if meta["weights"]["kind"] == "caffemodel":
        net = Net(str(d / "net.prototxt"), caffelike.TEST, weights=str(d / meta["weights"]["file"]))
    else:
        net = Net(str(d / "net.prototxt"), caffelike.TEST, fill=False)
        golden = json.loads((d / "blobs.json").read_text())
        expected = {p["layer"]: [b["sha256"] for b in p["blobs"]] for p in golden["params"]}
        for name, arrays in scheme_v1(net, meta["weights"]["seed"], meta["weights"]["gain"]).items():
            got = [hashlib.sha256(a.astype("<f4").tobytes()).hexdigest() for a in arrays]
            assert got == expected[name], f"scheme_v1 regeneration differs for {name}"
            for blob, a in zip(net.params[name], arrays):
                blob.data[...] = a
    data = np.load(d / "data.npz")
    key = lambda n: n.replace("/", "__SLASH__")  # noqa: E731
    inputs = {n: data[f"input__{key(n)}"] for n in net.inputs}
    outputs = {n: data[f"output__{key(n)}"] for n in net.outputs}
    return net, inputs, outputs


def assert_close_scaled(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    """README tolerance: rtol 1e-4, atol 1e-5 relative to the array's scale, NaN equal."""
    scale = max(1.0, float(np.nanmax(np.abs(expected))) if expected.size else 1.0)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5 * scale, equal_nan=True, err_msg=what)
