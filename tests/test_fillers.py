"""Fillers: statistics against real Caffe's filler cases (tests/golden/layers/filler__*).

Caffe's RNG stream (boost mt19937) cannot be reproduced, so random fillers are compared by
statistics: the distribution Caffe draws from (case.json ``expected``, Caffe's fan
definitions) and the statistics Caffe's own draw had (``stats``), within sampling error.
The blob is created the way Caffe does it: as the weight of the case's Convolution layer.
"""
from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import pytest
import torch
from google.protobuf import text_format

from caffelike.errors import CaffelikeError
from caffelike.fillers import FILLERS, fan_in_out, fill
from caffelike.layers import LAYERS, TRAIN
from caffelike.proto import caffe_pb2

GOLDEN = pathlib.Path(__file__).resolve().parent / "golden" / "layers"
FILLER_CASES = sorted(p.name for p in GOLDEN.glob("filler__*"))
SEEDS = (0, 1, 2)


def _case(name: str) -> tuple[dict, caffe_pb2.LayerParameter, tuple[int, ...]]:
    meta = json.loads((GOLDEN / name / "case.json").read_text())
    net = text_format.Parse((GOLDEN / name / "net.prototxt").read_text(), caffe_pb2.NetParameter())
    conv = next(lp for lp in net.layer if lp.type == "Convolution")
    data_shape = tuple(next(lp for lp in net.layer if lp.type == "Input").input_param.shape[0].dim)
    return meta, conv, data_shape


def _filled_weight(name: str, seed: int) -> np.ndarray:
    meta, conv, data_shape = _case(name)
    torch.manual_seed(seed)
    layer = LAYERS.get("Convolution").cls(conv, [data_shape], TRAIN)
    w = layer.blobs[0].detach().numpy().astype(np.float64)
    assert w.shape == tuple(meta["blob_shape"])
    return w


def test_every_caffe_filler_has_a_case_and_is_registered() -> None:
    names = {n.split("__", 1)[1].split("_")[0] for n in FILLER_CASES}
    names = {"positive_unitball" if n == "positive" else n for n in names}
    # fork fillers have no golden case (no real build computes them): ParseNet's
    # bilinear_upsampling is checked in tests/layers/test_parsenet.py
    assert names == set(FILLERS.names()) - {"bilinear_upsampling"} == {
        "constant", "uniform", "gaussian", "positive_unitball", "xavier", "msra", "bilinear"}


@pytest.mark.parametrize("name", FILLER_CASES)
@pytest.mark.parametrize("seed", SEEDS)
def test_filler_statistics(name: str, seed: int) -> None:
    meta, _, _ = _case(name)
    exp, caffe_stats = meta["expected"], meta["stats"]
    w = _filled_weight(name, seed)
    n = w.size
    kind = meta["filler"]["type"]
    if kind == "bilinear":
        with np.load(GOLDEN / name / "data.npz") as z:
            np.testing.assert_array_equal(w.astype(np.float32), z["param/0"])
        return
    if kind == "constant":
        assert np.all(w == np.float32(exp["mean"]))
        return
    if kind == "positive_unitball":
        rows = w.reshape(w.shape[0], -1).sum(axis=1)
        np.testing.assert_allclose(rows, 1.0, rtol=0, atol=2e-6)
        assert w.min() >= 0 and w.max() <= 1
        # U(0,1)/sum: each row of dim d has mean 1/d; Caffe's own draw gives the std.
        assert abs(w.mean() - exp["mean"]) < 1e-7
        assert abs(w.std() - caffe_stats["std"]) < 0.05 * caffe_stats["std"]
        return
    std = exp["std"]
    # |mean - expected| within 5 standard errors; std within 3% (Caffe's own draw, too).
    assert abs(w.mean() - exp["mean"]) < 5 * std / math.sqrt(n), (w.mean(), exp)
    assert abs(w.std() - std) < 0.03 * std, (w.std(), std)
    assert abs(caffe_stats["std"] - std) < 0.03 * std
    if "a" in exp or kind == "uniform":
        lo, hi = (-exp["a"], exp["a"]) if "a" in exp else (meta["filler"]["min"], meta["filler"]["max"])
        assert w.min() >= lo - 1e-7 and w.max() <= hi + 1e-7
    if "p_nonzero" in exp:
        p = exp["p_nonzero"]
        frac_zero = float(np.mean(w == 0))
        assert abs(frac_zero - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)
        assert abs(caffe_stats["frac_zero"] - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)


def test_fan_definitions_follow_caffe() -> None:
    # filler.hpp: fan_in = count / shape[0]; fan_out = count / shape[1] (count for 1 axis).
    assert fan_in_out((64, 32, 3, 3)) == (288, 576)
    assert fan_in_out((10, 20)) == (20, 10)
    assert fan_in_out((7,)) == (1, 7)


def test_default_filler_is_constant_zero() -> None:
    t = torch.full((3, 4), 5.0)
    fill(caffe_pb2.FillerParameter(), t)
    assert torch.all(t == 0)
    t.fill_(5.0)
    fill(None, t)
    assert torch.all(t == 0)


def test_unknown_filler_names_the_known_ones() -> None:
    with pytest.raises(CaffelikeError, match=r"unknown filler type 'Xavier'; did you mean 'xavier'"):
        fill(caffe_pb2.FillerParameter(type="Xavier"), torch.zeros(2, 2))


def test_sparse_only_for_gaussian() -> None:
    # filler.hpp: every filler but gaussian CHECKs sparse == -1.
    with pytest.raises(CaffelikeError, match="sparse"):
        fill(caffe_pb2.FillerParameter(type="uniform", sparse=2), torch.zeros(4, 4))


def test_bilinear_odd_kernel_formula() -> None:
    # filler.hpp BilinearFiller, K=3: f=2, c=0.5 -> 1-|x/2-0.5| = [0.5, 1, 0.5]
    t = torch.zeros(2, 1, 3, 3)
    fill(caffe_pb2.FillerParameter(type="bilinear"), t)
    w1 = torch.tensor([0.5, 1.0, 0.5])
    assert torch.equal(t[1, 0], torch.outer(w1, w1))
    # K=4: f=2, c=0.75 -> [0.25, 0.75, 0.75, 0.25]
    t = torch.zeros(1, 1, 4, 4)
    fill(caffe_pb2.FillerParameter(type="bilinear"), t)
    w1 = torch.tensor([0.25, 0.75, 0.75, 0.25])
    assert torch.equal(t[0, 0], torch.outer(w1, w1))


def test_bilinear_needs_square_4d() -> None:
    with pytest.raises(CaffelikeError, match="square"):
        fill(caffe_pb2.FillerParameter(type="bilinear"), torch.zeros(1, 1, 3, 2))


def test_generator_makes_fills_reproducible() -> None:
    p = caffe_pb2.FillerParameter(type="gaussian", std=0.1)
    a = fill(p, torch.zeros(100), torch.Generator().manual_seed(3))
    b = fill(p, torch.zeros(100), torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
