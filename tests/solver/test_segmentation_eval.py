"""ParseNet's ``eval_type: "segmentation"`` (weiliu89/caffe branch fcn, ``Solver::TestSegmentation``):
the test net's ParseEvaluate counts are summed over the test batches and logged as per-pixel and
per-label accuracy and (weighted) IoU. Expected values worked out by hand with the fork's formulas."""
from __future__ import annotations

import logging

from types import SimpleNamespace

import pytest
import torch

import caffelike
from caffelike.solver.scoring import OutputSums
from caffelike.solver.segmentation import segmentation_lines

NET = """
layer { name: "data" type: "DummyData" top: "data" top: "label"
        dummy_data_param { shape { dim: 2 dim: 3 dim: 4 dim: 5 } shape { dim: 2 dim: 1 dim: 4 dim: 5 }
                           data_filler { type: "gaussian" } data_filler { type: "uniform" min: 0 max: 3.99 } } }
layer { name: "score" type: "Convolution" bottom: "data" top: "score"
        convolution_param { num_output: 4 kernel_size: 1 weight_filler { type: "gaussian" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss"
        include { phase: TRAIN } }
layer { name: "pred" type: "ParseOutput" bottom: "score" top: "pred" include { phase: TEST } }
layer { name: "evaluation" type: "ParseEvaluate" bottom: "pred" bottom: "label" top: "evaluation"
        parse_evaluate_param { num_labels: 4 ignore_label: 3 } include { phase: TEST } }
"""


def _sums(*batches: list[list[int]]) -> OutputSums:
    sums = OutputSums()
    net = SimpleNamespace(loss_weights={}, output_names=["evaluation"])
    for counts in batches:
        sums.add(net, {"evaluation": torch.tensor(counts, dtype=torch.float32).reshape(1, -1, 1, 3)}, 0.0)
    return sums


def test_segmentation_scores_hand_case() -> None:
    """Summed (right, labelled, predicted) per label: (3, 4, 4), (1, 2, 0), (0, 0, 1). Pixel
    accuracy 4/6; label accuracy (3/4 + 1/2) / 2; IoU 3/5, 1/1, 0/1 over 2 labelled labels:
    1.6/2; weighted 3/5 * 4/6 + 1 * 2/6."""
    sums = _sums([[2, 3, 4], [1, 2, 0], [0, 0, 1]], [[1, 1, 0], [0, 0, 0], [0, 0, 0]])
    head = "    Test net output #0 evaluation: "
    assert segmentation_lines(sums, {"evaluation": 3}) == [
        head + "per_pixel_acc = 0.666667", head + "per_label_acc = 0.625",
        head + "iou_acc = 0.8", head + "weighted_iou_acc = 0.733333"]
    assert segmentation_lines(_sums([[0, 0, 2], [0, 0, 0]]), {"evaluation": 2}) == [head + "no valid labels!"]


def test_solver_logs_segmentation_scores(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "net.prototxt").write_text(NET)
    solver_file = tmp_path / "solver.prototxt"
    solver_file.write_text(f'net: "{tmp_path / "net.prototxt"}"\nbase_lr: 0.01\nlr_policy: "fixed"\n'
                           'max_iter: 1\ntest_iter: 2\ntest_interval: 1\neval_type: "segmentation"\n'
                           'snapshot_after_train: false\n')
    solver = caffelike.get_solver(str(solver_file))
    with caplog.at_level(logging.INFO, logger="caffelike"):
        solver.solve()
    lines = [r.getMessage() for r in caplog.records if "Test net output" in r.getMessage()]
    names = ["per_pixel_acc", "per_label_acc", "iou_acc", "weighted_iou_acc"]
    assert [line.split(": ")[1].split(" = ")[0] for line in lines] == names * 2  # before and after training
    assert all(0 <= float(line.rsplit(" = ", 1)[1]) <= 1 for line in lines)
