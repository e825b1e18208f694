"""Loss layers and Accuracy against real Caffe's golden cases, plus Caffe's documented edge cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from caffelike.errors import LayerError
from caffelike.layers import LAYERS
from caffelike.proto import caffe_pb2

from .golden_case import cases_for, run_case

LOSS_TYPES = ("Accuracy", "ContrastiveLoss", "EuclideanLoss", "HingeLoss", "InfogainLoss",
              "MultinomialLogisticLoss", "SigmoidCrossEntropyLoss", "SoftmaxWithLoss")


@pytest.mark.parametrize("case", cases_for(*LOSS_TYPES))
def test_golden(case: str) -> None:
    run_case(case)


def _layer(type_name: str, shapes, tops=("loss",), phase: int = caffe_pb2.TRAIN, **fields):
    bottoms = [f"b{i}" for i in range(len(shapes))]
    lp = caffe_pb2.LayerParameter(name="l", type=type_name, bottom=bottoms, top=list(tops), **fields)
    return LAYERS.get(type_name).cls(lp, [tuple(s) for s in shapes], phase)


def test_loss_layers_are_registered_as_losses() -> None:
    for t in LOSS_TYPES:
        assert LAYERS.get(t).is_loss == (t != "Accuracy"), t


def test_softmax_loss_second_top_is_refused_like_caffe() -> None:
    # layer.hpp SetLossWeights: "loss_weight must be unspecified or specified once per top blob."
    for weights in ([], [1.0, 0.0]):
        with pytest.raises(LayerError, match="loss_weight must be unspecified or specified "
                                             "once per top blob: SoftmaxWithLoss with a second"):
            _layer("SoftmaxWithLoss", [(4, 5), (4,)], tops=("loss", "prob"), loss_weight=weights)


def test_softmax_loss_all_ignored_normalizer_is_one() -> None:
    # softmax_loss_layer.cpp get_normalizer: max(1, valid_count); all ignored -> loss 0, grad 0
    lp = caffe_pb2.LossParameter(ignore_label=3)
    layer = _layer("SoftmaxWithLoss", [(2, 4), (2,)], loss_param=lp)
    x = torch.randn(2, 4, requires_grad=True)
    loss = layer(x, torch.tensor([3.0, 3.0]))[0]
    assert loss.shape == () and loss.item() == 0.0
    loss.backward()
    assert torch.count_nonzero(x.grad) == 0


@pytest.mark.parametrize("normalize,divisor", [(True, 3.0), (False, 2.0)])
def test_softmax_loss_legacy_normalize(normalize: bool, divisor: float) -> None:
    # softmax_loss_layer.cpp LayerSetUp: normalize true -> VALID, false -> BATCH_SIZE
    lp = caffe_pb2.LossParameter(normalize=normalize, ignore_label=0)
    layer = _layer("SoftmaxWithLoss", [(2, 3, 2), (2, 2)], loss_param=lp)
    x = torch.zeros(2, 3, 2)  # uniform softmax: each counted label contributes log(3)
    labels = torch.tensor([[1.0, 2.0], [0.0, 1.0]])  # 3 valid, outer 2
    loss = layer(x, labels)[0]
    assert math.isclose(loss.item(), 3 * math.log(3.0) / divisor, rel_tol=1e-6)


def test_softmax_loss_label_count_mismatch_is_a_layer_error() -> None:
    with pytest.raises(LayerError, match="number of labels must match"):
        _layer("SoftmaxWithLoss", [(4, 5, 2), (4,)])


def test_loss_first_axis_mismatch_is_a_layer_error() -> None:
    with pytest.raises(LayerError, match="same first dimension"):
        _layer("EuclideanLoss", [(4, 5), (3, 5)])


def test_sigmoid_cross_entropy_default_is_batch_size_and_ignore_label() -> None:
    # sigmoid_cross_entropy_loss_layer.cpp: BATCH_SIZE default; ignored targets add nothing
    x = torch.zeros(2, 3, requires_grad=True)
    t = torch.tensor([[1.0, 0.0, -1.0], [0.0, -1.0, 1.0]])
    layer = _layer("SigmoidCrossEntropyLoss", [(2, 3), (2, 3)],
                   loss_param=caffe_pb2.LossParameter(ignore_label=-1))
    loss = layer(x, t)[0]
    assert math.isclose(loss.item(), 4 * math.log(2.0) / 2, rel_tol=1e-6)
    loss.backward()
    assert x.grad[0, 2].item() == 0.0 and x.grad[1, 1].item() == 0.0
    assert math.isclose(x.grad[0, 0].item(), (0.5 - 1.0) / 2, rel_tol=1e-6)


def test_multinomial_logistic_clips_at_1e20() -> None:
    # multinomial_logistic_loss_layer.cpp: prob = max(p, kLOG_THRESHOLD = 1e-20)
    layer = _layer("MultinomialLogisticLoss", [(1, 2), (1,)])
    p = torch.tensor([[0.0, 1.0]], requires_grad=True)
    loss = layer(p, torch.tensor([0.0]))[0]
    assert math.isclose(loss.item(), -math.log(np.float32(1e-20)), rel_tol=1e-6)
    loss.backward()
    assert math.isclose(p.grad[0, 0].item(), -1.0 / float(np.float32(1e-20)), rel_tol=1e-6)
    assert p.grad[0, 1].item() == 0.0


def test_infogain_source_binaryproto(tmp_path) -> None:
    # infogain_loss_layer.cpp: H read from infogain_loss_param.source; identity H = softmax loss
    blob = caffe_pb2.BlobProto(data=np.eye(3, dtype=np.float32).ravel().tolist())
    blob.shape.dim.extend([1, 1, 3, 3])
    path = tmp_path / "H.binaryproto"
    path.write_bytes(blob.SerializeToString())
    ip = caffe_pb2.InfogainLossParameter(source=str(path))
    layer = _layer("InfogainLoss", [(2, 3), (2,)], infogain_loss_param=ip)
    x = torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.0, -1.0]])
    loss = layer(x, torch.tensor([2.0, 0.0]))[0]
    want = -(torch.log_softmax(x, 1)[0, 2] + torch.log_softmax(x, 1)[1, 0]) / 2
    assert math.isclose(loss.item(), want.item(), rel_tol=1e-6)


def test_infogain_needs_a_matrix() -> None:
    with pytest.raises(LayerError, match="Infogain matrix source must be specified"):
        _layer("InfogainLoss", [(2, 3), (2,)])


def test_infogain_prob_top_needs_two_loss_weights() -> None:
    shapes = [(2, 3), (2,), (3, 3)]
    with pytest.raises(LayerError, match="loss_weight"):
        _layer("InfogainLoss", shapes, tops=("loss", "prob"))
    layer = _layer("InfogainLoss", shapes, tops=("loss", "prob"), loss_weight=[1.0, 0.0])
    x = torch.randn(2, 3)
    loss, prob = layer(x, torch.tensor([0.0, 1.0]), torch.eye(3))
    assert torch.allclose(prob, torch.softmax(x, 1))
    assert layer.top_shapes(shapes) == [(), (2, 3)]


def test_contrastive_loss_gradient_uses_d_plus_1e4() -> None:
    # contrastive_loss_layer.cpp Backward_cpu: beta = -alpha * mdist / (dist + 1e-4)
    layer = _layer("ContrastiveLoss", [(1, 2, 1, 1), (1, 2, 1, 1), (1, 1, 1, 1)])
    a = torch.tensor([[[[0.3]], [[0.4]]]], requires_grad=True)  # d = 0.5
    b = torch.zeros(1, 2, 1, 1, requires_grad=True)
    loss = layer(a, b, torch.zeros(1, 1, 1, 1))[0]
    assert math.isclose(loss.item(), 0.5 ** 2 / 2, rel_tol=1e-6)
    loss.backward()
    beta = -0.5 / (0.5 + 1e-4)
    assert np.allclose(a.grad.flatten().numpy(), [beta * 0.3, beta * 0.4], rtol=1e-6)
    assert torch.equal(b.grad, -a.grad)


def test_accuracy_ties_count_against_the_true_class() -> None:
    # accuracy_layer.cpp: every class scoring >= the true one counts as "better"
    layer = _layer("Accuracy", [(2, 3), (2,)], tops=("acc",))
    x = torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    assert layer(x, torch.tensor([0.0, 1.0]))[0].item() == 0.5


def test_accuracy_top_k_larger_than_classes_is_a_layer_error() -> None:
    with pytest.raises(LayerError, match="top_k"):
        _layer("Accuracy", [(2, 3), (2,)], tops=("acc",),
               accuracy_param=caffe_pb2.AccuracyParameter(top_k=4))


def test_out_of_range_label_is_a_layer_error() -> None:
    layer = _layer("SoftmaxWithLoss", [(2, 3), (2,)])
    with pytest.raises(LayerError, match="label 3 out of range"):
        layer(torch.zeros(2, 3), torch.tensor([0.0, 3.0]))
    with pytest.raises(LayerError, match="label -1 out of range"):
        layer(torch.zeros(2, 3), torch.tensor([-1.0, 2.0]))


def test_softmax_loss_without_ignore_label_is_cross_entropy() -> None:
    # the path with no label mask: torch's cross-entropy is the oracle for value and gradient
    layer = _layer("SoftmaxWithLoss", [(4, 3), (4,)])
    x = torch.tensor([[0.5, -1.0, 2.0], [0.0, 0.3, -0.2], [1.5, 1.0, 0.5], [-2.0, 0.0, 2.0]],
                     requires_grad=True)
    labels = torch.tensor([2.0, 0.0, 1.0, 2.0])
    loss = layer(x, labels)[0]
    loss.backward()
    ref_x = x.detach().clone().requires_grad_(True)
    ref = torch.nn.functional.cross_entropy(ref_x, labels.long())
    ref.backward()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(x.grad, ref_x.grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_softmax_loss_clips_at_flt_min_but_its_gradient_does_not(dtype) -> None:
    # softmax_loss_layer.cpp: loss -= log(max(prob[label], FLT_MIN)); backward (prob - onehot),
    # unclipped. Row 0's label has prob exp(-200) (clipped), row 1's exp(-50) (not clipped).
    layer = _layer("SoftmaxWithLoss", [(2, 2), (2,)])
    x = torch.tensor([[200.0, 0.0], [50.0, 0.0]], dtype=dtype, requires_grad=True)
    loss = layer(x, torch.tensor([1.0, 1.0], dtype=dtype))[0]
    flt_min = float(np.finfo(np.float32).tiny)
    expected = (-math.log(flt_min) + 50.0 + math.log1p(math.exp(-50.0))) / 2
    assert loss.dtype == dtype
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    loss.backward(torch.tensor(3.0, dtype=dtype))  # a loss weight of 3
    p1 = 1.0 / (1.0 + math.exp(-50.0))
    expected_grad = np.array([[1.0, -1.0], [p1, -p1]]) * 3.0 / 2
    np.testing.assert_allclose(x.grad.numpy(), expected_grad, rtol=1e-6)


def test_softmax_loss_of_a_minus_inf_score_is_clipped_not_nan() -> None:
    # Row 0's label scores -inf: prob 0, so Caffe's loss term is -log(FLT_MIN) and its
    # gradient prob - onehot = (1, -1); row 1 is ordinary.
    layer = _layer("SoftmaxWithLoss", [(2, 2), (2,)])
    x = torch.tensor([[0.0, -math.inf], [1.0, 0.0]], requires_grad=True)
    loss = layer(x, torch.tensor([1.0, 0.0]))[0]
    flt_min = float(np.finfo(np.float32).tiny)
    q = 1.0 / (1.0 + math.exp(-1.0))  # row 1: prob of its label 0
    assert float(loss) == pytest.approx((-math.log(flt_min) - math.log(q)) / 2, rel=1e-6)
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), np.array([[1.0, -1.0], [q - 1.0, 1.0 - q]]) / 2, rtol=1e-6)


@pytest.mark.parametrize("mode,divisor", [("VALID", 3), ("FULL", 3), ("BATCH_SIZE", 3), ("NONE", 1)])
def test_softmax_loss_normalization_of_row_scores(mode: str, divisor: int) -> None:
    lp = caffe_pb2.LossParameter(normalization=getattr(caffe_pb2.LossParameter, mode))
    layer = _layer("SoftmaxWithLoss", [(3, 4), (3,)], loss_param=lp)
    x = torch.tensor([[0.1, 0.2, 0.3, 0.4], [2.0, -1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 5.0]],
                     dtype=torch.float64, requires_grad=True)
    labels = [3, 0, 1]
    layer(x, torch.tensor(labels, dtype=torch.float64))[0].backward()
    xs = x.detach().numpy()
    p = np.exp(xs) / np.exp(xs).sum(axis=1, keepdims=True)
    expected = -sum(math.log(p[i, y]) for i, y in enumerate(labels)) / divisor
    assert float(layer(x, torch.tensor(labels, dtype=torch.float64))[0]) == pytest.approx(expected, rel=1e-12)
    p[np.arange(3), labels] -= 1
    np.testing.assert_allclose(x.grad.numpy(), p / divisor, rtol=1e-12)


@pytest.mark.parametrize("type_name,shapes", [
    ("SoftmaxWithLoss", [(2, 3, 4), (2, 4)]),
    ("EuclideanLoss", [(2, 3), (2, 3)]),
    ("HingeLoss", [(2, 3), (2,)]),
    ("SigmoidCrossEntropyLoss", [(2, 3), (2, 3)]),
    ("MultinomialLogisticLoss", [(2, 3), (2,)]),
    ("ContrastiveLoss", [(2, 3), (2, 3), (2,)]),
])
def test_loss_top_is_scalar(type_name: str, shapes) -> None:
    layer = _layer(type_name, shapes)
    assert layer.top_shapes(shapes) == [()]


def test_accuracy_top_shapes() -> None:
    layer = _layer("Accuracy", [(4, 5), (4,)], tops=("acc", "per_class"))
    assert layer.top_shapes([(4, 5), (4,)]) == [(), (5,)]
