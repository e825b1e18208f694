"""Every public net real Caffe instantiates builds here with exactly Caffe's blob and param shapes.

Golden data: tests/golden/shapes (NETS.md §2). The Split layers Caffe inserts for fan-out
(and their blobs) are part of every list, as pycaffe shows them.
"""
from __future__ import annotations

import time

import pytest

import caffelike
from caffelike.net import Net

from .conftest import GOLDEN, load_json

SHAPES = GOLDEN / "shapes"
CASES = sorted(p.name for p in SHAPES.glob("*.json") if p.name not in ("index.json", "skipped.json"))


def _build(golden: dict) -> Net:
    return Net(str(SHAPES / golden["prototxt_copy"]), caffelike.TEST, fill=False)


@pytest.mark.parametrize("case", CASES)
def test_blob_and_param_shapes(case):
    golden = load_json(SHAPES / case)
    start = time.perf_counter()
    net = _build(golden)
    elapsed = time.perf_counter() - start
    expected_blobs = [(n, tuple(s)) for n, s in golden["blobs"]]
    assert [(n, b.shape) for n, b in net.blobs.items()] == expected_blobs
    assert [(layer, [tuple(s) for s in shapes]) for layer, shapes in golden["params"]] == \
        [(layer, [b.shape for b in blobs]) for layer, blobs in net.params.items()]
    assert net.inputs == golden["inputs"]
    assert net.outputs == golden["outputs"]
    assert [l["name"] for l in golden["layers"]] == net._layer_names
    assert [l["type"] for l in golden["layers"]] == [layer.type for layer in net.layers]
    assert [(l["bottoms"], l["tops"]) for l in golden["layers"]] == \
        [(list(lay.bottoms), list(lay.tops)) for lay in net.plan.layers]
    assert elapsed < 20, f"building took {elapsed:.1f} s"
