"""SSD's MultiBoxLoss (weiliu89/caffe ssd, multibox_loss_layer.cpp, bbox_util.cpp), issue 16.

OpenCV has no training layers: the oracle is the fork's source worked by hand on a small case
(matching, mining, encoding and the two losses written out below), and float64 central finite
differences (torch.autograd.gradcheck) for the backward, matches and mined negatives held fixed
as the fork holds them.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from caffelike.errors import LayerError
from caffelike.io import parse_text_proto
from caffelike.layers.base import LAYERS, TEST
from caffelike.proto import caffe_pb2

PRIORS = np.array([[0.10, 0.10, 0.50, 0.50],   # best for the ground truth: bipartite match
                   [0.14, 0.12, 0.54, 0.52],   # IoU ~0.7: PER_PREDICTION match
                   [0.60, 0.60, 0.90, 0.90],   # no overlap: negatives, ranked by loss
                   [0.55, 0.05, 0.95, 0.35],
                   [0.00, 0.70, 0.20, 0.90],
                   [0.30, 0.30, 0.70, 0.70]],  # IoU ~0.24: matched to nothing, eligible (< 0.5)
                  np.float32)
VARIANCE = np.array([0.1, 0.1, 0.2, 0.2], np.float32)
GT = np.array([0.12, 0.10, 0.50, 0.52], np.float32)
LABEL = 2


def _inputs(seed: int = 0, dtype=np.float32) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    loc = rng.normal(scale=0.5, size=(1, 6 * 4))
    conf = rng.normal(size=(1, 6 * 3))
    prior = np.stack([PRIORS.reshape(-1), np.tile(VARIANCE, 6)])[None]
    gt = np.array([[[[0, LABEL, 0, *GT, 0]]]])
    return [a.astype(dtype) for a in (loc, conf, prior, gt)]


def _layer(extra: str = "", mining: str = "MAX_NEGATIVE"):
    param = parse_text_proto(
        'name: "loss" type: "MultiBoxLoss" multibox_loss_param { num_classes: 3 share_location: true '
        "match_type: PER_PREDICTION overlap_threshold: 0.5 background_label_id: 0 neg_pos_ratio: 1 "
        f"neg_overlap: 0.5 code_type: CENTER_SIZE mining_type: {mining} {extra} }}",
        caffe_pb2.LayerParameter)
    return LAYERS.get("MultiBoxLoss").cls(param, [(1, 24), (1, 18), (1, 2, 24), (1, 1, 1, 8)], TEST)


def _by_hand(loc: np.ndarray, conf: np.ndarray, mining: bool = True) -> float:
    loc, conf = loc.reshape(6, 4).astype(np.float64), conf.reshape(6, 3).astype(np.float64)
    matched = [0, 1]
    g = GT.astype(np.float64)
    smooth = 0.0
    for j in matched:
        p = PRIORS[j].astype(np.float64)
        pw, ph = p[2] - p[0], p[3] - p[1]
        target = [((g[0] + g[2]) / 2 - (p[0] + p[2]) / 2) / pw / 0.1,
                  ((g[1] + g[3]) / 2 - (p[1] + p[3]) / 2) / ph / 0.1,
                  np.log((g[2] - g[0]) / pw) / 0.2, np.log((g[3] - g[1]) / ph) / 0.2]
        d = np.abs(loc[j] - target)
        smooth += np.where(d < 1, 0.5 * d * d, d - 0.5).sum()
    logp = conf - np.log(np.exp(conf).sum(axis=1, keepdims=True))
    if mining:  # 2 positives x neg_pos_ratio 1: the 2 unmatched priors of largest -log p(bg)
        negatives = sorted([2, 3, 4, 5], key=lambda j: logp[j, 0])[:2]
    else:
        negatives = [2, 3, 4, 5]
    ce = -sum(logp[j, LABEL] for j in matched) - sum(logp[j, 0] for j in negatives)
    return (smooth + ce) / len(matched)  # VALID: divided by the number of matches


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multibox_loss_by_hand(seed: int) -> None:
    inputs = _inputs(seed)
    loss = _layer()(*(torch.from_numpy(a) for a in inputs))[0]
    assert loss.shape == ()
    np.testing.assert_allclose(float(loss), _by_hand(inputs[0], inputs[1]), rtol=1e-5)


def test_multibox_loss_without_mining_counts_every_prior() -> None:
    inputs = _inputs(3)
    layer = _layer().__class__(parse_text_proto(
        'name: "loss" type: "MultiBoxLoss" multibox_loss_param { num_classes: 3 code_type: CENTER_SIZE '
        "mining_type: NONE }", caffe_pb2.LayerParameter), [a.shape for a in inputs], TEST)
    loss = layer(*(torch.from_numpy(a) for a in inputs))[0]
    np.testing.assert_allclose(float(loss), _by_hand(inputs[0], inputs[1], mining=False), rtol=1e-5)


def test_multibox_loss_propagate_down_drops_a_term() -> None:
    """Only the terms of the bottoms with propagate_down count (the fork's Forward_cpu)."""
    inputs = _inputs(4)
    both = float(_layer()(*(torch.from_numpy(a) for a in inputs))[0])
    param = parse_text_proto(
        'name: "loss" type: "MultiBoxLoss" propagate_down: false propagate_down: true propagate_down: false '
        "propagate_down: false multibox_loss_param { num_classes: 3 overlap_threshold: 0.5 "
        "neg_pos_ratio: 1 code_type: CENTER_SIZE }", caffe_pb2.LayerParameter)
    conf_only = LAYERS.get("MultiBoxLoss").cls(param, [a.shape for a in inputs], TEST)
    zero_loc = [np.zeros_like(inputs[0])] + inputs[1:]
    value = float(conf_only(*(torch.from_numpy(a) for a in inputs))[0])
    assert value == pytest.approx(float(conf_only(*(torch.from_numpy(a) for a in zero_loc))[0]))
    assert value < both


def test_multibox_loss_gradcheck() -> None:
    loc, conf, prior, gt = (torch.from_numpy(a) for a in _inputs(5, np.float64))
    layer = _layer()
    loc.requires_grad_(True)
    conf.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: layer(a, b, prior, gt)[0], (loc, conf), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("extra,field", [("conf_loss_type: LOGISTIC", "LOGISTIC"),
                                         ("", "HARD_EXAMPLE"),
                                         ("bp_inside: true", "bp_inside"),
                                         ("use_prior_for_matching: false", "use_prior_for_matching")])
def test_multibox_loss_unimplemented_settings_are_named(extra: str, field: str) -> None:
    with pytest.raises(LayerError) as info:
        _layer(extra, "HARD_EXAMPLE" if field == "HARD_EXAMPLE" else "MAX_NEGATIVE")
    assert field in str(info.value) and "layer 'loss' (MultiBoxLoss)" in str(info.value)
