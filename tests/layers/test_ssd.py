"""SSD's layers (weiliu89/caffe branch ssd), issue 16: PriorBox, Permute, Normalize, DetectionOutput.

Forward oracle: OpenCV dnn, run live on the same prototxt (and caffemodel, written by caffelike)
and input. Where OpenCV and the fork's source disagree the source wins, and the test says so.
Backward: float64 central finite differences (torch.autograd.gradcheck), Caffe's GradientChecker
method, for the layers with a backward in the fork (Permute, Normalize).
"""
from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch

import caffelike
from caffelike.io import parse_text_proto
from caffelike.errors import LayerError
from caffelike.layers.base import LAYERS
from caffelike.proto import caffe_pb2

cv2 = pytest.importorskip("cv2")


def _input(name: str, shape: tuple[int, ...]) -> str:
    dims = " ".join(f"dim: {d}" for d in shape)
    return f'layer {{ name: "{name}" type: "Input" top: "{name}" input_param {{ shape {{ {dims} }} }} }}\n'


def _run_both(tmp_path: pathlib.Path, text: str, inputs: dict[str, np.ndarray], top: str,
              params: dict[str, list[np.ndarray]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(caffelike's, OpenCV's) value of ``top`` for the same prototxt, weights and inputs."""
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    net = caffelike.Net(str(path), caffelike.TEST)
    weights = None
    if params:
        for name, values in params.items():
            for blob, value in zip(net.params[name], values):
                blob.data[...] = value
        weights = tmp_path / "net.caffemodel"
        net.save(str(weights))
    ours = np.array(net.forward(**inputs)[top])
    threads = cv2.getNumThreads()  # one thread: a running OpenCV pool deadlocks later forked workers
    cv2.setNumThreads(0)
    try:
        cv_net = cv2.dnn.readNetFromCaffe(str(path), str(weights)) if weights else cv2.dnn.readNetFromCaffe(str(path))
        for name, value in inputs.items():
            cv_net.setInput(value, name)
        return ours, cv_net.forward(top)
    finally:
        cv2.setNumThreads(threads)


def _layer(text: str, bottom_shapes: list[tuple[int, ...]]):
    param = parse_text_proto(text, caffe_pb2.LayerParameter)
    return LAYERS.get(param.type).cls(param, bottom_shapes, caffelike.TEST)


# ---------------------------------------------------------------------------------------------
# PriorBox

PRIOR_CASES = {
    "min_max_ar2_flip": "min_size: 60 max_size: 105 aspect_ratio: 2 flip: true variance: 0.1 variance: 0.1 "
                        "variance: 0.2 variance: 0.2 offset: 0.5 clip: false",
    "ar23_noflip_clip": "min_size: 30 aspect_ratio: 2 aspect_ratio: 3 flip: false clip: true variance: 0.1",
    "duplicate_ratios": "min_size: 20 aspect_ratio: 1 aspect_ratio: 2 aspect_ratio: 2.0000001 aspect_ratio: 0.5 "
                        "flip: true clip: false variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2",
    "two_min_sizes": "min_size: 16 min_size: 40 max_size: 32 max_size: 64 aspect_ratio: 3 clip: true variance: 0.2",
    "img_step_offset": "min_size: 24 img_size: 96 step: 10 offset: 0.25 aspect_ratio: 2 clip: false variance: 0.1",
    "img_hw_step_hw": "min_size: 24 max_size: 50 img_h: 80 img_w: 120 step_h: 9 step_w: 13 offset: 0 clip: false "
                      "variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2",
}


def _prior_net(param: str, image: tuple[int, int] = (60, 84)) -> str:
    return (_input("feat", (1, 4, 5, 7)) + _input("data", (1, 3, *image)) +
            'layer { name: "prior" type: "PriorBox" bottom: "feat" bottom: "data" top: "prior" '
            f"prior_box_param {{ {param} }} }}\n")


PRIOR_INPUTS = {"feat": np.zeros((1, 4, 5, 7), np.float32), "data": np.zeros((1, 3, 60, 84), np.float32)}


@pytest.mark.parametrize("case", PRIOR_CASES)
def test_prior_box_matches_opencv(tmp_path: pathlib.Path, case: str) -> None:
    """OpenCV on the same prototxt; every case spells ``clip`` (see the next test).

    With img_size (img_h/img_w) the fork divides by those sizes, not by the image bottom's;
    OpenCV ignores them and uses the image bottom: its image input then gets that size (a
    different prototxt only there), ours keeps 60x84, the source wins."""
    param = PRIOR_CASES[case]
    ours, _ = _run_both(tmp_path, _prior_net(param), PRIOR_INPUTS, "prior")
    image = {"img_step_offset": (96, 96), "img_hw_step_hw": (80, 120)}.get(case, (60, 84))
    cv_inputs = {"feat": PRIOR_INPUTS["feat"], "data": np.zeros((1, 3, *image), np.float32)}
    _, theirs = _run_both(tmp_path, _prior_net(param, image), cv_inputs, "prior")
    assert ours.shape == theirs.shape and ours.shape[:2] == (1, 2)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)


def test_prior_box_clip_defaults_to_false_as_the_fork(tmp_path: pathlib.Path) -> None:
    """caffe.proto of the fork: ``optional bool clip = 5 [default = false]``; OpenCV clips when
    the field is absent. The source wins: no clip equals OpenCV's ``clip: false``."""
    param = "min_size: 60 max_size: 105 aspect_ratio: 2 variance: 0.1"
    ours, theirs_default = _run_both(tmp_path, _prior_net(param), PRIOR_INPUTS, "prior")
    _, theirs_false = _run_both(tmp_path, _prior_net(param + " clip: false"), PRIOR_INPUTS, "prior")
    np.testing.assert_allclose(ours, theirs_false, rtol=0, atol=1e-6)
    assert ours.min() < 0 and theirs_default.min() >= 0


def test_prior_box_order_and_dedup() -> None:
    """The fork's box order in a cell: min square, sqrt(min*max) square, then ratios 2, 1/2 (the
    repeated 2 and the explicit 1 are dropped); checked by hand on one cell."""
    layer = _layer('name: "p" type: "PriorBox" prior_box_param { min_size: 10 max_size: 40 '
                   "aspect_ratio: 1 aspect_ratio: 2 aspect_ratio: 2 flip: true img_size: 100 step: 20 }",
                   [(1, 1, 1, 1), (1, 3, 100, 100)])
    assert layer.num_priors == 4
    top = layer(torch.zeros(1, 1, 1, 1), torch.zeros(1, 3, 100, 100))[0].numpy()
    boxes = top[0, 0].reshape(-1, 4) * 100  # the cell's centre is (10, 10)
    r = np.sqrt(2.0)
    expected = [[5, 5, 15, 15], [0, 0, 20, 20], [10 - 5 * r, 10 - 5 / r, 10 + 5 * r, 10 + 5 / r],
                [10 - 5 / r, 10 - 5 * r, 10 + 5 / r, 10 + 5 * r]]
    np.testing.assert_allclose(boxes, expected, atol=1e-4)
    np.testing.assert_array_equal(top[0, 1], np.float32(0.1))  # default variance


def test_prior_box_truncates_min_size_as_the_fork(tmp_path: pathlib.Path) -> None:
    """The fork's Forward_cpu reads ``int min_size_ = min_sizes_[s]`` (and max sizes likewise):
    min_size 37.6 / max_size 80.9 act as 37 / 80. OpenCV keeps the float sizes, so OpenCV is
    the oracle only on the truncated prototxt: the source wins."""
    def text(sizes: str) -> str:
        return (_input("feat", (1, 2, 3, 3)) + _input("data", (1, 3, 90, 90)) +
                'layer { name: "prior" type: "PriorBox" bottom: "feat" bottom: "data" top: "prior" '
                f"prior_box_param {{ {sizes} aspect_ratio: 2 flip: true clip: false variance: 0.1 }} }}\n")
    inputs = {"feat": np.zeros((1, 2, 3, 3), np.float32), "data": np.zeros((1, 3, 90, 90), np.float32)}
    ours, theirs_float = _run_both(tmp_path, text("min_size: 37.6 max_size: 80.9"), inputs, "prior")
    _, theirs_int = _run_both(tmp_path, text("min_size: 37 max_size: 80"), inputs, "prior")
    np.testing.assert_allclose(ours, theirs_int, rtol=0, atol=1e-6)
    assert np.abs(ours - theirs_float).max() > 1e-3


@pytest.mark.parametrize("param,message", [
    ("", "must provide min_size"),
    ("min_size: 10 max_size: 5", "max_size 5 must be greater than min_size 10"),
    ("min_size: 10 variance: 0.1 variance: 0.2", "2 variance values; expected 1 or 4"),
    ("min_size: 10 img_size: 10 img_h: 10 img_w: 10", "either img_size or img_h/img_w"),
])
def test_prior_box_errors_name_the_layer(param: str, message: str) -> None:
    with pytest.raises(LayerError) as info:
        _layer(f'name: "p" type: "PriorBox" prior_box_param {{ {param} }}', [(1, 1, 2, 2), (1, 3, 8, 8)])
    assert message in str(info.value) and "'p'" in str(info.value)


# ---------------------------------------------------------------------------------------------
# Permute

PERMUTES = [((2, 3, 4, 5), (0, 2, 3, 1)), ((2, 3, 4, 5), (0, 3, 1, 2)), ((2, 3, 4, 5), (1, 0, 2, 3)),
            ((2, 3, 4, 5), (0, 1, 2, 3)), ((3, 4, 5), (0, 2, 1))]


@pytest.mark.parametrize("shape,order", PERMUTES, ids=[f"{len(s)}d_{''.join(map(str, o))}" for s, o in PERMUTES])
def test_permute_matches_opencv(tmp_path: pathlib.Path, shape, order) -> None:
    orders = " ".join(f"order: {o}" for o in order)
    text = _input("data", shape) + ('layer { name: "perm" type: "Permute" bottom: "data" top: "perm" '
                                    f"permute_param {{ {orders} }} }}\n")
    x = np.random.default_rng(len(order)).normal(size=shape).astype(np.float32)
    ours, theirs = _run_both(tmp_path, text, {"data": x}, "perm")
    full = list(order) + [i for i in range(len(shape)) if i not in order]
    assert ours.shape == tuple(shape[i] for i in full)
    np.testing.assert_array_equal(ours, theirs.reshape(ours.shape))


def test_permute_partial_order_appends_the_other_axes() -> None:
    """permute_layer.cpp: axes not named follow in increasing order (order 0, 3 = 0, 3, 1, 2).
    OpenCV refuses a partial order, so numpy's transpose is the oracle here."""
    layer = _layer('name: "perm" type: "Permute" permute_param { order: 0 order: 3 }', [(2, 3, 4, 5)])
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 5)).astype(np.float32)
    np.testing.assert_array_equal(layer(torch.from_numpy(x))[0].numpy(), x.transpose(0, 3, 1, 2))


def test_permute_gradcheck() -> None:
    layer = _layer('name: "perm" type: "Permute" permute_param { order: 0 order: 2 order: 3 order: 1 }',
                   [(2, 3, 2, 4)])
    x = torch.randn(2, 3, 2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: layer(t)[0], (x,), eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("order,message", [("order: 4", "should be less than"), ("order: 1 order: 1", "duplicate")])
def test_permute_errors(order: str, message: str) -> None:
    with pytest.raises(LayerError, match=message):
        _layer(f'name: "perm" type: "Permute" permute_param {{ {order} }}', [(2, 3, 4, 5)])


# ---------------------------------------------------------------------------------------------
# Normalize

NORMS = [(True, True), (True, False), (False, True), (False, False)]


def _normalize_net(shape: tuple[int, ...], across: bool, shared: bool) -> str:
    return _input("data", shape) + (
        'layer { name: "norm" type: "Normalize" bottom: "data" top: "norm" norm_param { '
        f"across_spatial: {str(across).lower()} channel_shared: {str(shared).lower()} eps: 1e-10 }} }}\n")


def test_normalize_per_channel_scale_matches_opencv(tmp_path: pathlib.Path) -> None:
    """SSD's conv4_3_norm (across_spatial false, one scale per channel), weights from a caffemodel."""
    shape = (2, 4, 3, 5)
    rng = np.random.default_rng(7)
    x = rng.normal(size=shape).astype(np.float32)
    scale = rng.uniform(1, 20, size=4).astype(np.float32)
    ours, theirs = _run_both(tmp_path, _normalize_net(shape, False, False), {"data": x}, "norm", {"norm": [scale]})
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("across", [True, False])
def test_normalize_channel_shared_matches_opencv(tmp_path: pathlib.Path, across: bool) -> None:
    """channel_shared: the fork's scale blob has no axes (shape ()); OpenCV cannot read such a
    blob from a caffemodel, so both run with the default scale (constant 1) and no weights."""
    shape = (2, 4, 3, 5)
    x = np.random.default_rng(8).normal(size=shape).astype(np.float32)
    ours, theirs = _run_both(tmp_path, _normalize_net(shape, across, True), {"data": x}, "norm")
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("across,shared", NORMS, ids=[f"across{int(a)}_shared{int(s)}" for a, s in NORMS])
def test_normalize_matches_the_forks_formula(across: bool, shared: bool) -> None:
    """normalize_layer.cpp by hand: x / sqrt(sum x^2 + eps), the sum over C*H*W (across_spatial)
    or over C at each position, times the scale. (OpenCV refuses across_spatial with a
    per-channel scale, so this combination has only this oracle.)"""
    layer = _layer(f'name: "n" type: "Normalize" norm_param {{ across_spatial: {str(across).lower()} '
                   f"channel_shared: {str(shared).lower()} eps: 0.5 }}", [(2, 3, 2, 3)])
    rng = np.random.default_rng(9)
    x = rng.normal(size=(2, 3, 2, 3))
    scale = np.array(2.5) if shared else np.array([0.5, 1.5, 2.0])
    with torch.no_grad():
        layer.blobs[0].copy_(torch.from_numpy(scale))
    axes = (1, 2, 3) if across else (1,)
    expected = x / np.sqrt((x ** 2).sum(axis=axes, keepdims=True) + 0.5) * scale.reshape((1, -1, 1, 1) if not shared else ())
    ours = layer(torch.from_numpy(x.astype(np.float32)))[0].detach().numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)


def test_normalize_scale_blob_and_filler() -> None:
    shared = _layer('name: "n" type: "Normalize"', [(1, 3, 2, 2)])
    assert tuple(shared.blobs[0].shape) == () and float(shared.blobs[0].detach()) == 1.0  # fork default: constant 1
    per_channel = _layer('name: "n" type: "Normalize" norm_param { channel_shared: false '
                         'scale_filler { type: "constant" value: 20 } }', [(1, 3, 2, 2)])
    np.testing.assert_array_equal(per_channel.blobs[0].detach().numpy(), [20, 20, 20])


@pytest.mark.parametrize("across,shared", NORMS, ids=[f"across{int(a)}_shared{int(s)}" for a, s in NORMS])
def test_normalize_gradcheck(across: bool, shared: bool) -> None:
    layer = _layer(f'name: "n" type: "Normalize" norm_param {{ across_spatial: {str(across).lower()} '
                   f"channel_shared: {str(shared).lower()} eps: 0.001 }}", [(2, 3, 2, 3)]).double()
    with torch.no_grad():
        layer.blobs[0].copy_(torch.tensor(1.7 if shared else [0.5, 1.5, 2.0], dtype=torch.float64))
    x = torch.randn(2, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t, s: _with_scale(layer, t, s), (x, layer.blobs[0]), eps=1e-6, atol=1e-7)


def _with_scale(layer, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return layer(x)[0]


# ---------------------------------------------------------------------------------------------
# DetectionOutput

def _detection_inputs(seed: int, num: int, priors: int, classes: int, loc_classes: int,
                      sharp: float = 4.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    centre = rng.uniform(0.2, 0.8, size=(priors, 2))
    size = rng.uniform(0.1, 0.4, size=(priors, 2))
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    variances = np.tile([0.1, 0.1, 0.2, 0.2], (priors, 1))
    prior = np.stack([boxes.reshape(-1), variances.reshape(-1)])[None].astype(np.float32)
    loc = rng.normal(scale=0.5, size=(num, priors * loc_classes * 4)).astype(np.float32)
    logits = rng.normal(scale=sharp, size=(num, priors, classes))
    conf = np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True)
    return {"loc": loc, "conf": conf.reshape(num, -1).astype(np.float32), "prior": prior}


def _detection_net(inputs: dict[str, np.ndarray], param: str) -> str:
    return ("".join(_input(n, v.shape) for n, v in inputs.items()) +
            'layer { name: "det" type: "DetectionOutput" bottom: "loc" bottom: "conf" bottom: "prior" '
            f"top: \"det\" detection_output_param {{ {param} }} }}\n")


def _fork_order(rows: np.ndarray) -> np.ndarray:
    """Rows in the fork's order: image, then label, then descending score."""
    return rows[np.lexsort((-rows[:, 2], rows[:, 1], rows[:, 0]))]


DETECTIONS = {
    "center_size_shared": (21, True, "background_label_id: 0 code_type: CENTER_SIZE nms_param { nms_threshold: 0.45 top_k: 30 } "
                                     "keep_top_k: 40 confidence_threshold: 0.2"),
    "corner_unshared": (5, False, "background_label_id: 0 code_type: CORNER nms_param { nms_threshold: 0.3 } "
                                  "confidence_threshold: 0.1 keep_top_k: 1000"),
    "bg2_top_k": (6, True, "code_type: CENTER_SIZE background_label_id: 2 "
                           "nms_param { nms_threshold: 0.5 top_k: 10 } confidence_threshold: 0.05 keep_top_k: 1000"),
    "variance_in_target": (4, True, "background_label_id: 0 code_type: CENTER_SIZE variance_encoded_in_target: true "
                                    "nms_param { nms_threshold: 0.4 } confidence_threshold: 0.3 keep_top_k: 7"),
}


@pytest.mark.parametrize("case", DETECTIONS)
def test_detection_output_matches_opencv(tmp_path: pathlib.Path, case: str) -> None:
    """Same detections as OpenCV. The fork writes them image by image, by increasing label and
    descending score within a label (detection_output_layer.cpp); OpenCV sorts each image's by
    score and pads the top to keep_top_k rows of zeros: rows are compared in the fork's order."""
    classes, shared, param = DETECTIONS[case]
    inputs = _detection_inputs(len(case), 2, 40, classes, 1 if shared else classes)
    if "variance_encoded_in_target: true" in param:  # no variances needed: OpenCV wants none
        inputs["prior"] = inputs["prior"][:, :1]
    param = f"num_classes: {classes} share_location: {str(shared).lower()} {param}"  # OpenCV needs both spelt
    ours, theirs = _run_both(tmp_path, _detection_net(inputs, param), inputs, "det")
    assert ours.shape[:2] == (1, 1) and ours.shape[3] == 7
    rows = ours[0, 0]
    assert len(rows) > 3 and len(set(rows[:, 0])) == 2  # detections in both images
    np.testing.assert_array_equal(rows, _fork_order(rows))
    cv_rows = theirs.reshape(-1, 7)
    cv_rows = cv_rows[cv_rows[:, 2] > 0]
    assert len(cv_rows) == len(rows)
    np.testing.assert_allclose(rows, _fork_order(cv_rows), rtol=0, atol=1e-5)


@pytest.mark.parametrize("encoded", [False, True])
def test_detection_output_corner_size_decoding(encoded: bool) -> None:
    """CORNER_SIZE (OpenCV does not know it): bbox_util.cpp's DecodeBBox by hand,
    prior corner + variance * offset * prior size (no variance when encoded in the target)."""
    inputs = _detection_inputs(11, 1, 12, 3, 1)
    layer = _layer('name: "det" type: "DetectionOutput" detection_output_param { num_classes: 3 '
                   f"code_type: CORNER_SIZE variance_encoded_in_target: {str(encoded).lower()} "
                   "nms_param { nms_threshold: 1 } }", [v.shape for v in inputs.values()])
    rows = layer(*(torch.from_numpy(v) for v in inputs.values()))[0].numpy()[0, 0]
    priors = inputs["prior"][0, 0].reshape(-1, 4).astype(np.float64)
    var = 1.0 if encoded else inputs["prior"][0, 1].reshape(-1, 4)
    size = np.tile(priors[:, 2:] - priors[:, :2], 2)
    boxes = priors + var * inputs["loc"].reshape(-1, 4) * size
    conf = inputs["conf"].reshape(12, 3)
    assert len(rows) == 24  # no threshold, nms_threshold 1: every prior for labels 1 and 2
    for label, score, *box in rows[:, 1:]:
        (idx,) = np.nonzero(conf[:, int(label)] == np.float32(score))[0]
        np.testing.assert_allclose(box, boxes[idx], rtol=0, atol=1e-6)


def _det_layer(inputs: dict[str, np.ndarray], param: str):
    return _layer(f'name: "det" type: "DetectionOutput" detection_output_param {{ {param} }}',
                  [v.shape for v in inputs.values()])


def _det_rows(layer, inputs: dict[str, np.ndarray]) -> np.ndarray:
    return layer(*(torch.from_numpy(v) for v in inputs.values()))[0].numpy()[0, 0]


def _hand_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, eta: float) -> list[int]:
    """bbox_util.cpp's ApplyNMSFast written out plainly (float64; no box is near a tie here)."""
    def overlap(a, b):
        w = min(a[2], b[2]) - max(a[0], b[0])
        h = min(a[3], b[3]) - max(a[1], b[1])
        if w <= 0 or h <= 0:
            return 0.0
        area = lambda r: (r[2] - r[0]) * (r[3] - r[1])
        return w * h / (area(a) + area(b) - w * h)
    kept: list[int] = []
    for idx in sorted(range(len(scores)), key=lambda i: -scores[i]):
        if all(overlap(boxes[idx], boxes[k]) <= threshold for k in kept):
            kept.append(idx)
            if eta < 1 and threshold > 0.5:
                threshold *= eta
    return kept


ETA = 0.6


def test_detection_output_eta_shrinks_the_threshold(tmp_path: pathlib.Path) -> None:
    """Adaptive NMS (nms_param.eta): after each kept box the threshold is multiplied by eta
    while above 0.5. OpenCV ignores eta (it gives the eta: 1 result, checked here), so the
    fork's loop written out by hand is the oracle for eta < 1: the source wins."""
    inputs = _detection_inputs(3, 1, 80, 2, 1)
    param = ("num_classes: 2 share_location: true background_label_id: 0 code_type: CORNER "
             "confidence_threshold: 0.2 keep_top_k: 100 nms_param {{ nms_threshold: 0.9 eta: {} }}")
    ours = _det_rows(_det_layer(inputs, param.format(ETA)), inputs)
    _, theirs = _run_both(tmp_path, _detection_net(inputs, param.format(ETA)), inputs, "det")
    ours_plain = _det_rows(_det_layer(inputs, param.format(1)), inputs)
    cv_rows = theirs.reshape(-1, 7)
    np.testing.assert_allclose(ours_plain, _fork_order(cv_rows[cv_rows[:, 2] > 0]), rtol=0, atol=1e-5)
    boxes = (inputs["prior"][0, 0].reshape(-1, 4) + inputs["prior"][0, 1].reshape(-1, 4)
             * inputs["loc"].reshape(-1, 4)).astype(np.float64)
    scores = inputs["conf"].reshape(80, 2)[:, 1].astype(np.float64)
    candidates = np.nonzero(scores > 0.2)[0]
    expected = [candidates[i] for i in _hand_nms(boxes[candidates], scores[candidates], 0.9, ETA)]
    assert len(ours) < len(ours_plain)
    np.testing.assert_allclose(ours[:, 2], scores[expected].astype(np.float32))
    np.testing.assert_allclose(ours[:, 3:], boxes[expected], rtol=0, atol=1e-6)


def test_detection_output_shared_boxes_without_background(tmp_path: pathlib.Path) -> None:
    """share_location with background_label_id: -1: the fork's CPU code (and OpenCV, checked
    here) aborts, "Could not find location predictions for label -1"; its GPU code scores every
    class on the shared boxes. caffelike follows the GPU: labels 1.. equal OpenCV's run with
    background_label_id 0, and label 0 is detected too."""
    inputs = _detection_inputs(4, 2, 30, 3, 1)
    param = ("num_classes: 3 share_location: true code_type: CENTER_SIZE confidence_threshold: 0.3 "
             "keep_top_k: 1000 nms_param {{ nms_threshold: 0.5 }} background_label_id: {}")
    rows = _det_rows(_det_layer(inputs, param.format(-1)), inputs)
    _, theirs = _run_both(tmp_path, _detection_net(inputs, param.format(0)), inputs, "det")
    with pytest.raises(cv2.error, match="label -1"):
        _run_both(tmp_path, _detection_net(inputs, param.format(-1)), inputs, "det")
    cv_rows = theirs.reshape(-1, 7)
    np.testing.assert_allclose(rows[rows[:, 1] > 0], _fork_order(cv_rows[cv_rows[:, 2] > 0]), rtol=0, atol=1e-5)
    assert (rows[:, 1] == 0).sum() > 0


def test_detection_output_keep_top_k_keeps_best_over_classes() -> None:
    inputs = _detection_inputs(3, 1, 30, 5, 1)
    layer = _layer('name: "det" type: "DetectionOutput" detection_output_param { num_classes: 5 '
                   "code_type: CENTER_SIZE nms_param { nms_threshold: 1 } confidence_threshold: 0 "
                   "keep_top_k: 6 }", [v.shape for v in inputs.values()])
    rows = layer(*(torch.from_numpy(v) for v in inputs.values()))[0].numpy()[0, 0]
    scores = inputs["conf"].reshape(30, 5)[:, 1:].reshape(-1)
    np.testing.assert_allclose(np.sort(rows[:, 2]), np.sort(scores)[-6:])  # nms_threshold 1 keeps all


def test_detection_output_empty_result_is_the_forks_row(tmp_path: pathlib.Path) -> None:
    """No box above the threshold: the fork's top is (1, 1, num, 7), each row -1 but the image
    index (detection_output_layer.cpp). OpenCV writes keep_top_k rows of zeros instead (checked
    here so that a change in OpenCV is noticed): the source wins."""
    inputs = _detection_inputs(5, 3, 20, 4, 1)
    text = _detection_net(inputs, "num_classes: 4 share_location: true background_label_id: 0 "
                                  "code_type: CENTER_SIZE nms_param { nms_threshold: 0.45 } "
                                  "confidence_threshold: 0.999999 keep_top_k: 10")
    ours, theirs = _run_both(tmp_path, text, inputs, "det")
    expected = np.full((1, 1, 3, 7), -1, np.float32)
    expected[0, 0, :, 0] = [0, 1, 2]
    np.testing.assert_array_equal(ours, expected)
    assert not np.any(theirs[..., 2] > 0)


@pytest.mark.parametrize("param,shapes,message", [
    ("code_type: CENTER_SIZE", [(1, 16), (1, 12), (1, 2, 16)], "must specify num_classes"),
    ("num_classes: 3", [(1, 20), (1, 12), (1, 2, 16)], "number of location predictions"),
    ("num_classes: 3", [(1, 16), (1, 15), (1, 2, 16)], "number of confidence predictions"),
    ("num_classes: 3 nms_param { eta: 0 }", [(1, 16), (1, 12), (1, 2, 16)], "eta"),
])
def test_detection_output_errors(param: str, shapes, message: str) -> None:
    with pytest.raises(LayerError, match=message):
        _layer(f'name: "det" type: "DetectionOutput" detection_output_param {{ {param} }}', shapes)


# ---------------------------------------------------------------------------------------------
# DetectionEvaluate (OpenCV has none: detection_evaluate_layer.cpp by hand)

def test_detection_evaluate_marks_true_and_false_positives() -> None:
    det = np.array([
        [0, 1, 0.9, 0.1, 0.1, 0.4, 0.4],    # matches gt A (IoU 0.81): tp
        [0, 1, 0.95, 0.1, 0.1, 0.45, 0.45],  # higher score, also on A, first in order: tp; 0.9 then fp
        [0, 1, 0.3, 0.6, 0.6, 0.9, 0.9],    # on difficult gt B, not evaluated: tp = fp = 0
        [0, 2, 0.8, 0.0, 0.0, 0.2, 0.2],    # no gt of label 2 in image 0: fp
        [1, 2, 0.7, 0.5, 0.5, 0.6, 0.6],    # image 1 has label 2, overlap 0: fp
        [2, -1, -1, -1, -1, -1, -1],        # DetectionOutput's empty-image row: not counted
    ], np.float32)
    gt = np.array([
        [0, 1, 0, 0.1, 0.1, 0.42, 0.42, 0],  # A
        [0, 1, 1, 0.6, 0.6, 0.9, 0.9, 1],    # B, difficult
        [1, 2, 0, 0.0, 0.0, 0.3, 0.3, 0],
        [-1, -1, -1, -1, -1, -1, -1, -1],    # reading stops here
        [1, 3, 0, 0.0, 0.0, 0.3, 0.3, 0],
    ], np.float32)
    layer = _layer('name: "eval" type: "DetectionEvaluate" detection_evaluate_param { num_classes: 4 '
                   "background_label_id: 0 overlap_threshold: 0.5 evaluate_difficult_gt: false }",
                   [(1, 1, 6, 7), (1, 1, 5, 8)])
    out = layer(torch.from_numpy(det[None, None]), torch.from_numpy(gt[None, None]))[0].numpy()
    expected = [[-1, 1, 1, -1, -1], [-1, 2, 1, -1, -1], [-1, 3, 0, -1, -1],
                [0, 1, 0.95, 1, 0], [0, 1, 0.9, 0, 1], [0, 1, 0.3, 0, 0],
                [0, 2, 0.8, 0, 1], [1, 2, 0.7, 0, 1]]
    np.testing.assert_allclose(out[0, 0], expected, rtol=0, atol=1e-7)


def test_detection_evaluate_counts_difficult_when_asked() -> None:
    det = np.array([[0, 1, 0.5, 0.6, 0.6, 0.9, 0.9]], np.float32)
    gt = np.array([[0, 1, 1, 0.6, 0.6, 0.9, 0.9, 1]], np.float32)
    layer = _layer('name: "eval" type: "DetectionEvaluate" detection_evaluate_param { num_classes: 2 }',
                   [(1, 1, 1, 7), (1, 1, 1, 8)])
    out = layer(torch.from_numpy(det[None, None]), torch.from_numpy(gt[None, None]))[0].numpy()
    np.testing.assert_allclose(out[0, 0], [[-1, 1, 1, -1, -1], [0, 1, 0.5, 1, 0]])
