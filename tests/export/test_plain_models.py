"""Exported models (model.py + weights.pth, pt2, onnx) run without caffelike match real Caffe.

Expected values: real BVLC Caffe's outputs in tests/golden/nets/<case>/data.npz (whole nets;
NETS.md) and tests/golden/layers/<case>/data.npz (one layer each; LAYERS.md), compared with
the golden tolerance (tests/net/conftest.py). The models run in a child process where
``import caffelike`` raises (conftest.py, plain_runner.py).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from net.conftest import assert_close_scaled, load_json

from .conftest import GOLDEN, KINDS, NET_CASES, key, layer_cases

EXACT = {"Concat", "Slice", "Crop", "Reshape", "Flatten"}  # pure data movement: bit-exact in Caffe too


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", NET_CASES)
def test_golden_net_export_matches_caffe(plain_outputs, case: str, kind: str) -> None:
    data = np.load(GOLDEN / "nets" / case / "data.npz")
    golden = load_json(GOLDEN / "nets" / case / "blobs.json")
    out = np.load(plain_outputs / f"{case}.{kind}.out.npz")
    assert sorted(out.files) == sorted(golden["outputs"])
    for name in golden["outputs"]:
        assert_close_scaled(out[name], data[f"output__{key(name)}"], f"{case} {kind} {name}")


@pytest.mark.parametrize("kind", KINDS)
def test_books_simpleconv3_export_matches_caffe(plain_outputs, kind: str) -> None:
    """models/mouth/simpleconv3/deploy.prototxt (batch 1) with the book's real caffemodel, run
    on Caffe's 16 preprocessed images: the dynamic batch dimension and Caffe's outputs."""
    expect = np.load(GOLDEN / "nets" / "simpleconv3" / "data.npz")["output__prob"]
    out = np.load(plain_outputs / f"book.{kind}.out.npz")
    assert out.files == ["prob"]
    assert_close_scaled(out["prob"], expect, f"book {kind}")


@pytest.mark.parametrize("case", layer_cases())
def test_layer_case_export_matches_caffe(plain_outputs, case: str) -> None:
    """Each exportable layer type, alone, through model.py: the helper modules and torch's
    standard layers against Caffe (pooling windows, LRN, Eltwise, Scale/Bias axes, Reshape...)."""
    meta = load_json(GOLDEN / "layers" / case / "case.json")
    data = np.load(GOLDEN / "layers" / case / "data.npz")
    out = np.load(plain_outputs / f"{case}.out.npz")
    for top in meta["tops"]:
        expected = data[f"out/{top}"]
        if meta["type"] in EXACT:
            np.testing.assert_array_equal(out[top], expected, err_msg=f"{case} {top}")
        else:
            assert_close_scaled(out[top], expected, f"{case} {top}")


def test_pt2_batch_is_dynamic_unless_static(tmp_path) -> None:
    from caffelike.cli import main as cli_main

    from .conftest import BOOK_DEPLOY, BOOK_WEIGHTS

    shapes = {}
    for flags in ([], ["-static_batch"], ["--static_batch"]):
        path = tmp_path / f"m{len(shapes)}.pt2"
        assert cli_main(["export", "-model", str(BOOK_DEPLOY), "-weights", str(BOOK_WEIGHTS),
                         "-format", "pt2", "-o", str(path), *flags]) == 0
        program = torch.export.load(str(path))
        (placeholder,) = [n for n in program.graph.nodes if n.op == "placeholder"
                          and n.name in program.graph_signature.user_inputs]
        shapes[tuple(flags)] = placeholder.meta["val"].shape
    assert isinstance(shapes[()][0], torch.SymInt)
    assert tuple(shapes[("-static_batch",)]) == tuple(shapes[("--static_batch",)]) == (1, 3, 48, 48)
