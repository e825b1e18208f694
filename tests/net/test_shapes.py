"""Every public net real Caffe instantiates builds here with exactly Caffe's blob and param shapes.

Golden data: tests/golden/shapes (NETS.md §2). Blobs of the Split layers Caffe inserts for
fan-out have no counterpart here (autograd sums the gradients) and are skipped.
"""
from __future__ import annotations

import time

import pytest

import caffelike
from caffelike.net import Net

from .conftest import GOLDEN, load_json

SHAPES = GOLDEN / "shapes"
CASES = sorted(p.name for p in SHAPES.glob("*.json") if p.name not in ("index.json", "skipped.json"))


def _split_blobs(golden: dict) -> set[str]:
    return {top for layer in golden["layers"] if layer["type"] == "Split" for top in layer["tops"]}


def _build(golden: dict) -> Net:
    return Net(str(SHAPES / golden["prototxt_copy"]), caffelike.TEST, fill=False)


@pytest.mark.parametrize("case", CASES)
def test_blob_and_param_shapes(case):
    golden = load_json(SHAPES / case)
    start = time.perf_counter()
    net = _build(golden)
    elapsed = time.perf_counter() - start
    splits = _split_blobs(golden)
    expected_blobs = [(n, tuple(s)) for n, s in golden["blobs"] if n not in splits]
    assert [(n, b.shape) for n, b in net.blobs.items()] == expected_blobs
    assert [(layer, [tuple(s) for s in shapes]) for layer, shapes in golden["params"]] == \
        [(layer, [b.shape for b in blobs]) for layer, blobs in net.params.items()]
    assert net.inputs == golden["inputs"]
    assert net.outputs == golden["outputs"]
    assert [l["name"] for l in golden["layers"] if l["type"] != "Split"] == net._layer_names
    assert elapsed < 20, f"building took {elapsed:.1f} s"
